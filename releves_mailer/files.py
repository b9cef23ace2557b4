"""Files of the data directory: private (0700 folders, 0600 files) and written whole.

At the package root: the message store, the outbox, the daemon and the commands all
write into the data directory.

Whatever the umask, what the daemon creates is readable by its own user only: tokens,
mails and statements live there. A reader, another process or a crash never sees half a
file.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

__all__ = ["PRIVATE_DIR", "PRIVATE_FILE", "make_private_dir", "write_atomically"]

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def make_private_dir(path: Path) -> None:
    """Create ``path`` and its missing parents, each 0700 (existing folders are left as is)."""
    missing = []
    for folder in (path, *path.parents):
        if folder.is_dir():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            continue  # made meanwhile by another writer
        # mkdir's mode passes through the umask, which can only narrow it (0500 under a
        # umask of 277, and the daemon could not write there): set it exactly.
        os.chmod(folder, PRIVATE_DIR)


def write_atomically(
    path: Path, data: bytes, *, mode: int = PRIVATE_FILE, sync_directory: bool = False
) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then rename it.

    ``mode`` is applied at creation (less the umask): a private file is never readable by
    others, not even for a moment. ``sync_directory`` also makes the rename itself durable
    (for files the database points to). The temporary name is unique per process and
    thread, so concurrent writers of the same path never mix their bytes.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if sync_directory:
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

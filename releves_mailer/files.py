"""Writing files whole: a reader, another process or a crash never sees half a file."""

from __future__ import annotations

import os
import threading
from pathlib import Path

__all__ = ["write_atomically"]


def write_atomically(
    path: Path, data: bytes, *, mode: int = 0o666, sync_directory: bool = False
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

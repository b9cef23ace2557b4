"""Writing key files: 0700 folders, 0600 files from their first byte, replaced whole.

``signing/`` imports nothing of the package (it can be read, tested and audited alone), so
it keeps this small copy of the data directory's file rules (:mod:`releves_mailer.files`)
for the only files it writes: keys and certificates.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["create_key_file", "replace_key_file"]

_KEY_FILE_MODE = 0o600
_KEY_DIR_MODE = 0o700


def _make_private_dir(path: Path) -> None:
    missing = [folder for folder in (path, *path.parents) if not folder.is_dir()]
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=_KEY_DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by another writer
        os.chmod(folder, _KEY_DIR_MODE)  # mkdir's mode passes through the umask


def create_key_file(path: Path, data: bytes) -> None:
    """Create ``path`` (0600 from the start, its folders 0700); refuse to overwrite."""
    _make_private_dir(path.parent)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _KEY_FILE_MODE)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def replace_key_file(path: Path, data: bytes) -> None:
    """Write ``path`` whole through a 0600 temporary file renamed over it."""
    _make_private_dir(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _KEY_FILE_MODE)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise

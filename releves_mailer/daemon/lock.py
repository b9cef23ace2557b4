"""One daemon per data directory: an exclusive ``flock`` on a lock file holding its pid.

The kernel drops the lock when the holder dies, however it dies, so there is never a
stale lock to clean up by hand. Commands that only change data do not take it: they run
beside the daemon as before.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from releves_mailer.errors import UserError
from releves_mailer.files import PRIVATE_FILE

__all__ = ["LOCK_FILE_NAME", "DaemonAlreadyRunning", "DataDirLock"]

LOCK_FILE_NAME = "releves-mailer.pid"


class DaemonAlreadyRunning(UserError):
    """Another process holds the data directory's lock."""


class DataDirLock:
    """The exclusive lock of ``data_dir``; :meth:`acquire` refuses at once if it is held."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE_NAME
        self._descriptor: int | None = None

    @property
    def held(self) -> bool:
        return self._descriptor is not None

    def acquire(self) -> None:
        if self._descriptor is not None:
            return
        # Not O_TRUNC: the holder's pid must stay readable until we own the lock.
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(descriptor)
            os.close(descriptor)
            pid = f"pid {holder}" if holder else "pid inconnu"
            raise DaemonAlreadyRunning(
                f"un démon releves-mailer tourne déjà sur {self.data_dir} ({pid})"
            ) from None
        except BaseException:
            os.close(descriptor)
            raise
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        self._descriptor = descriptor

    def release(self) -> None:
        if self._descriptor is None:
            return
        # The file stays: removing it would let a newcomer lock a fresh inode while a
        # third process still waits on the old one.
        os.ftruncate(self._descriptor, 0)
        os.close(self._descriptor)
        self._descriptor = None

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(descriptor: int) -> int | None:
    text = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None

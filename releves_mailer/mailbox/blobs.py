"""Raw message files of the store: content-addressed, written and fsynced before their rows.

A file is named by the SHA-256 of its bytes (``<blob_dir>/ab/cdef...``), so writing the same
message twice writes one file. Files are written in a pool of threads (the fsyncs of a batch
overlap); a message may be prepared ahead of its delivery (written and analysed while other
work goes on). A file no row points at is an orphan, removed by :meth:`BlobFiles.sweep`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

from releves_mailer.files import make_private_dir, write_atomically
from releves_mailer.mailbox.imap import mime

__all__ = ["Analysis", "BlobFiles"]

#: Threads writing message files: the fsyncs of a batch overlap (the journal commits them
#: together), and they do not hold up the default executor's threads.
_BLOB_THREADS = 16
#: Messages prepared ahead of their delivery (:meth:`BlobFiles.prepare`) kept at most, in
#: number and in bytes; beyond, the oldest are forgotten (their delivery redoes the work).
_PREPARED_MAX = 512
_PREPARED_MAX_BYTES = 64 * 1024 * 1024


class Analysis:
    """What delivery precomputes from a raw message, once."""

    __slots__ = ("body", "bodystructure", "envelope", "header", "sent_date")

    def __init__(self, raw: bytes) -> None:
        part = mime.parse_message(raw)
        self.header = part.header_bytes
        self.envelope = mime.envelope(part)
        self.bodystructure, self.body = mime.bodystructures(part)
        self.sent_date = mime.parse_sent_date(part.header("date"))


def retrieve(future: asyncio.Future[Any]) -> None:
    """Done-callback of work abandoned on error: its files may still be written (orphans are
    allowed, the sweep removes them), their outcome no longer matters."""
    if not future.cancelled():
        future.exception()


class BlobFiles:
    """The message files under ``blob_dir`` and the threads that write them."""

    def __init__(self, blob_dir: Path) -> None:
        self.blob_dir = Path(blob_dir)
        self._pool: ThreadPoolExecutor | None = None
        self._prepared: dict[bytes, asyncio.Future[tuple[str, Analysis]]] = {}
        self._prepared_bytes = 0

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.shutdown)

    def path(self, blob: str) -> Path:
        return self.blob_dir / blob[:2] / blob[2:]

    def _write_sync(self, raw: bytes) -> str:
        blob = hashlib.sha256(raw).hexdigest()
        path = self.path(blob)
        if path.exists():
            return blob
        make_private_dir(path.parent)
        write_atomically(path, raw, sync_directory=True)
        return blob

    def _prepare_sync(self, raw: bytes) -> tuple[str, Analysis]:
        return self._write_sync(raw), Analysis(raw)

    def prepare_file_sync(self, file: BinaryIO) -> tuple[bytes, str, Analysis]:
        """A spooled message read from the start, written and analysed (call in a thread)."""
        file.seek(0)
        raw = file.read()
        return raw, *self._prepare_sync(raw)

    def _start(self, raw: bytes) -> asyncio.Future[tuple[str, Analysis]]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(_BLOB_THREADS, thread_name_prefix="blob")
        return asyncio.get_running_loop().run_in_executor(self._pool, self._prepare_sync, raw)

    async def prepare(self, raw: bytes) -> None:
        """Head start for a coming :meth:`prepare_many` of ``raw``: its file written and
        fsynced, its structure analysed, in a thread of the pool. A message prepared but
        never delivered leaves a file no row points at, removed by :meth:`sweep`."""
        future = self._prepared.get(raw)
        if future is None:
            future = self._prepared[raw] = self._start(raw)
            self._prepared_bytes += len(raw)
            while len(self._prepared) > 1 and (
                len(self._prepared) > _PREPARED_MAX or self._prepared_bytes > _PREPARED_MAX_BYTES
            ):
                oldest = next(iter(self._prepared))
                self._prepared_bytes -= len(oldest)
                self._prepared.pop(oldest).add_done_callback(retrieve)
        await asyncio.shield(future)

    async def prepare_many(self, raws: Sequence[bytes]) -> tuple[list[str], list[Analysis]]:
        """The files of ``raws`` written (and fsynced) and their analyses, each in a thread of
        the pool (the fsyncs overlap), or as :meth:`prepare` left them."""
        unique = list(dict.fromkeys(raws))
        jobs = []
        for raw in unique:
            ahead = self._prepared.pop(raw, None)
            if ahead is not None:
                self._prepared_bytes -= len(raw)
            jobs.append(self._start(raw) if ahead is None else ahead)
        done = dict(zip(unique, await asyncio.gather(*jobs), strict=True))
        blobs = [done[raw][0] for raw in raws]
        return blobs, [done[raw][1] for raw in raws]

    async def read(self, blob: str) -> bytes:
        return await asyncio.to_thread(self.path(blob).read_bytes)

    async def read_many(self, blobs: Sequence[str]) -> list[bytes]:
        base = str(self.blob_dir)
        paths = [f"{base}/{blob[:2]}/{blob[2:]}" for blob in blobs]

        def read_all() -> list[bytes]:
            return [_read_file(path) for path in paths]

        return await asyncio.to_thread(read_all)

    async def read_range(self, blob: str, offset: int, size: int) -> bytes:
        path = self.path(blob)

        def read() -> bytes:
            with open(path, "rb") as handle:
                handle.seek(offset)
                return handle.read(size)

        return await asyncio.to_thread(read)

    async def spool_file(self) -> BinaryIO:
        def create() -> BinaryIO:
            self.blob_dir.mkdir(parents=True, exist_ok=True)
            # Anonymous (unlinked at once): a crash leaves nothing behind. Beside the messages
            # rather than in /tmp, which is often a RAM disk.
            return tempfile.TemporaryFile(dir=self.blob_dir)

        return await asyncio.to_thread(create)

    async def sweep(self, used: set[str], horizon: dt.datetime) -> int:
        """Delete the files not in ``used`` last changed before ``horizon``; how many went."""
        limit = horizon.timestamp()

        def sweep() -> int:
            removed = 0
            if not self.blob_dir.exists():
                return 0
            for path in self.blob_dir.glob("??/*"):
                blob = path.parent.name + path.name
                if blob in used or path.name.startswith("."):
                    continue
                if path.stat().st_mtime < limit:
                    path.unlink(missing_ok=True)
                    removed += 1
            return removed

        return await asyncio.to_thread(sweep)


#: Octets asked for by one read of a message file.
_READ_AT_ONCE = 1024 * 1024


def _read_file(path: str) -> bytes:
    """A whole file with few system calls: open, read, read (end of file), close for a small
    one, where ``open().read()`` adds fstat, ioctl and lseek; that counts when a FETCH of a
    big box reads thousands of messages."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        pieces = [os.read(fd, _READ_AT_ONCE)]
        while pieces[-1]:
            pieces.append(os.read(fd, _READ_AT_ONCE))
    finally:
        os.close(fd)
    return pieces[0] if len(pieces) == 2 else b"".join(pieces)

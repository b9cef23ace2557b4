"""Message store: folders and messages in the database, raw messages in content-addressed files.

The only mailbox module that speaks SQL. Every change is one database transaction; the raw
message file is written and fsynced before the row that points at it is committed, so a
crash or a rollback can leave an orphan file but never a row without its file.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import logging
import tempfile
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, BinaryIO, Literal

from sqlalchemy import Table, and_, bindparam, delete, func, insert, select, update
from sqlalchemy import event as sa_event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session
from sqlalchemy.pool import AsyncAdaptedQueuePool

from releves_mailer.clock import Clock
from releves_mailer.db import Database
from releves_mailer.db.engine import POOL_TIMEOUT
from releves_mailer.db.models.mailbox import MailFolder, MailMessage, MailSubscription
from releves_mailer.files import make_private_dir, write_atomically
from releves_mailer.mailbox.contracts import (
    FetchColumn,
    FolderChanges,
    FolderExists,
    FolderInfo,
    MailStore,
    MessageMeta,
    MessageRecord,
    NoSuchFolder,
    StoreError,
)
from releves_mailer.mailbox.imap import mime
from releves_mailer.mailbox.sink import MailDelivery, MessageSink

__all__ = ["SYSTEM_FLAGS", "MessageStore", "canonical_flags"]

_log = logging.getLogger(__name__)

SYSTEM_FLAGS = ("\\Answered", "\\Deleted", "\\Draft", "\\Flagged", "\\Seen")
_SYSTEM_BY_LOWER = {flag.lower(): flag for flag in SYSTEM_FLAGS}
_NOTIFY_KEY = "releves_mailer.mailbox.notify"
_LISTENING_KEY = "releves_mailer.mailbox.listening"
#: Threads writing message files: the fsyncs of a batch overlap (the journal commits them
#: together), and they do not hold up the default executor's threads.
_BLOB_THREADS = 16
#: Messages prepared ahead of their delivery (:meth:`MessageStore.prepare`) kept at most,
#: in number and in bytes; beyond, the oldest are forgotten (their delivery redoes the work).
_PREPARED_MAX = 512
_PREPARED_MAX_BYTES = 64 * 1024 * 1024
_IN_CHUNK = 500
DELIMITER = "/"
_VIEW_CACHE_SIZE = 64
_FIXED_CACHE_SIZE = 16


def canonical_flags(flags: Iterable[str]) -> tuple[str, ...]:
    """Flags deduplicated (keywords case-insensitively), system flags first, sorted."""
    seen: dict[str, str] = {}
    for flag in flags:
        if not flag or flag.lower() == "\\recent":
            continue
        flag = _SYSTEM_BY_LOWER.get(flag.lower(), flag)
        seen.setdefault(flag.lower(), flag)
    return tuple(sorted(seen.values(), key=lambda f: (not f.startswith("\\"), f.lower())))


def _folder_info(row: Any) -> FolderInfo:
    return FolderInfo(
        id=row.id,
        name=row.name,
        uidvalidity=row.uidvalidity,
        uidnext=row.uidnext,
        highestmodseq=row.highestmodseq,
        expunge_modseq=row.expunge_modseq,
        recent_uid=row.recent_uid,
        special_use=row.special_use,
    )


def _chunks(items: Sequence[int], size: int = _IN_CHUNK) -> Iterable[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _table(model: type[Any]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


_FOLDERS = _table(MailFolder)
_MESSAGES = _table(MailMessage)
_FOLDER_COLUMNS = (
    _FOLDERS.c.id,
    _FOLDERS.c.name,
    _FOLDERS.c.uidvalidity,
    _FOLDERS.c.uidnext,
    _FOLDERS.c.highestmodseq,
    _FOLDERS.c.expunge_modseq,
    _FOLDERS.c.recent_uid,
    _FOLDERS.c.special_use,
)


def _retrieve(future: asyncio.Future[Any]) -> None:
    # A batch abandoned on error: its files may still be written (orphans are allowed, the
    # garbage collection removes them), their outcome no longer matters.
    if not future.cancelled():
        future.exception()


#: SQLite connections of the store's own pool.
STORE_POOL_SIZE = 8


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


@functools.lru_cache(maxsize=4096)
def _flags_of(text: str) -> tuple[str, ...]:
    # Cached: every selected session keeps one tuple per message, mostly the same few.
    return tuple(text.split()) if text else ()


class _Analysis:
    """What delivery precomputes from a raw message, once."""

    __slots__ = ("body", "bodystructure", "envelope", "header", "sent_date")

    def __init__(self, raw: bytes) -> None:
        part = mime.parse_message(raw)
        self.header = part.header_bytes
        self.envelope = mime.envelope(part)
        self.bodystructure, self.body = mime.bodystructures(part)
        self.sent_date = mime.parse_sent_date(part.header("date"))


class MessageStore:
    """Mailboxes of every local address; implements ``MessageSink`` and ``MailStore``.

    Args:
        database: the daemon's database (schema at head).
        blob_dir: directory of the raw message files, e.g. ``<data_dir>/messages``.
        clock: source of internal dates and UIDVALIDITY values.
    """

    def __init__(self, database: Database, blob_dir: Path, clock: Clock) -> None:
        self.database = database
        self.blob_dir = Path(blob_dir)
        self.clock = clock
        self._watchers: dict[int, set[asyncio.Event]] = defaultdict(set)
        self._last_uidvalidity = 0
        self._views: dict[int, tuple[FolderInfo, list[MessageMeta]]] = {}
        self._fixed: dict[int, dict[int, MessageRecord]] = {}
        self._engine: AsyncEngine | None = None
        self._blob_pool: ThreadPoolExecutor | None = None
        self._prepared: dict[bytes, asyncio.Future[tuple[str, _Analysis]]] = {}
        self._prepared_bytes = 0
        self._sessionmaker = database.sessionmaker
        if database.is_sqlite:
            # IMAP sessions run several short transactions per command: the store keeps a
            # small pool of its own over the same file, so that they never wait behind the
            # collection's long transactions. Bounded, without overflow, like the shared
            # pool (see releves_mailer.db.engine.SQLITE_POOL_SIZE): a storm of sessions
            # queues for these connections instead of opening file handles.
            self._engine = create_async_engine(
                database.url,
                poolclass=AsyncAdaptedQueuePool,
                pool_size=STORE_POOL_SIZE,
                max_overflow=0,
                pool_timeout=POOL_TIMEOUT,
            )
            sa_event.listen(self._engine.sync_engine, "connect", _sqlite_pragmas)
            self._sessionmaker = async_sessionmaker(self._engine, expire_on_commit=False)

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[AsyncSession]:
        async with self._sessionmaker() as session, session.begin():
            yield session

    async def start(self, stack: AsyncExitStack) -> None:
        """Register :meth:`close` on the daemon's exit stack."""
        stack.push_async_callback(self.close)

    async def close(self) -> None:
        """Release the store's own connections (SQLite only; PostgreSQL shares the pool)."""
        if self._engine is not None:
            await self._engine.dispose()
        if self._blob_pool is not None:
            pool, self._blob_pool = self._blob_pool, None
            await asyncio.to_thread(pool.shutdown)

    # region notification #################################################################

    def watch(self, folder_id: int) -> asyncio.Event:
        event = asyncio.Event()
        self._watchers[folder_id].add(event)
        return event

    def unwatch(self, folder_id: int, event: asyncio.Event) -> None:
        watchers = self._watchers.get(folder_id)
        if watchers is not None:
            watchers.discard(event)
            if not watchers:
                del self._watchers[folder_id]

    def notify(self, folder_ids: Iterable[int]) -> None:
        for folder_id in folder_ids:
            for event in self._watchers.get(folder_id, ()):
                event.set()

    def _notify_after_commit(self, session: AsyncSession, folder_id: int) -> None:
        pending: set[int] = session.info.setdefault(_NOTIFY_KEY, set())
        pending.add(folder_id)
        if session.info.get(_LISTENING_KEY):
            return
        session.info[_LISTENING_KEY] = True

        def committed(sync_session: Session) -> None:
            folders = set(sync_session.info.get(_NOTIFY_KEY, ()))
            sync_session.info[_NOTIFY_KEY] = set()
            self.notify(folders)

        def rolled_back(sync_session: Session, _previous: object) -> None:
            sync_session.info[_NOTIFY_KEY] = set()

        sa_event.listen(session.sync_session, "after_commit", committed)
        sa_event.listen(session.sync_session, "after_soft_rollback", rolled_back)

    # endregion
    # region blobs ########################################################################

    def _blob_path(self, blob: str) -> Path:
        return self.blob_dir / blob[:2] / blob[2:]

    def _write_blob_sync(self, raw: bytes) -> str:
        blob = hashlib.sha256(raw).hexdigest()
        path = self._blob_path(blob)
        if path.exists():
            return blob
        make_private_dir(path.parent)
        write_atomically(path, raw, sync_directory=True)
        return blob

    def _prepare_sync(self, raw: bytes) -> tuple[str, _Analysis]:
        return self._write_blob_sync(raw), _Analysis(raw)

    def _prepare_file_sync(self, file: BinaryIO) -> tuple[bytes, str, _Analysis]:
        file.seek(0)
        raw = file.read()
        return raw, *self._prepare_sync(raw)

    def _start_prepare(self, raw: bytes) -> asyncio.Future[tuple[str, _Analysis]]:
        if self._blob_pool is None:
            self._blob_pool = ThreadPoolExecutor(_BLOB_THREADS, thread_name_prefix="blob")
        return asyncio.get_running_loop().run_in_executor(self._blob_pool, self._prepare_sync, raw)

    async def prepare(self, raw: bytes) -> None:
        """Head start for a coming delivery of ``raw``, outside the delivering transaction:
        its file is written and fsynced, its structure analysed (in a thread of the store's
        pool). A :meth:`deliver_many` of the same bytes in this process then uses the result
        instead of doing the work while its transaction is open. A message prepared but never
        delivered leaves a file no row points at, removed by :meth:`collect_garbage`."""
        future = self._prepared.get(raw)
        if future is None:
            future = self._prepared[raw] = self._start_prepare(raw)
            self._prepared_bytes += len(raw)
            while len(self._prepared) > 1 and (
                len(self._prepared) > _PREPARED_MAX or self._prepared_bytes > _PREPARED_MAX_BYTES
            ):
                oldest = next(iter(self._prepared))
                self._prepared_bytes -= len(oldest)
                self._prepared.pop(oldest).add_done_callback(_retrieve)
        await asyncio.shield(future)

    async def _prepare_many(self, raws: Sequence[bytes]) -> tuple[list[str], list[_Analysis]]:
        """The files of ``raws`` written (and fsynced) and their analyses, each in a thread of
        the store's pool (the fsyncs overlap), or as :meth:`prepare` left them."""
        unique = list(dict.fromkeys(raws))
        jobs = []
        for raw in unique:
            ahead = self._prepared.pop(raw, None)
            if ahead is not None:
                self._prepared_bytes -= len(raw)
            jobs.append(self._start_prepare(raw) if ahead is None else ahead)
        done = dict(zip(unique, await asyncio.gather(*jobs), strict=True))
        blobs = [done[raw][0] for raw in raws]
        return blobs, [done[raw][1] for raw in raws]

    async def read_blob(self, blob: str) -> bytes:
        return await asyncio.to_thread(self._blob_path(blob).read_bytes)

    async def read_blobs(self, blobs: Sequence[str]) -> list[bytes]:
        base = str(self.blob_dir)
        paths = [f"{base}/{blob[:2]}/{blob[2:]}" for blob in blobs]

        def read_all() -> list[bytes]:
            out = []
            for path in paths:
                with open(path, "rb") as handle:
                    out.append(handle.read())
            return out

        return await asyncio.to_thread(read_all)

    async def read_blob_range(self, blob: str, offset: int, size: int) -> bytes:
        path = self._blob_path(blob)

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

    async def collect_garbage(self, older_than: dt.timedelta = dt.timedelta(hours=1)) -> int:
        """Delete message files no row points at any more; returns how many went.

        Files younger than ``older_than`` are kept: their delivery may not have committed yet.
        """
        async with self._session() as session:
            used = set((await session.execute(select(MailMessage.blob).distinct())).scalars())
        horizon = (self.clock.now() - older_than).timestamp()

        def sweep() -> int:
            removed = 0
            if not self.blob_dir.exists():
                return 0
            for path in self.blob_dir.glob("??/*"):
                blob = path.parent.name + path.name
                if blob in used or path.name.startswith("."):
                    continue
                if path.stat().st_mtime < horizon:
                    path.unlink(missing_ok=True)
                    removed += 1
            return removed

        return await asyncio.to_thread(sweep)

    # endregion
    # region delivery (MessageSink) #######################################################

    async def deliver(
        self,
        session: AsyncSession,
        address: str,
        raw: bytes,
        *,
        folder: str = "INBOX",
        flags: Sequence[str] = (),
        internal_date: dt.datetime | None = None,
    ) -> int:
        """Store ``raw`` in ``folder`` of ``address`` inside the caller's transaction.

        The folder is created when missing. Watchers hear of it once the caller commits.
        """
        [uid] = await self.deliver_many(
            session, [MailDelivery(address, raw, folder, flags, internal_date)]
        )
        return uid

    async def deliver_many(self, session: AsyncSession, items: Sequence[MailDelivery]) -> list[int]:
        """:meth:`deliver` of each item, in order, inside the caller's transaction.

        Each folder is looked up (or created) once and takes all its UIDs with one update and
        one MODSEQ; the rows go in with one statement. The files are written and fsynced (in
        threads, while the folders are resolved) before any row is inserted. Returns the UIDs
        in the order of ``items``.
        """
        if not items:
            return []
        prepared = asyncio.ensure_future(self._prepare_many([item.raw for item in items]))
        try:
            folders: dict[tuple[str, str], int] = {}
            folder_ids: list[int] = []
            for item in items:
                owner = item.address.strip().lower()
                name = "INBOX" if item.folder.upper() == "INBOX" else item.folder
                folder_id = folders.get((owner, name))
                if folder_id is None:
                    info = await self._get_folder(session, owner, name)
                    if info is None:
                        info = await self._create_folder(session, owner, name)
                    folder_id = folders[owner, name] = info.id
                folder_ids.append(folder_id)
        except BaseException:
            prepared.add_done_callback(_retrieve)
            raise
        blobs, analyses = await prepared
        return await self._insert_many(session, folder_ids, items, blobs, analyses)

    async def deliver_now(
        self,
        address: str,
        raw: bytes,
        *,
        folder: str = "INBOX",
        flags: Sequence[str] = (),
        internal_date: dt.datetime | None = None,
    ) -> int:
        """:meth:`deliver` in a transaction of its own."""
        async with self._session() as session:
            return await self.deliver(
                session, address, raw, folder=folder, flags=flags, internal_date=internal_date
            )

    async def _bump(
        self, session: AsyncSession, folder_id: int, *, uids: int = 0, expunge: bool = False
    ) -> tuple[int, int]:
        """Take ``uids`` new UIDs and one new MODSEQ; returns (first uid, modseq)."""
        columns = _FOLDERS.c
        values: dict[str, Any] = {"highestmodseq": columns.highestmodseq + 1}
        if uids:
            values["uidnext"] = columns.uidnext + uids
        if expunge:
            values["expunge_modseq"] = columns.highestmodseq + 1
        # Core statements: the ORM's bulk-update machinery cost more than the update itself.
        row = (
            await session.execute(
                update(_FOLDERS)
                .where(columns.id == folder_id)
                .values(**values)
                .returning(columns.uidnext, columns.highestmodseq)
            )
        ).one_or_none()
        if row is None:
            raise NoSuchFolder("Mailbox does not exist")
        self._notify_after_commit(session, folder_id)
        return row.uidnext - uids, row.highestmodseq

    async def _insert_many(
        self,
        session: AsyncSession,
        folder_ids: Sequence[int],
        items: Sequence[MailDelivery],
        blobs: Sequence[str],
        analyses: Sequence[_Analysis],
    ) -> list[int]:
        counts: dict[int, int] = {}
        for folder_id in folder_ids:
            counts[folder_id] = counts.get(folder_id, 0) + 1
        # Folders in id order: concurrent batches lock them in the same order.
        taken: dict[int, list[int]] = {}
        for folder_id in sorted(counts):
            first, modseq = await self._bump(session, folder_id, uids=counts[folder_id])
            taken[folder_id] = [first, modseq]
        now = self.clock.now()
        uids: list[int] = []
        rows: list[dict[str, Any]] = []
        for folder_id, item, blob, analysis in zip(folder_ids, items, blobs, analyses, strict=True):
            next_uid = taken[folder_id]
            uid = next_uid[0]
            next_uid[0] += 1
            uids.append(uid)
            when = (item.internal_date or now).astimezone(dt.UTC).replace(microsecond=0)
            rows.append(
                {
                    "folder_id": folder_id,
                    "uid": uid,
                    "modseq": next_uid[1],
                    "flags": " ".join(canonical_flags(item.flags)),
                    "internal_date": when,
                    "size": len(item.raw),
                    "blob": blob,
                    "header": analysis.header,
                    "envelope": analysis.envelope,
                    "bodystructure": analysis.bodystructure,
                    "body": analysis.body,
                    "sent_date": analysis.sent_date,
                }
            )
        await session.execute(insert(_MESSAGES), rows)
        return uids

    async def append(
        self,
        folder_id: int,
        raw: bytes | BinaryIO,
        flags: Sequence[str],
        internal_date: dt.datetime | None,
    ) -> tuple[int, int]:
        if not isinstance(raw, bytes):
            # A spooled literal: read, hashed, written and analysed in a thread, held in
            # memory once (the MIME analysis needs the whole message).
            data, blob, analysis = await asyncio.to_thread(self._prepare_file_sync, raw)
            blobs, analyses = [blob], [analysis]
        else:
            data = raw
            blobs, analyses = await self._prepare_many([data])
        item = MailDelivery("", data, "", flags, internal_date)
        async with self._session() as session:
            info = await self._folder_by_id(session, folder_id)
            if info is None:
                raise NoSuchFolder("Mailbox does not exist")
            [uid] = await self._insert_many(session, [folder_id], [item], blobs, analyses)
            return info.uidvalidity, uid

    # endregion
    # region folders ######################################################################

    async def _get_folder(self, session: AsyncSession, owner: str, name: str) -> FolderInfo | None:
        # Core selects: always the database's current values (UIDs are taken by core
        # updates), without the ORM's identity map.
        row = (
            await session.execute(
                select(*_FOLDER_COLUMNS).where(_FOLDERS.c.owner == owner, _FOLDERS.c.name == name)
            )
        ).one_or_none()
        return None if row is None else _folder_info(row)

    async def _folder_by_id(self, session: AsyncSession, folder_id: int) -> FolderInfo | None:
        row = (
            await session.execute(select(*_FOLDER_COLUMNS).where(_FOLDERS.c.id == folder_id))
        ).one_or_none()
        return None if row is None else _folder_info(row)

    def _new_uidvalidity(self) -> int:
        # Strictly increasing in this process, so a mailbox deleted and created again within
        # one second still gets a new UIDVALIDITY (RFC 3501 section 2.3.1.1).
        value = max(int(self.clock.now().timestamp()), self._last_uidvalidity + 1)
        value = min(value, 0xFFFFFFFF)
        self._last_uidvalidity = value
        return value

    async def _create_folder(
        self, session: AsyncSession, owner: str, name: str, special_use: str = ""
    ) -> FolderInfo:
        parts = name.split(DELIMITER)
        for depth in range(1, len(parts)):
            parent = DELIMITER.join(parts[:depth])
            if parent and await self._get_folder(session, owner, parent) is None:
                await self._add_folder(session, owner, parent, "")
        return await self._add_folder(session, owner, name, special_use)

    async def _add_folder(
        self, session: AsyncSession, owner: str, name: str, special_use: str
    ) -> FolderInfo:
        row = MailFolder(
            owner=owner,
            name=name,
            uidvalidity=self._new_uidvalidity(),
            uidnext=1,
            highestmodseq=1,
            expunge_modseq=0,
            recent_uid=1,
            special_use=special_use,
            created_at=self.clock.now(),
        )
        session.add(row)
        await session.flush()
        return _folder_info(row)

    async def ensure_inbox(self, owner: str) -> None:
        try:
            async with self._session() as session:
                if await self._get_folder(session, owner, "INBOX") is None:
                    await self._add_folder(session, owner, "INBOX", "")
        except IntegrityError:
            pass  # another connection of the same user created it first

    async def list_folders(self, owner: str) -> list[FolderInfo]:
        async with self._session() as session:
            rows = (
                await session.execute(
                    select(MailFolder).where(MailFolder.owner == owner).order_by(MailFolder.name)
                )
            ).scalars()
            return [_folder_info(row) for row in rows]

    async def get_folder(self, owner: str, name: str) -> FolderInfo | None:
        async with self._session() as session:
            return await self._get_folder(session, owner, name)

    async def create_folder(self, owner: str, name: str, special_use: str = "") -> FolderInfo:
        async with self._session() as session:
            if await self._get_folder(session, owner, name) is not None:
                raise FolderExists("Mailbox already exists")
            return await self._create_folder(session, owner, name, special_use)

    async def delete_folder(self, owner: str, name: str) -> None:
        if name == "INBOX":
            raise StoreError("INBOX cannot be deleted")
        async with self._session() as session:
            info = await self._get_folder(session, owner, name)
            if info is None:
                raise NoSuchFolder("Mailbox does not exist")
            await session.execute(delete(MailMessage).where(MailMessage.folder_id == info.id))
            await session.execute(delete(MailFolder).where(MailFolder.id == info.id))
            self._notify_after_commit(session, info.id)

    async def rename_folder(self, owner: str, old: str, new: str) -> None:
        async with self._session() as session:
            info = await self._get_folder(session, owner, old)
            if info is None:
                raise NoSuchFolder("Mailbox does not exist")
            if await self._get_folder(session, owner, new) is not None:
                raise FolderExists("Target mailbox already exists")
            if new.startswith(old + DELIMITER):
                raise StoreError("Cannot move a mailbox under itself")
            parts = new.split(DELIMITER)
            for depth in range(1, len(parts)):
                parent = DELIMITER.join(parts[:depth])
                if parent and await self._get_folder(session, owner, parent) is None:
                    await self._add_folder(session, owner, parent, "")
            await session.execute(
                update(MailFolder).where(MailFolder.id == info.id).values(name=new)
            )
            self._notify_after_commit(session, info.id)
            if old == "INBOX":
                # RFC 3501 6.3.5: the messages move, INBOX stays (empty, fresh UIDVALIDITY).
                await self._add_folder(session, owner, "INBOX", "")
                return
            children = (
                await session.execute(
                    select(MailFolder.id, MailFolder.name).where(
                        MailFolder.owner == owner,
                        MailFolder.name.startswith(old + DELIMITER, autoescape=True),
                    )
                )
            ).all()
            for child_id, child_name in children:
                await session.execute(
                    update(MailFolder)
                    .where(MailFolder.id == child_id)
                    .values(name=new + child_name[len(old) :])
                )

    async def subscriptions(self, owner: str) -> list[str]:
        async with self._session() as session:
            rows = await session.execute(
                select(MailSubscription.name).where(MailSubscription.owner == owner)
            )
            return sorted(name for (name,) in rows)

    async def set_subscribed(self, owner: str, name: str, subscribed: bool) -> None:
        async with self._session() as session:
            existing = (
                await session.execute(
                    select(MailSubscription.id).where(
                        MailSubscription.owner == owner, MailSubscription.name == name
                    )
                )
            ).scalar_one_or_none()
            if subscribed and existing is None:
                session.add(MailSubscription(owner=owner, name=name))
            elif not subscribed and existing is not None:
                await session.execute(
                    delete(MailSubscription).where(MailSubscription.id == existing)
                )

    async def folder_counts(self, folder_id: int) -> tuple[int, int, int]:
        async with self._session() as session:
            info = await self._folder_by_id(session, folder_id)
            if info is None:
                raise NoSuchFolder("Mailbox does not exist")
            rows = (
                await session.execute(
                    select(MailMessage.uid, MailMessage.flags).where(
                        MailMessage.folder_id == folder_id
                    )
                )
            ).all()
        unseen = sum(1 for _, flags in rows if "\\Seen" not in _flags_of(flags))
        recent = sum(1 for uid, _ in rows if uid >= info.recent_uid)
        return len(rows), unseen, recent

    async def usage(self, owner: str) -> int:
        """Bytes held by every folder of ``owner`` (what a quota counts)."""
        async with self._session() as session:
            total = await session.scalar(
                select(func.coalesce(func.sum(MailMessage.size), 0))
                .join(MailFolder, MailFolder.id == MailMessage.folder_id)
                .where(MailFolder.owner == owner)
            )
        return int(total or 0)

    # endregion
    # region selected-folder views ########################################################

    async def load_view(self, folder_id: int) -> tuple[FolderInfo, list[MessageMeta]]:
        """The folder and its messages; the list is shared, callers must not change it."""
        async with self._session() as session:
            info = await self._folder_by_id(session, folder_id)
            if info is None:
                raise NoSuchFolder("Mailbox does not exist")
            cached = self._views.get(folder_id)
            if cached is not None and (
                cached[0].highestmodseq,
                cached[0].uidnext,
                cached[0].uidvalidity,
            ) == (info.highestmodseq, info.uidnext, info.uidvalidity):
                # Nothing changed since the last load (a MODSEQ bump comes with any change):
                # many clients polling one big box share one list.
                return info, cached[1]
            rows = (
                await session.execute(
                    select(MailMessage.uid, MailMessage.flags, MailMessage.modseq)
                    .where(MailMessage.folder_id == folder_id)
                    .order_by(MailMessage.uid)
                )
            ).all()
        metas = [MessageMeta(uid, _flags_of(flags), modseq) for uid, flags, modseq in rows]
        self._views.pop(folder_id, None)
        self._views[folder_id] = (info, metas)
        while len(self._views) > _VIEW_CACHE_SIZE:
            del self._views[next(iter(self._views))]
        return info, metas

    async def folder_head(self, folder_id: int) -> tuple[int, int] | None:
        async with self._sessionmaker() as session:
            row = (
                await session.execute(
                    select(MailFolder.highestmodseq, MailFolder.uidnext).where(
                        MailFolder.id == folder_id
                    )
                )
            ).one_or_none()
        return None if row is None else (row[0], row[1])

    async def changes(self, folder_id: int, since_modseq: int) -> FolderChanges | None:
        async with self._session() as session:
            info = await self._folder_by_id(session, folder_id)
            if info is None:
                return None
            if info.highestmodseq <= since_modseq:
                return FolderChanges(info, [], None)
            rows = (
                await session.execute(
                    select(MailMessage.uid, MailMessage.flags, MailMessage.modseq)
                    .where(MailMessage.folder_id == folder_id, MailMessage.modseq > since_modseq)
                    .order_by(MailMessage.uid)
                )
            ).all()
            all_uids: list[int] | None = None
            if info.expunge_modseq > since_modseq:
                all_uids = list(
                    (
                        await session.execute(
                            select(MailMessage.uid)
                            .where(MailMessage.folder_id == folder_id)
                            .order_by(MailMessage.uid)
                        )
                    ).scalars()
                )
        changed = [MessageMeta(uid, _flags_of(flags), modseq) for uid, flags, modseq in rows]
        return FolderChanges(info, changed, all_uids)

    async def claim_recent(self, folder_id: int) -> tuple[int, int] | None:
        async with self._session() as session:
            info = await self._folder_by_id(session, folder_id)
            if info is None or info.recent_uid >= info.uidnext:
                return None
            result = await session.execute(
                update(MailFolder)
                .where(MailFolder.id == folder_id, MailFolder.recent_uid == info.recent_uid)
                .values(recent_uid=info.uidnext)
            )
            if getattr(result, "rowcount", 0) != 1:
                return None
            return info.recent_uid, info.uidnext

    # endregion
    # region messages #####################################################################

    async def fetch_records(
        self, folder_id: int, uids: Sequence[int], columns: Iterable[FetchColumn]
    ) -> list[MessageRecord]:
        wanted = sorted(set(columns) - {"uid"})
        if not uids:
            return []
        ordered = sorted(uids)
        if wanted and set(wanted) <= {"internal_date", "size"}:
            return await self._fixed_columns(folder_id, ordered)
        return await self._query_records(folder_id, ordered, wanted)

    async def _fixed_columns(self, folder_id: int, ordered: list[int]) -> list[MessageRecord]:
        # Internal date and size never change: SEARCH SINCE/LARGER over a big box is served
        # from memory after the first time instead of re-reading (and re-parsing) every row.
        # The records handed out are shared: callers only read them.
        cache = self._fixed.pop(folder_id, None) or {}
        self._fixed[folder_id] = cache
        while len(self._fixed) > _FIXED_CACHE_SIZE:
            del self._fixed[next(iter(self._fixed))]
        missing = [uid for uid in ordered if uid not in cache]
        if missing:
            for record in await self._query_records(folder_id, missing, ["internal_date", "size"]):
                cache[record.uid] = record
        return [cache[uid] for uid in ordered if uid in cache]

    async def _query_records(
        self, folder_id: int, ordered: list[int], wanted: Sequence[str]
    ) -> list[MessageRecord]:
        selected = [MailMessage.uid] + [getattr(MailMessage, name) for name in wanted]
        records: list[MessageRecord] = []
        async with self._session() as session:
            # A contiguous UID range is one indexed range scan, not a long IN list.
            if ordered[-1] - ordered[0] + 1 <= len(ordered) * 2:
                condition = and_(MailMessage.uid >= ordered[0], MailMessage.uid <= ordered[-1])
                batches: list[Any] = [condition]
                keep: set[int] | None = set(ordered)
            else:
                batches = [MailMessage.uid.in_(list(chunk)) for chunk in _chunks(ordered)]
                keep = None
            for condition in batches:
                result = await session.execute(
                    select(*selected)
                    .where(MailMessage.folder_id == folder_id, condition)
                    .order_by(MailMessage.uid)
                )
                for row in result:
                    if keep is not None and row[0] not in keep:
                        continue
                    record = MessageRecord(uid=row[0])
                    for index, name in enumerate(wanted, 1):
                        value = row[index]
                        if name == "flags":
                            value = _flags_of(value)
                        setattr(record, name, value)
                    records.append(record)
        return records

    async def store_flags(
        self,
        folder_id: int,
        uids: Sequence[int],
        mode: Literal["set", "add", "remove"],
        flags: Sequence[str],
        unchanged_since: int | None = None,
    ) -> tuple[list[MessageMeta], list[int]]:
        given = canonical_flags(flags)
        given_lower = {f.lower() for f in given}
        changed: list[tuple[int, str]] = []
        failed: list[int] = []
        unchanged: list[MessageMeta] = []
        async with self._session() as session:
            rows: list[Any] = []
            for chunk in _chunks(sorted(uids)):
                rows += (
                    await session.execute(
                        select(MailMessage.uid, MailMessage.flags, MailMessage.modseq).where(
                            MailMessage.folder_id == folder_id, MailMessage.uid.in_(list(chunk))
                        )
                    )
                ).all()
            for uid, text, modseq in rows:
                if unchanged_since is not None and modseq > unchanged_since:
                    failed.append(uid)
                    continue
                current = _flags_of(text)
                if mode == "set":
                    new = given
                elif mode == "add":
                    new = canonical_flags((*current, *given))
                else:
                    new = tuple(f for f in current if f.lower() not in given_lower)
                if new != current:
                    changed.append((uid, " ".join(new)))
                else:
                    unchanged.append(MessageMeta(uid, current, modseq))
            if not changed:
                return [], sorted(failed)
            _, modseq = await self._bump(session, folder_id)
            table = MailMessage.__table__
            assert isinstance(table, Table)
            await session.execute(
                update(table)
                .where(
                    table.c.folder_id == bindparam("f_id"),
                    table.c.uid == bindparam("f_uid"),
                )
                .values(flags=bindparam("f_flags"), modseq=modseq),
                [{"f_id": folder_id, "f_uid": uid, "f_flags": text} for uid, text in changed],
            )
        metas = [MessageMeta(uid, _flags_of(text), modseq) for uid, text in changed]
        return sorted(metas, key=lambda m: m.uid), sorted(failed)

    async def expunge(self, folder_id: int, uids: Sequence[int] | None = None) -> list[int]:
        async with self._session() as session:
            query = select(MailMessage.uid, MailMessage.flags).where(
                MailMessage.folder_id == folder_id
            )
            rows = (await session.execute(query)).all()
            allowed = None if uids is None else set(uids)
            gone = sorted(
                uid
                for uid, flags in rows
                if "\\Deleted" in _flags_of(flags) and (allowed is None or uid in allowed)
            )
            if not gone:
                return []
            await self._bump(session, folder_id, expunge=True)
            for chunk in _chunks(gone):
                await session.execute(
                    delete(MailMessage).where(
                        MailMessage.folder_id == folder_id, MailMessage.uid.in_(list(chunk))
                    )
                )
        return gone

    async def copy(
        self, folder_id: int, uids: Sequence[int], target_id: int, *, move: bool = False
    ) -> tuple[int, list[tuple[int, int]]]:
        columns = [
            "flags",
            "internal_date",
            "size",
            "blob",
            "header",
            "envelope",
            "bodystructure",
            "body",
            "sent_date",
        ]
        async with self._session() as session:
            target = await self._folder_by_id(session, target_id)
            if target is None:
                raise NoSuchFolder("[TRYCREATE] Target mailbox does not exist")
            rows: list[Any] = []
            for chunk in _chunks(sorted(uids)):
                rows += (
                    await session.execute(
                        select(MailMessage.uid, *[getattr(MailMessage, c) for c in columns])
                        .where(MailMessage.folder_id == folder_id, MailMessage.uid.in_(list(chunk)))
                        .order_by(MailMessage.uid)
                    )
                ).all()
            if not rows:
                return target.uidvalidity, []
            first, modseq = await self._bump(session, target_id, uids=len(rows))
            mapping: list[tuple[int, int]] = []
            values = []
            for offset, row in enumerate(rows):
                mapping.append((row.uid, first + offset))
                item = {c: getattr(row, c) for c in columns}
                item.update(folder_id=target_id, uid=first + offset, modseq=modseq)
                values.append(item)
            await session.execute(insert(MailMessage), values)
            if move:
                await self._bump(session, folder_id, expunge=True)
                moved = [old for old, _ in mapping]
                for chunk in _chunks(moved):
                    await session.execute(
                        delete(MailMessage).where(
                            MailMessage.folder_id == folder_id, MailMessage.uid.in_(list(chunk))
                        )
                    )
        return target.uidvalidity, mapping

    # endregion


def _conforms(store: MessageStore) -> tuple[MessageSink, MailStore]:
    # Type-checked only: the store implements both contracts.
    return store, store

"""Message store: folders and messages in the database, raw messages in content-addressed files.

The only mailbox module that speaks SQL. Every change is one database transaction; the raw
message file is written and fsynced before the row that points at it is committed, so a
crash or a rollback can leave an orphan file but never a row without its file. A delivery
records its Message-ID in the box in the same transaction as the message: delivering the
same Message-ID again stores nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

from sqlalchemy import Table, and_, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from releves_mailer.clock import Clock
from releves_mailer.db import Database
from releves_mailer.db.engine import QuickQuery
from releves_mailer.db.models.mailbox import (
    MailDelivered,
    MailFolder,
    MailMessage,
)
from releves_mailer.mailbox.blobs import Analysis, BlobFiles, retrieve
from releves_mailer.mailbox.contracts import (
    AppendItem,
    FetchColumn,
    FolderChanges,
    FolderInfo,
    MailboxLimits,
    MailboxSession,
    MailStore,
    MessageMeta,
    MessageRecord,
    NoSuchFolder,
)
from releves_mailer.mailbox.folders import (
    FOLDER_BY_ID_SQL,
    GONE_SINCE_SQL,
    IN_CHUNK,
    MESSAGES,
    FolderStore,
    canonical_flags,
    chunks,
    flags_of,
)
from releves_mailer.mailbox.sink import DeliveryReceipt, MailDelivery, MessageSink, UnknownBox
from releves_mailer.mailbox.user import UserMailbox
from releves_mailer.portfolio.logins import LocalBox

__all__ = ["BoxDirectory", "MessageStore"]

_log = logging.getLogger(__name__)

#: The name of the store's side pool of database connections (see ``Database``).
_POOL = "mailbox"
#: Transactions a delivery tries: a concurrent delivery of the same Message-ID (or creation
#: of the same folder) makes the first attempt fail on a unique constraint; the next one
#: sees the other's rows.
_DELIVERY_ATTEMPTS = 3
_VIEW_CACHE_SIZE = 64
_FIXED_CACHE_SIZE = 16
#: Octets of ENVELOPE data kept in memory, all folders together.
ENVELOPE_CACHE_BYTES = 32 * 1024 * 1024
#: The reads of a selected folder, on the database's quick path (``Database.quick_reads``):
#: its (HIGHESTMODSEQ, UIDNEXT), which tells whether a view is current; its messages, all or
#: those changed since a MODSEQ, by UID (the folder and expunge reads: ``folders``).
_HEAD_SQL = "SELECT highestmodseq, uidnext FROM mail_folder WHERE id = :folder"
_ALL_METAS_SQL = (
    "SELECT uid, flags, modseq FROM mail_message WHERE folder_id = :folder ORDER BY uid"
)
_METAS_SINCE_SQL = (
    "SELECT uid, flags, modseq FROM mail_message WHERE folder_id = :folder AND modseq > :modseq"
    " ORDER BY uid"
)
_ALL_UIDS_SQL = "SELECT uid FROM mail_message WHERE folder_id = :folder ORDER BY uid"
#: The columns of a message that never change, kept in memory per folder.
_FIXED_COLUMNS = frozenset({"blob", "internal_date", "size"})


class BoxDirectory(Protocol):
    """Which addresses have a box here (the portfolio's authenticator is one)."""

    async def local_box(self, address: str) -> LocalBox | None: ...


def _well_formed(address: str) -> bool:
    local, at, domain = address.partition("@")
    return (
        bool(at and local and domain)
        and "@" not in domain
        and not any(c.isspace() for c in address)
    )


class MessageStore(FolderStore):
    """Mailboxes of every local address; implements ``MessageSink`` and ``MailStore``.

    Args:
        database: the daemon's database (schema at head).
        blob_dir: directory of the raw message files, e.g. ``<data_dir>/messages``.
        clock: source of internal dates and UIDVALIDITY values.
        boxes: the addresses that have a box; without it, any well-formed address does
            (its INBOX is created on the first delivery).
    """

    def __init__(
        self,
        database: Database,
        blob_dir: Path,
        clock: Clock,
        *,
        boxes: BoxDirectory | None = None,
        limits: MailboxLimits | None = None,
    ) -> None:
        super().__init__(database, clock, _POOL)
        self.limits = limits or MailboxLimits()
        self.blobs = BlobFiles(blob_dir)
        self.blob_dir = self.blobs.blob_dir
        self.boxes = boxes
        self._views: dict[int, tuple[FolderInfo, list[MessageMeta]]] = {}
        self._envelopes: dict[int, dict[int, MessageRecord]] = {}
        self._envelope_bytes = 0
        self._fixed: dict[int, dict[int, MessageRecord]] = {}

    async def start(self, stack: AsyncExitStack) -> None:
        """Register :meth:`close` on the daemon's exit stack."""
        stack.push_async_callback(self.close)

    async def close(self) -> None:
        """Release the store's connections (SQLite's side pool) and its writing threads."""
        await self.database.dispose_side(_POOL)
        await self.blobs.close()

    async def new_session(self, owner: str) -> MailboxSession:
        """The mailboxes of ``owner`` for one logged-in client, its INBOX created if missing."""
        await self.ensure_inbox(owner)
        return UserMailbox(self, owner, self.limits)

    # region message files ##############################################################

    async def prepare(self, raw: bytes) -> None:
        """Head start for a coming delivery of ``raw``: its file written and fsynced, its
        structure analysed (see :meth:`BlobFiles.prepare`)."""
        await self.blobs.prepare(raw)

    async def read_blob(self, blob: str) -> bytes:
        return await self.blobs.read(blob)

    async def read_blobs(self, blobs: Sequence[str]) -> list[bytes]:
        return await self.blobs.read_many(blobs)

    async def read_blob_range(self, blob: str, offset: int, size: int) -> bytes:
        return await self.blobs.read_range(blob, offset, size)

    async def spool_file(self) -> BinaryIO:
        return await self.blobs.spool_file()

    async def collect_garbage(self, older_than: dt.timedelta = dt.timedelta(hours=1)) -> int:
        """Delete message files no row points at any more; returns how many went.

        Files younger than ``older_than`` are kept: their delivery may not have committed yet.
        """
        async with self._session() as session:
            used = set((await session.execute(select(MailMessage.blob).distinct())).scalars())
        return await self.blobs.sweep(used, self.clock.now() - older_than)

    # endregion
    # region delivery (MessageSink) #######################################################

    async def deliver(
        self,
        address: str,
        raw: bytes,
        message_id: str,
        *,
        folder: str = "INBOX",
        flags: Sequence[str] = (),
        internal_date: dt.datetime | None = None,
    ) -> DeliveryReceipt:
        """Store ``raw`` in ``folder`` of ``address`` unless the box holds ``message_id``.

        The folder is created when missing. Watchers hear of it once it is committed.
        """
        [receipt] = await self.deliver_many(
            [MailDelivery(address, raw, message_id, folder, flags, internal_date)]
        )
        return receipt

    async def deliver_many(self, items: Sequence[MailDelivery]) -> list[DeliveryReceipt]:
        """:meth:`deliver` of each item, in order, in one transaction.

        Each folder is looked up (or created) once and takes all its UIDs with one update and
        one MODSEQ; the rows go in with one statement. The files are written and fsynced (in
        threads, while the boxes are checked) before any row is inserted.
        """
        if not items:
            return []
        owners = [item.address.strip().lower() for item in items]
        prepared = asyncio.ensure_future(self.blobs.prepare_many([item.raw for item in items]))
        try:
            await self._check_boxes(owners)
            attempt = 1
            while True:
                try:
                    async with self._session() as session:
                        return await self._deliver_in(session, owners, items, prepared)
                except IntegrityError:
                    if attempt == _DELIVERY_ATTEMPTS:
                        raise
                    attempt += 1
        except BaseException:
            prepared.add_done_callback(retrieve)
            raise

    async def _check_boxes(self, owners: Sequence[str]) -> None:
        for owner in dict.fromkeys(owners):
            if not _well_formed(owner) or (
                self.boxes is not None and await self.boxes.local_box(owner) is None
            ):
                raise UnknownBox(f"no box {owner!r} here")

    async def _deliver_in(
        self,
        session: AsyncSession,
        owners: Sequence[str],
        items: Sequence[MailDelivery],
        prepared: asyncio.Future[tuple[list[str], list[Analysis]]],
    ) -> list[DeliveryReceipt]:
        known: set[tuple[str, str]] = set()
        ids = sorted({item.message_id for item in items})
        for start in range(0, len(ids), IN_CHUNK):
            rows = await session.execute(
                select(MailDelivered.owner, MailDelivered.message_id).where(
                    MailDelivered.message_id.in_(ids[start : start + IN_CHUNK])
                )
            )
            known.update((owner, message_id) for owner, message_id in rows)
        fresh: list[int] = []
        folders: dict[tuple[str, str], int] = {}
        folder_ids: list[int] = []
        for index, (owner, item) in enumerate(zip(owners, items, strict=True)):
            if (owner, item.message_id) in known:
                continue
            known.add((owner, item.message_id))
            fresh.append(index)
            name = "INBOX" if item.folder.upper() == "INBOX" else item.folder
            folder_id = folders.get((owner, name))
            if folder_id is None:
                info = await self._get_folder(session, owner, name)
                if info is None:
                    info = await self._create_folder(session, owner, name)
                folder_id = folders[owner, name] = info.id
            folder_ids.append(folder_id)
        uids: dict[int, int] = {}
        if fresh:
            now = self.clock.now()
            await session.execute(
                insert(MailDelivered),
                [
                    {"owner": owners[i], "message_id": items[i].message_id, "delivered_at": now}
                    for i in fresh
                ],
            )
            blobs, analyses = await asyncio.shield(prepared)
            stored = await self._insert_many(
                session,
                folder_ids,
                [items[i] for i in fresh],
                [blobs[i] for i in fresh],
                [analyses[i] for i in fresh],
            )
            uids = dict(zip(fresh, stored, strict=True))
        return [
            DeliveryReceipt(owner, item.message_id, index in uids, uids.get(index))
            for index, (owner, item) in enumerate(zip(owners, items, strict=True))
        ]

    async def _insert_many(
        self,
        session: AsyncSession,
        folder_ids: Sequence[int],
        items: Sequence[MailDelivery],
        blobs: Sequence[str],
        analyses: Sequence[Analysis],
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
        await session.execute(insert(MESSAGES), rows)
        return uids

    async def append(
        self,
        folder_id: int,
        raw: bytes | BinaryIO,
        flags: Sequence[str],
        internal_date: dt.datetime | None,
    ) -> tuple[int, int]:
        uidvalidity, [uid] = await self.append_many(
            folder_id, [AppendItem(raw, flags, internal_date)]
        )
        return uidvalidity, uid

    async def append_many(
        self, folder_id: int, items: Sequence[AppendItem]
    ) -> tuple[int, list[int]]:
        in_memory = [item.raw for item in items if isinstance(item.raw, bytes)]
        # The files of the messages given as bytes are written together (fsyncs overlap).
        memory_blobs, memory_analyses = await self.blobs.prepare_many(in_memory)
        prepared = iter(zip(in_memory, memory_blobs, memory_analyses, strict=True))
        datas: list[bytes] = []
        blobs: list[str] = []
        analyses: list[Analysis] = []
        for item in items:
            if isinstance(item.raw, bytes):
                data, blob, analysis = next(prepared)
            else:
                # A spooled literal: read, hashed, written and analysed in a thread, held
                # in memory once (the MIME analysis needs the whole message).
                data, blob, analysis = await asyncio.to_thread(
                    self.blobs.prepare_file_sync, item.raw
                )
            datas.append(data)
            blobs.append(blob)
            analyses.append(analysis)
        deliveries = [
            MailDelivery("", data, "", "", item.flags, item.internal_date)
            for data, item in zip(datas, items, strict=True)
        ]
        async with self._session() as session:
            info = await self._folder_by_id(session, folder_id)
            if info is None:
                raise NoSuchFolder("Mailbox does not exist")
            uids = await self._insert_many(
                session, [folder_id] * len(items), deliveries, blobs, analyses
            )
            return info.uidvalidity, uids

    # endregion
    # region selected-folder views ########################################################

    async def load_view(self, folder_id: int) -> tuple[FolderInfo, list[MessageMeta]]:
        """The folder and its messages; the list is shared, callers must not change it."""
        folder_only = (FOLDER_BY_ID_SQL, {"folder": folder_id})
        cached = self._views.get(folder_id)
        if cached is not None:
            known, old = cached
            since = {"folder": folder_id, "modseq": known.highestmodseq}
            # One snapshot: the folder, and only what changed and went since the cached
            # list (nothing, mostly: many clients polling one big box share one list).
            folder, changed, gone = await self.database.quick_reads(
                [folder_only, (_METAS_SINCE_SQL, since), (GONE_SINCE_SQL, since)]
            )
            if not folder:
                raise NoSuchFolder("Mailbox does not exist")
            info = FolderInfo(*folder[0])
            # Another process may have deleted the folder and made one of the same id: its
            # counters would not be past the cached ones (or its UIDVALIDITY differs).
            if (
                info.uidvalidity == known.uidvalidity
                and info.highestmodseq >= known.highestmodseq
                and info.uidnext >= known.uidnext
            ):
                if (info.highestmodseq, info.uidnext) == (known.highestmodseq, known.uidnext):
                    return info, old
                merged = _merged(old, _metas(changed), {uid for (uid,) in gone})
                return info, self._keep_view(info, merged)
        folder, rows = await self.database.quick_reads(
            [folder_only, (_ALL_METAS_SQL, {"folder": folder_id})]
        )
        if not folder:
            raise NoSuchFolder("Mailbox does not exist")
        info = FolderInfo(*folder[0])
        return info, self._keep_view(info, _metas(rows))

    def _keep_view(self, info: FolderInfo, metas: list[MessageMeta]) -> list[MessageMeta]:
        folder_id = info.id
        self._views.pop(folder_id, None)
        self._views[folder_id] = (info, metas)
        while len(self._views) > _VIEW_CACHE_SIZE:
            del self._views[next(iter(self._views))]
        return metas

    async def folder_head(self, folder_id: int) -> tuple[int, int] | None:
        # Every IMAP command of a selected folder starts here: the database's quick path.
        rows = await self.database.quick_rows(_HEAD_SQL, {"folder": folder_id})
        return (int(rows[0][0]), int(rows[0][1])) if rows else None

    async def changes(self, folder_id: int, since_modseq: int) -> FolderChanges | None:
        reads: list[QuickQuery] = [
            (FOLDER_BY_ID_SQL, {"folder": folder_id}),
            (_METAS_SINCE_SQL, {"folder": folder_id, "modseq": since_modseq}),
        ]
        folder, changed = await self.database.quick_reads(reads)
        if not folder:
            return None
        info = FolderInfo(*folder[0])
        if info.expunge_modseq <= since_modseq:
            return FolderChanges(info, _metas(changed), None)
        # Expunges since: every UID present, in the same snapshot as the rest.
        reads.append((_ALL_UIDS_SQL, {"folder": folder_id}))
        folder, changed, present = await self.database.quick_reads(reads)
        if not folder:
            return None
        info = FolderInfo(*folder[0])
        return FolderChanges(info, _metas(changed), [uid for (uid,) in present])

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
        if wanted and set(wanted) <= _FIXED_COLUMNS:
            return await self._fixed_columns(folder_id, ordered)
        if wanted == ["envelope"]:
            return await self._envelope_column(folder_id, ordered)
        return await self._query_records(folder_id, ordered, wanted)

    def _forget_folder(self, folder_id: int) -> None:
        # SQLite gives a deleted folder's id to the next one created.
        self._fixed.pop(folder_id, None)
        self._views.pop(folder_id, None)
        self._drop_envelopes(folder_id)

    def _drop_envelopes(self, folder_id: int) -> None:
        dropped = self._envelopes.pop(folder_id, None)
        if dropped:
            self._envelope_bytes -= sum(len(record.envelope) for record in dropped.values())

    async def _envelope_column(self, folder_id: int, ordered: list[int]) -> list[MessageRecord]:
        # A message's ENVELOPE never changes either, and mail clients fetch it for whole
        # boxes (message lists): kept per folder within ENVELOPE_CACHE_BYTES in all, the
        # folders used least recently dropped first; a folder larger than that alone is
        # read from the database each time. The records are shared: callers only read them.
        cache = self._envelopes.pop(folder_id, None) or {}
        self._envelopes[folder_id] = cache
        missing = [uid for uid in ordered if uid not in cache]
        if missing:
            for record in await self._query_records(folder_id, missing, ["envelope"]):
                cache[record.uid] = record
                self._envelope_bytes += len(record.envelope)
        found = [cache[uid] for uid in ordered if uid in cache]
        while self._envelope_bytes > ENVELOPE_CACHE_BYTES and self._envelopes:
            self._drop_envelopes(next(iter(self._envelopes)))
        return found

    async def _fixed_columns(self, folder_id: int, ordered: list[int]) -> list[MessageRecord]:
        # Internal date, size and file never change: SEARCH SINCE/LARGER and the FETCH of
        # whole messages over a big box are served from memory after the first time instead
        # of re-reading (and re-parsing) every row. The records handed out are shared:
        # callers only read them.
        cache = self._fixed.pop(folder_id, None) or {}
        self._fixed[folder_id] = cache
        while len(self._fixed) > _FIXED_CACHE_SIZE:
            del self._fixed[next(iter(self._fixed))]
        missing = [uid for uid in ordered if uid not in cache]
        if missing:
            for record in await self._query_records(folder_id, missing, sorted(_FIXED_COLUMNS)):
                cache[record.uid] = record
        return [cache[uid] for uid in ordered if uid in cache]

    async def _query_records(
        self, folder_id: int, ordered: list[int], wanted: Sequence[str]
    ) -> list[MessageRecord]:
        # Core columns, not ORM attributes: rows come back without the ORM's loading.
        columns = MESSAGES.c
        selected = [columns.uid] + [columns[name] for name in wanted]
        records: list[MessageRecord] = []
        async with self._session() as session:
            # A contiguous UID range is one indexed range scan, not a long IN list.
            if ordered[-1] - ordered[0] + 1 <= len(ordered) * 2:
                condition = and_(columns.uid >= ordered[0], columns.uid <= ordered[-1])
                batches: list[Any] = [condition]
                keep: set[int] | None = set(ordered)
            else:
                batches = [columns.uid.in_(list(chunk)) for chunk in chunks(ordered)]
                keep = None
            for condition in batches:
                result = await session.execute(
                    select(*selected)
                    .where(columns.folder_id == folder_id, condition)
                    .order_by(columns.uid)
                )
                for row in result:
                    if keep is not None and row[0] not in keep:
                        continue
                    record = MessageRecord(uid=row[0])
                    for index, name in enumerate(wanted, 1):
                        value = row[index]
                        if name == "flags":
                            value = flags_of(value)
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
            for chunk in chunks(sorted(uids)):
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
                current = flags_of(text)
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
        metas = [MessageMeta(uid, flags_of(text), modseq) for uid, text in changed]
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
                if "\\Deleted" in flags_of(flags) and (allowed is None or uid in allowed)
            )
            if not gone:
                return []
            _, modseq = await self._bump(session, folder_id, expunge=True)
            # Another session may have expunged some of them meanwhile: only what this
            # transaction deleted is recorded (imaptest's stress mode found the race).
            gone = await self._delete_messages(session, folder_id, gone)
            await self._record_expunged(session, folder_id, gone, modseq)
        return gone

    async def _delete_messages(
        self, session: AsyncSession, folder_id: int, uids: Sequence[int]
    ) -> list[int]:
        """Delete these messages of a folder; the UIDs that were still there, sorted."""
        deleted: list[int] = []
        for chunk in chunks(uids):
            deleted += (
                await session.execute(
                    delete(MESSAGES)
                    .where(MESSAGES.c.folder_id == folder_id, MESSAGES.c.uid.in_(list(chunk)))
                    .returning(MESSAGES.c.uid)
                )
            ).scalars()
        return sorted(deleted)

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
            for chunk in chunks(sorted(uids)):
                rows += (
                    await session.execute(
                        select(MailMessage.uid, *[getattr(MailMessage, c) for c in columns])
                        .where(MailMessage.folder_id == folder_id, MailMessage.uid.in_(list(chunk)))
                        .order_by(MailMessage.uid)
                    )
                ).all()
            if not rows:
                return target.uidvalidity, []
            if move:
                # Taken from the source first: what another session moved or expunged
                # meanwhile is neither copied nor recorded twice.
                _, expunge_modseq = await self._bump(session, folder_id, expunge=True)
                moved = await self._delete_messages(session, folder_id, [r.uid for r in rows])
                await self._record_expunged(session, folder_id, moved, expunge_modseq)
                still = set(moved)
                rows = [row for row in rows if row.uid in still]
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
        return target.uidvalidity, mapping

    # endregion


def _metas(rows: Iterable[Any]) -> list[MessageMeta]:
    return [MessageMeta(uid, flags_of(flags), modseq) for uid, flags, modseq in rows]


def _merged(
    old: list[MessageMeta], changed: list[MessageMeta], gone: set[int]
) -> list[MessageMeta]:
    """A folder's message list (by UID) from an older one, the messages changed or added
    since, and the UIDs expunged since (every expunge is recorded, see
    :meth:`FolderStore._record_expunged`)."""
    by_uid = {meta.uid: meta for meta in changed if meta.uid not in gone}
    metas = [by_uid.pop(meta.uid, meta) for meta in old if meta.uid not in gone]
    added = sorted(by_uid.values(), key=lambda meta: meta.uid)
    if added and metas and added[0].uid < metas[-1].uid:
        return sorted(metas + added, key=lambda meta: meta.uid)
    return metas + added


def _conforms(store: MessageStore) -> tuple[MessageSink, MailStore]:
    # Type-checked only: the store implements both contracts.
    return store, store

"""Folders of the message store: each user's mailboxes, their UIDs and MODSEQs, subscriptions,
the UIDs expunged from them.

:class:`FolderStore` owns the store's transactions and the in-process notification of
changes (watchers hear of a change once it is committed); :class:`MessageStore` keeps the
messages on top of it.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy import event as sa_event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from releves_mailer.clock import Clock
from releves_mailer.db import Database
from releves_mailer.db.models.mailbox import (
    MailExpunged,
    MailFolder,
    MailMessage,
    MailSubscription,
)
from releves_mailer.mailbox.contracts import FolderExists, FolderInfo, NoSuchFolder, StoreError

__all__ = [
    "DELIMITER",
    "FOLDERS",
    "IN_CHUNK",
    "MESSAGES",
    "SYSTEM_FLAGS",
    "FolderStore",
    "canonical_flags",
    "chunks",
    "flags_of",
    "folder_info",
]

SYSTEM_FLAGS = ("\\Answered", "\\Deleted", "\\Draft", "\\Flagged", "\\Seen")
_SYSTEM_BY_LOWER = {flag.lower(): flag for flag in SYSTEM_FLAGS}
_NOTIFY_KEY = "releves_mailer.mailbox.notify"
_LISTENING_KEY = "releves_mailer.mailbox.listening"
IN_CHUNK = 500
DELIMITER = "/"


def canonical_flags(flags: Iterable[str]) -> tuple[str, ...]:
    """Flags deduplicated (keywords case-insensitively), system flags first, sorted."""
    seen: dict[str, str] = {}
    for flag in flags:
        if not flag or flag.lower() == "\\recent":
            continue
        flag = _SYSTEM_BY_LOWER.get(flag.lower(), flag)
        seen.setdefault(flag.lower(), flag)
    return tuple(sorted(seen.values(), key=lambda f: (not f.startswith("\\"), f.lower())))


def folder_info(row: Any) -> FolderInfo:
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


def chunks(items: Sequence[int], size: int = IN_CHUNK) -> Iterable[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def table_of(model: type[Any]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


FOLDERS = table_of(MailFolder)
MESSAGES = table_of(MailMessage)
FOLDER_COLUMNS = (
    FOLDERS.c.id,
    FOLDERS.c.name,
    FOLDERS.c.uidvalidity,
    FOLDERS.c.uidnext,
    FOLDERS.c.highestmodseq,
    FOLDERS.c.expunge_modseq,
    FOLDERS.c.recent_uid,
    FOLDERS.c.special_use,
)
#: One-statement reads every IMAP command makes, for the database's quick path (see
#: ``Database.quick_rows``): a folder by its owner and name, and by its id.
_FOLDER_SELECT = (
    f"SELECT {', '.join(column.name for column in FOLDER_COLUMNS)} FROM {FOLDERS.name} "
)
FOLDER_BY_NAME_SQL = _FOLDER_SELECT + "WHERE owner = :owner AND name = :name"
FOLDER_BY_ID_SQL = _FOLDER_SELECT + "WHERE id = :folder"
#: The expunges a client knew of (at or before its MODSEQ), and those made after one.
_KNOWN_GONE_SQL = "SELECT uid FROM mail_expunged WHERE folder_id = :folder AND modseq <= :modseq"
GONE_SINCE_SQL = "SELECT uid FROM mail_expunged WHERE folder_id = :folder AND modseq > :modseq"


@functools.lru_cache(maxsize=4096)
def flags_of(text: str) -> tuple[str, ...]:
    # Cached: every selected session keeps one tuple per message, mostly the same few.
    return tuple(text.split()) if text else ()


class FolderStore:
    """Folders and subscriptions of every local address, in the database.

    Args:
        database: the daemon's database (schema at head).
        clock: source of UIDVALIDITY values.
        pool: the name of the database's side pool the store's transactions use.
    """

    def __init__(self, database: Database, clock: Clock, pool: str) -> None:
        self.database = database
        self.clock = clock
        self._watchers: dict[int, set[asyncio.Event]] = defaultdict(set)
        self._last_uidvalidity = 0
        # IMAP sessions run several short transactions per command: on SQLite the store
        # uses a side pool of the database, so that they never wait behind the collection's
        # long transactions.
        self._sessionmaker = database.side_sessionmaker(pool)

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[AsyncSession]:
        async with self._sessionmaker() as session, session.begin():
            yield session

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
    # region folders ######################################################################

    async def _bump(
        self, session: AsyncSession, folder_id: int, *, uids: int = 0, expunge: bool = False
    ) -> tuple[int, int]:
        """Take ``uids`` new UIDs and one new MODSEQ; returns (first uid, modseq)."""
        columns = FOLDERS.c
        values: dict[str, Any] = {"highestmodseq": columns.highestmodseq + 1}
        if uids:
            values["uidnext"] = columns.uidnext + uids
        if expunge:
            values["expunge_modseq"] = columns.highestmodseq + 1
        # Core statements: the ORM's bulk-update machinery cost more than the update itself.
        row = (
            await session.execute(
                update(FOLDERS)
                .where(columns.id == folder_id)
                .values(**values)
                .returning(columns.uidnext, columns.highestmodseq)
            )
        ).one_or_none()
        if row is None:
            raise NoSuchFolder("Mailbox does not exist")
        self._notify_after_commit(session, folder_id)
        return row.uidnext - uids, row.highestmodseq

    async def _get_folder(self, session: AsyncSession, owner: str, name: str) -> FolderInfo | None:
        # Core selects: always the database's current values (UIDs are taken by core
        # updates), without the ORM's identity map.
        row = (
            await session.execute(
                select(*FOLDER_COLUMNS).where(FOLDERS.c.owner == owner, FOLDERS.c.name == name)
            )
        ).one_or_none()
        return None if row is None else folder_info(row)

    async def _folder_by_id(self, session: AsyncSession, folder_id: int) -> FolderInfo | None:
        row = (
            await session.execute(select(*FOLDER_COLUMNS).where(FOLDERS.c.id == folder_id))
        ).one_or_none()
        return None if row is None else folder_info(row)

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
        # SQLite may hand out the id of a deleted folder again: nothing cached under it holds.
        self._forget_folder(row.id)
        return folder_info(row)

    async def ensure_inbox(self, owner: str) -> None:
        try:
            async with self._session() as session:
                if await self._get_folder(session, owner, "INBOX") is None:
                    await self._add_folder(session, owner, "INBOX", "")
        except IntegrityError:
            pass  # another connection of the same user created it first

    async def owners(self) -> list[str]:
        """Every address that has a folder in the store, sorted."""
        async with self._session() as session:
            rows = await session.execute(select(MailFolder.owner).distinct())
            return sorted(owner for (owner,) in rows)

    async def totals(self) -> tuple[int, int]:
        """Messages of the whole store and their bytes."""
        async with self._session() as session:
            row = (
                await session.execute(
                    select(func.count(MailMessage.id), func.coalesce(func.sum(MailMessage.size), 0))
                )
            ).one()
        return int(row[0]), int(row[1])

    async def list_folders(self, owner: str) -> list[FolderInfo]:
        async with self._session() as session:
            rows = (
                await session.execute(
                    select(MailFolder).where(MailFolder.owner == owner).order_by(MailFolder.name)
                )
            ).scalars()
            return [folder_info(row) for row in rows]

    async def get_folder(self, owner: str, name: str) -> FolderInfo | None:
        rows = await self.database.quick_rows(FOLDER_BY_NAME_SQL, {"owner": owner, "name": name})
        return FolderInfo(*rows[0]) if rows else None

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
            await session.execute(delete(MailExpunged).where(MailExpunged.folder_id == info.id))
            await session.execute(delete(MailFolder).where(MailFolder.id == info.id))
            self._notify_after_commit(session, info.id)
        self._forget_folder(info.id)

    def _forget_folder(self, folder_id: int) -> None:
        """Drop what is cached of a folder deleted, or of a new one reusing a deleted id."""

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
        unseen = sum(1 for _, flags in rows if "\\Seen" not in flags_of(flags))
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
    # region expunged UIDs (QRESYNC) ######################################################

    async def _record_expunged(
        self, session: AsyncSession, folder_id: int, uids: Sequence[int], modseq: int
    ) -> None:
        """Keep the expunged UIDs with their MODSEQ, for QRESYNC's VANISHED."""
        if not uids:
            return
        await session.execute(
            insert(MailExpunged),
            [{"folder_id": folder_id, "uid": uid, "modseq": modseq} for uid in uids],
        )

    async def vanished(
        self,
        folder_id: int,
        since_modseq: int,
        within: Sequence[tuple[int, int]] | None = None,
        *,
        snapshot: tuple[Sequence[int], int] | None = None,
    ) -> list[tuple[int, int]]:
        """UID ranges expunged after ``since_modseq`` (among ``within`` when given).

        UIDs are taken in order and never reused, so every UID below UIDNEXT that no message
        holds was expunged; those known expunged at or before ``since_modseq`` are left out.
        Expunges older than the record of expunges (schema 0013) are thus reported too,
        which RFC 7162 allows (a client ignores UIDs it does not know).
        """
        if snapshot is not None:
            # One statement: the quick path, no transaction.
            present, uidnext = snapshot
            rows = await self.database.quick_rows(
                _KNOWN_GONE_SQL, {"folder": folder_id, "modseq": since_modseq}
            )
            return _gaps(present, {row[0] for row in rows}, uidnext, within)
        async with self._session() as session:
            info = await self._folder_by_id(session, folder_id)
            if info is None:
                raise NoSuchFolder("Mailbox does not exist")
            uidnext = info.uidnext
            present = list(
                (
                    await session.execute(
                        select(MailMessage.uid)
                        .where(MailMessage.folder_id == folder_id)
                        .order_by(MailMessage.uid)
                    )
                ).scalars()
            )
            known_gone = set(
                (
                    await session.execute(
                        select(MailExpunged.uid).where(
                            MailExpunged.folder_id == folder_id,
                            MailExpunged.modseq <= since_modseq,
                        )
                    )
                ).scalars()
            )
        return _gaps(present, known_gone, uidnext, within)

    # endregion


def _gaps(
    present: Sequence[int],
    known_gone: set[int],
    uidnext: int,
    within: Sequence[tuple[int, int]] | None,
) -> list[tuple[int, int]]:
    """UID ranges below ``uidnext`` held by no message of ``present`` (sorted) and not in
    ``known_gone``, cut to ``within``; work in the number of messages, not of UIDs."""
    gaps: list[tuple[int, int]] = []
    previous = 0
    for uid in [*present, uidnext]:
        if uid > previous + 1:
            gaps.append((previous + 1, uid - 1))
        previous = uid
    if within is not None:
        cut: list[tuple[int, int]] = []
        for low, high in sorted(within):
            for gap_low, gap_high in gaps:
                start, end = max(low, gap_low), min(high, gap_high)
                if start <= end:
                    cut.append((start, end))
        gaps = cut
    out: list[tuple[int, int]] = []
    old = sorted(known_gone)
    for low, high in gaps:
        start = low
        index = bisect.bisect_left(old, low)
        while index < len(old) and old[index] <= high:
            if old[index] > start:
                out.append((start, old[index] - 1))
            start = old[index] + 1
            index += 1
        if start <= high:
            out.append((start, high))
    merged: list[tuple[int, int]] = []
    for low, high in out:
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged

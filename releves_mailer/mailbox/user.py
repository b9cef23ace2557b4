"""The mailbox session of one logged-in user: the store's operations bound to its owner."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, BinaryIO, Literal

from releves_mailer.mailbox.contracts import (
    AppendItem,
    FetchColumn,
    FolderChanges,
    FolderInfo,
    MailboxLimits,
    MessageMeta,
    MessageRecord,
    OverQuota,
    TooManyFolders,
)

if TYPE_CHECKING:
    from releves_mailer.mailbox.store import MessageStore

__all__ = ["UserMailbox"]


class UserMailbox:
    """What :meth:`MessageStore.new_session` returns for ``owner`` (a ``MailboxSession``):
    the folder names it is given are ``owner``'s, never another user's, and what the user
    adds by themselves stays within ``limits``."""

    def __init__(
        self, store: MessageStore, owner: str, limits: MailboxLimits | None = None
    ) -> None:
        self._store = store
        self._owner = owner
        self._limits = limits or MailboxLimits()

    @property
    def owner(self) -> str:
        return self._owner

    async def list_folders(self) -> list[FolderInfo]:
        return await self._store.list_folders(self._owner)

    async def get_folder(self, name: str) -> FolderInfo | None:
        return await self._store.get_folder(self._owner, name)

    async def create_folder(self, name: str, special_use: str = "") -> FolderInfo:
        limit = self._limits.max_folders
        if limit is not None and len(await self.list_folders()) >= limit:
            raise TooManyFolders(f"[LIMIT] At most {limit} mailboxes")
        return await self._store.create_folder(self._owner, name, special_use)

    async def delete_folder(self, name: str) -> None:
        await self._store.delete_folder(self._owner, name)

    async def rename_folder(self, old: str, new: str) -> None:
        await self._store.rename_folder(self._owner, old, new)

    async def subscriptions(self) -> list[str]:
        return await self._store.subscriptions(self._owner)

    async def set_subscribed(self, name: str, subscribed: bool) -> None:
        await self._store.set_subscribed(self._owner, name, subscribed)

    async def folder_counts(self, folder_id: int) -> tuple[int, int, int]:
        return await self._store.folder_counts(folder_id)

    async def load_view(self, folder_id: int) -> tuple[FolderInfo, list[MessageMeta]]:
        return await self._store.load_view(folder_id)

    async def folder_head(self, folder_id: int) -> tuple[int, int] | None:
        return await self._store.folder_head(folder_id)

    async def changes(self, folder_id: int, since_modseq: int) -> FolderChanges | None:
        return await self._store.changes(folder_id, since_modseq)

    async def vanished(
        self,
        folder_id: int,
        since_modseq: int,
        within: Sequence[tuple[int, int]] | None = None,
        *,
        snapshot: tuple[Sequence[int], int] | None = None,
    ) -> list[tuple[int, int]]:
        return await self._store.vanished(folder_id, since_modseq, within, snapshot=snapshot)

    async def claim_recent(self, folder_id: int) -> tuple[int, int] | None:
        return await self._store.claim_recent(folder_id)

    async def fetch_records(
        self, folder_id: int, uids: Sequence[int], columns: Iterable[FetchColumn]
    ) -> list[MessageRecord]:
        return await self._store.fetch_records(folder_id, uids, columns)

    async def read_blob(self, blob: str) -> bytes:
        return await self._store.read_blob(blob)

    async def read_blobs(self, blobs: Sequence[str]) -> list[bytes]:
        return await self._store.read_blobs(blobs)

    async def read_blob_range(self, blob: str, offset: int, size: int) -> bytes:
        return await self._store.read_blob_range(blob, offset, size)

    async def store_flags(
        self,
        folder_id: int,
        uids: Sequence[int],
        mode: Literal["set", "add", "remove"],
        flags: Sequence[str],
        unchanged_since: int | None = None,
    ) -> tuple[list[MessageMeta], list[int]]:
        return await self._store.store_flags(folder_id, uids, mode, flags, unchanged_since)

    async def expunge(self, folder_id: int, uids: Sequence[int] | None = None) -> list[int]:
        return await self._store.expunge(folder_id, uids)

    async def copy(
        self, folder_id: int, uids: Sequence[int], target_id: int, *, move: bool = False
    ) -> tuple[int, list[tuple[int, int]]]:
        if not move and self._limits.quota_bytes is not None:
            records = await self.fetch_records(folder_id, uids, ["size"])
            await self._check_quota(sum(record.size for record in records))
        return await self._store.copy(folder_id, uids, target_id, move=move)

    async def append(
        self,
        folder_id: int,
        raw: bytes | BinaryIO,
        flags: Sequence[str],
        internal_date: dt.datetime | None,
    ) -> tuple[int, int]:
        if self._limits.quota_bytes is not None:
            size = len(raw) if isinstance(raw, bytes) else raw.seek(0, 2)
            if not isinstance(raw, bytes):
                raw.seek(0)
            await self._check_quota(size)
        return await self._store.append(folder_id, raw, flags, internal_date)

    async def append_many(
        self, folder_id: int, items: Sequence[AppendItem]
    ) -> tuple[int, list[int]]:
        if self._limits.quota_bytes is not None:
            total = 0
            for item in items:
                raw = item.raw
                if isinstance(raw, bytes):
                    total += len(raw)
                else:
                    total += raw.seek(0, 2)
                    raw.seek(0)
            await self._check_quota(total)
        return await self._store.append_many(folder_id, items)

    async def _check_quota(self, adding: int) -> None:
        quota = self._limits.quota_bytes
        if quota is not None and await self._store.usage(self._owner) + adding > quota:
            raise OverQuota("[OVERQUOTA] Quota exceeded")

    def watch(self, folder_id: int) -> asyncio.Event:
        return self._store.watch(folder_id)

    def unwatch(self, folder_id: int, event: asyncio.Event) -> None:
        self._store.unwatch(folder_id, event)

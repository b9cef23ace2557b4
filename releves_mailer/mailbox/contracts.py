"""Contracts private to the mailbox area: what the IMAP server asks of the message store."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Literal, Protocol

__all__ = [
    "AppendItem",
    "FetchColumn",
    "FolderChanges",
    "FolderExists",
    "FolderInfo",
    "MailStore",
    "MailboxSession",
    "MessageMeta",
    "MessageRecord",
    "NoSuchFolder",
    "StoreError",
]

#: Columns of a message the IMAP side may ask for (``uid`` always comes back).
FetchColumn = Literal[
    "flags",
    "modseq",
    "internal_date",
    "size",
    "blob",
    "header",
    "envelope",
    "bodystructure",
    "body",
    "sent_date",
]


class StoreError(Exception):
    """An operation the store refuses; the message is safe to show to an IMAP client."""


class NoSuchFolder(StoreError):
    """The mailbox does not exist."""


class FolderExists(StoreError):
    """The mailbox already exists."""


class OverQuota(StoreError):
    """The message would take the user past the bytes they may hold (RFC 9208's code)."""


class TooManyFolders(StoreError):
    """The user holds as many folders as they may (RFC 5530's LIMIT)."""


@dataclass(frozen=True, slots=True)
class MailboxLimits:
    """What one user may put in their mailboxes by themselves (IMAP APPEND, COPY, CREATE);
    deliveries of statements are never refused for it. ``None``: no limit."""

    quota_bytes: int | None = None
    max_folders: int | None = None


@dataclass(frozen=True, slots=True)
class FolderInfo:
    id: int
    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    expunge_modseq: int
    recent_uid: int
    special_use: str


@dataclass(frozen=True, slots=True)
class MessageMeta:
    """What a selected session keeps in memory per message."""

    uid: int
    flags: tuple[str, ...]
    modseq: int


@dataclass(slots=True)
class MessageRecord:
    """A message's stored data; fields not asked for stay at their defaults."""

    uid: int
    flags: tuple[str, ...] = ()
    modseq: int = 0
    internal_date: dt.datetime | None = None
    size: int = 0
    blob: str = ""
    header: bytes = b""
    envelope: bytes = b""
    bodystructure: bytes = b""
    body: bytes = b""
    sent_date: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class AppendItem:
    """One message of an APPEND: its octets (or a file of them, read from the start), its
    flags and its internal date (``None``: now)."""

    raw: bytes | BinaryIO
    flags: Sequence[str] = ()
    internal_date: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class FolderChanges:
    """What changed in a folder after a given MODSEQ."""

    info: FolderInfo
    #: Messages added or whose flags changed, in UID order.
    changed: list[MessageMeta]
    #: Every UID of the folder, only when an expunge happened since (else ``None``).
    all_uids: list[int] | None


class MailStore(Protocol):
    """The message store as the IMAP server sees it: it opens one mailbox session per login."""

    async def new_session(self, owner: str) -> MailboxSession:
        """The mailboxes of ``owner`` (a canonical address), its INBOX created if missing."""
        ...

    async def spool_file(self) -> BinaryIO:
        """A new anonymous temporary file, on the messages' disk, for a large literal."""
        ...


class MailboxSession(Protocol):
    """The mailboxes of one logged-in user; every method is one transaction.

    Folder ids come from this session's own :meth:`list_folders` and :meth:`get_folder`.
    """

    @property
    def owner(self) -> str: ...

    async def list_folders(self) -> list[FolderInfo]: ...

    async def get_folder(self, name: str) -> FolderInfo | None: ...

    async def create_folder(self, name: str, special_use: str = "") -> FolderInfo:
        """Create ``name`` and its missing parents; :class:`FolderExists` if it exists."""
        ...

    async def delete_folder(self, name: str) -> None: ...

    async def rename_folder(self, old: str, new: str) -> None:
        """Rename with children; renaming INBOX moves its messages and leaves it empty."""
        ...

    async def subscriptions(self) -> list[str]: ...

    async def set_subscribed(self, name: str, subscribed: bool) -> None: ...

    async def folder_counts(self, folder_id: int) -> tuple[int, int, int]:
        """``(messages, unseen, recent)`` of a folder."""
        ...

    async def load_view(self, folder_id: int) -> tuple[FolderInfo, list[MessageMeta]]: ...

    async def folder_head(self, folder_id: int) -> tuple[int, int] | None:
        """``(highestmodseq, uidnext)``: a cheap poll; ``None`` once the folder is gone."""
        ...

    async def changes(self, folder_id: int, since_modseq: int) -> FolderChanges | None: ...

    async def vanished(
        self,
        folder_id: int,
        since_modseq: int,
        within: Sequence[tuple[int, int]] | None = None,
        *,
        snapshot: tuple[Sequence[int], int] | None = None,
    ) -> list[tuple[int, int]]:
        """UID ranges expunged after ``since_modseq``, among ``within`` if given (QRESYNC).

        ``snapshot``: the folder's UIDs (sorted) and UIDNEXT as the caller just loaded them,
        instead of reading them again; what was expunged after it is left out."""
        ...

    async def claim_recent(self, folder_id: int) -> tuple[int, int] | None:
        """Take the \\Recent UIDs ``[low, high)`` for the caller; ``None`` if none left."""
        ...

    async def fetch_records(
        self, folder_id: int, uids: Sequence[int], columns: Iterable[FetchColumn]
    ) -> list[MessageRecord]: ...

    async def read_blob(self, blob: str) -> bytes: ...

    async def read_blobs(self, blobs: Sequence[str]) -> list[bytes]: ...

    async def read_blob_range(self, blob: str, offset: int, size: int) -> bytes:
        """``size`` octets of a message from ``offset``: a large one is sent in pieces."""
        ...

    async def store_flags(
        self,
        folder_id: int,
        uids: Sequence[int],
        mode: Literal["set", "add", "remove"],
        flags: Sequence[str],
        unchanged_since: int | None = None,
    ) -> tuple[list[MessageMeta], list[int]]:
        """Apply a STORE; returns the messages changed and the UIDs that failed the
        UNCHANGEDSINCE test (RFC 7162)."""
        ...

    async def expunge(self, folder_id: int, uids: Sequence[int] | None = None) -> list[int]:
        """Remove the \\Deleted messages (among ``uids`` if given); returns their UIDs."""
        ...

    async def copy(
        self, folder_id: int, uids: Sequence[int], target_id: int, *, move: bool = False
    ) -> tuple[int, list[tuple[int, int]]]:
        """Copy (or move) messages; returns the target's UIDVALIDITY and (old, new) UIDs."""
        ...

    async def append(
        self,
        folder_id: int,
        raw: bytes | BinaryIO,
        flags: Sequence[str],
        internal_date: dt.datetime | None,
    ) -> tuple[int, int]:
        """Store a message from APPEND, given as its bytes or a file of them (a spooled
        literal, read from the start); returns ``(uidvalidity, uid)``."""
        ...

    async def append_many(
        self, folder_id: int, items: Sequence[AppendItem]
    ) -> tuple[int, list[int]]:
        """Store every message of a MULTIAPPEND in one transaction, all or none; returns
        the UIDVALIDITY and the UIDs, in order."""
        ...

    def watch(self, folder_id: int) -> asyncio.Event:
        """An event set whenever this process changes the folder (after commit)."""
        ...

    def unwatch(self, folder_id: int, event: asyncio.Event) -> None: ...

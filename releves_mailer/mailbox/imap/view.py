"""The selected mailbox as one session last told its client: UIDs, sequence numbers, flags.

:meth:`SelectedView.sync` brings it up to date with the store and sends the client what
changed (expunges, new messages, flag changes, new keywords), RFC 3501 section 7.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from releves_mailer.mailbox.contracts import MailboxSession, MessageMeta
from releves_mailer.mailbox.imap.connection import CommandError
from releves_mailer.mailbox.imap.parser import SequenceSet
from releves_mailer.mailbox.imap.response import compress

if TYPE_CHECKING:
    from releves_mailer.mailbox.imap.context import SearchUpdate

__all__ = ["SYSTEM_FLAGS", "SelectedView", "ViewSeeds"]

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


@dataclass(slots=True)
class SelectedView:
    """The selected mailbox as this session last told its client."""

    folder_id: int
    name: str
    readonly: bool
    uidvalidity: int
    uidnext: int
    modseq: int
    uids: list[int]
    meta: dict[int, MessageMeta]
    recent: set[int]
    keywords: set[str]
    event: asyncio.Event
    #: UIDs expunged by others and not told yet: FETCH, STORE and SEARCH must not move
    #: sequence numbers, so they wait for a command that may (NOOP, IDLE, CHECK...).
    pending_gone: set[int] = field(default_factory=set)
    #: UIDs of the last ``SEARCH RETURN (SAVE)`` (RFC 5182 ``$``); expunged ones are skipped.
    saved: list[int] = field(default_factory=list)
    #: Searches kept up to date (RFC 5267 ``RETURN (UPDATE)``), and the UIDs added or whose
    #: flags changed since they were last brought up to date.
    updates: list[SearchUpdate] = field(default_factory=list)
    touched: set[int] = field(default_factory=set)

    def set_meta(self, meta: MessageMeta) -> None:
        """A message's new flags (or a new message) as told to the client."""
        self.meta[meta.uid] = meta
        if self.updates:
            self.touched.add(meta.uid)

    #: QRESYNC enabled: expunges are told as ``* VANISHED``, flag changes with their UID.
    vanished: bool = False

    def seq_of(self, uid: int) -> int:
        return bisect.bisect_left(self.uids, uid) + 1

    def resolve(self, sequence: SequenceSet, uid: bool) -> list[int]:
        """UIDs named by a sequence set, in mailbox order."""
        if sequence.saved:
            return [u for u in self.saved if u in self.meta]
        if uid:
            largest = self.uids[-1] if self.uids else 0
            spans = [
                (bisect.bisect_left(self.uids, low), bisect.bisect_right(self.uids, high))
                for low, high in sequence.resolve(largest)
            ]
            if len(spans) == 1:  # the usual 1:* or n:m, already in order
                start, end = spans[0]
                return self.uids[start:end]
            out: set[int] = set()
            for start, end in spans:
                out.update(self.uids[start:end])
            return sorted(out)
        count = len(self.uids)
        for first, last in sequence.ranges:
            for number in (first, last):
                if number is not None and number > count:
                    raise CommandError("BAD", "Error in IMAP command: Invalid message sequence")
        if count == 0:
            raise CommandError("BAD", "Error in IMAP command: No messages")
        return [self.uids[seq - 1] for seq in sequence.iter_sorted(count, count)]

    def flags_item(self, meta: MessageMeta, *, condstore: bool, with_uid: bool = False) -> bytes:
        """``FLAGS (...)`` of a FETCH response (with ``UID`` and ``MODSEQ`` when due)."""
        flags = list(meta.flags)
        if meta.uid in self.recent:
            flags.append("\\Recent")
        out = b"FLAGS (" + " ".join(flags).encode() + b")"
        if with_uid:
            out = b"UID %d " % meta.uid + out
        if condstore:
            out += b" MODSEQ (%d)" % meta.modseq
        return out

    def send_flags(self, send: Callable[[bytes], None]) -> None:
        """The FLAGS and PERMANENTFLAGS responses: system flags and the keywords in use."""
        keywords = sorted(self.keywords, key=str.lower)
        flags = " ".join([*SYSTEM_FLAGS, *keywords])
        send(f"* FLAGS ({flags})".encode())
        if self.readonly:
            send(b"* OK [PERMANENTFLAGS ()] Read-only mailbox")
        else:
            send(f"* OK [PERMANENTFLAGS ({flags} \\*)] Flags permitted".encode())

    async def sync(
        self,
        mailbox: MailboxSession,
        send: Callable[[bytes], None],
        *,
        condstore: bool,
        allow_expunge: bool,
        before_expunge: Callable[[list[int]], None] | None = None,
    ) -> bool:
        """Tell the client what changed since it last heard; ``False`` once the mailbox is
        gone. Expunges wait while ``allow_expunge`` is false (sequence numbers must not
        move under FETCH, STORE, SEARCH)."""
        self.event.clear()
        head = await mailbox.folder_head(self.folder_id)
        if head is None:
            return False
        tell_expunges = allow_expunge and bool(self.pending_gone)
        if head == (self.modseq, self.uidnext) and not tell_expunges:
            return True
        changes = None
        if head != (self.modseq, self.uidnext):
            changes = await mailbox.changes(self.folder_id, self.modseq)
            if changes is None:
                return True
            if changes.all_uids is not None:
                # Remembered, so that the view moves on to the new MODSEQ now and the next
                # commands do not read every UID of the folder again.
                still = set(changes.all_uids)
                self.pending_gone.update(uid for uid in self.uids if uid not in still)
        if allow_expunge and self.pending_gone:
            gone = [uid for uid in self.uids if uid in self.pending_gone]
            self.pending_gone = set()
            if gone and before_expunge is not None:
                before_expunge(gone)
            if self.vanished and gone:
                send(b"* VANISHED " + compress(gone).encode())
            elif not self.vanished:
                for uid in reversed(gone):
                    send(b"* %d EXPUNGE" % self.seq_of(uid))
            if gone:
                gone_set = set(gone)
                self.uids = [uid for uid in self.uids if uid not in gone_set]
                for uid in gone:
                    self.meta.pop(uid, None)
                    self.recent.discard(uid)
        if changes is None:
            return True
        last = self.uids[-1] if self.uids else 0
        new = [m for m in changes.changed if m.uid > last and m.uid not in self.meta]
        new_keywords = {
            f for m in changes.changed for f in m.flags if not f.startswith("\\")
        } - self.keywords
        if new_keywords:
            self.keywords |= new_keywords
            self.send_flags(send)
        for meta in changes.changed:
            old = self.meta.get(meta.uid)
            if old is None:
                continue
            self.set_meta(meta)
            if old.flags != meta.flags:
                item = self.flags_item(meta, condstore=condstore, with_uid=self.vanished)
                send(b"* %d FETCH (%s)" % (self.seq_of(meta.uid), item))
        if new:
            for meta in new:
                self.uids.append(meta.uid)
                self.set_meta(meta)
            send(b"* %d EXISTS" % len(self.uids))
            if not self.readonly:
                claimed = await mailbox.claim_recent(self.folder_id)
                if claimed is not None:
                    low, high = claimed
                    self.recent |= {m.uid for m in new if low <= m.uid < high}
            send(b"* %d RECENT" % len(self.recent))
        self.modseq = max(self.modseq, changes.info.highestmodseq)
        self.uidnext = max(self.uidnext, changes.info.uidnext)
        return True


@dataclass(frozen=True, slots=True)
class _Seed:
    metas: list[MessageMeta]
    uids: list[int]
    meta: dict[int, MessageMeta]
    keywords: frozenset[str]
    first_unseen: int | None


class ViewSeeds:
    """What a SELECT derives from a folder's message list (UIDs, flags by UID, keywords, the
    first unseen message), kept per folder for as long as the store hands out the same
    list: the sessions selecting a big unchanged box copy them (C-level copies) instead of
    walking ten thousand messages each."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._seeds: dict[int, _Seed] = {}

    def seed(
        self, folder_id: int, metas: list[MessageMeta]
    ) -> tuple[list[int], dict[int, MessageMeta], set[str], int | None]:
        """Fresh copies for a new view of ``metas`` (the store's shared list)."""
        seed = self._seeds.pop(folder_id, None)
        if seed is None or seed.metas is not metas:
            uids = [m.uid for m in metas]
            first_unseen = next(
                (i for i, m in enumerate(metas, 1) if "\\Seen" not in m.flags), None
            )
            seed = _Seed(
                metas,
                uids,
                dict(zip(uids, metas, strict=True)),
                frozenset(f for m in metas for f in m.flags if not f.startswith("\\")),
                first_unseen,
            )
        self._seeds[folder_id] = seed
        while len(self._seeds) > self.size:
            del self._seeds[next(iter(self._seeds))]
        return list(seed.uids), dict(seed.meta), set(seed.keywords), seed.first_unseen

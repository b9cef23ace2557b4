"""Searches kept up to date while the mailbox changes: CONTEXT=SEARCH and CONTEXT=SORT
(RFC 5267 section 4), ``RETURN (UPDATE)``, ADDTO and REMOVEFROM notifications, CANCELUPDATE."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from releves_mailer.mailbox.imap.connection import CommandContext
from releves_mailer.mailbox.imap.parser import ParseError, Parser
from releves_mailer.mailbox.imap.response import compress, quoted_or_literal
from releves_mailer.mailbox.imap.search import Key, find_messages

if TYPE_CHECKING:
    from releves_mailer.mailbox.imap.session import ImapSession
    from releves_mailer.mailbox.imap.view import SelectedView

__all__ = ["MAX_UPDATES", "SearchUpdate", "cmd_cancelupdate", "push_updates", "removed_by_expunge"]

#: Searches one session may keep up to date at once; beyond, ``* NO [NOUPDATE "tag"]``.
MAX_UPDATES = 16


@dataclass(slots=True)
class SearchUpdate:
    """One ``SEARCH RETURN (UPDATE)``: its tag, its program and the UIDs it matches now.
    A SORT kept up to date is a :class:`~.sort.SortUpdate`, which also says where."""

    tag: str
    uid: bool
    program: Key
    members: set[int] = field(default_factory=set)

    def head(self) -> bytes:
        line = b"* ESEARCH (TAG " + quoted_or_literal(self.tag) + b")"
        return line + b" UID" if self.uid else line

    def numbers(self, view: SelectedView, uids: list[int]) -> list[int]:
        return uids if self.uid else [view.seq_of(uid) for uid in uids]

    def expunged(self, view: SelectedView, gone: set[int]) -> bytes:
        """The REMOVEFROM for members about to be expunged (position 0: no order)."""
        removed = sorted(self.members & gone)
        if not removed:
            return b""
        self.members -= gone
        return b" REMOVEFROM (0 " + compress(self.numbers(view, removed)).encode() + b")"

    async def changed(self, session: ImapSession, view: SelectedView, touched: set[int]) -> bytes:
        """REMOVEFROM and ADDTO for the messages ``touched`` (added, or flags changed)."""
        found = await find_messages(session, view, self.program, only=touched)
        matched = {uid for _, uid in found}
        removes = sorted((touched & self.members) - matched)
        adds = sorted(matched - self.members)
        self.members -= set(removes)
        self.members |= matched
        data = b""
        for word, uids in ((b"REMOVEFROM", removes), (b"ADDTO", adds)):
            if uids:
                data += b" " + word + b" (0 " + compress(self.numbers(view, uids)).encode() + b")"
        return data


def register(session: ImapSession, view: SelectedView, update: SearchUpdate) -> None:
    """Keep ``update`` up to date, unless the session holds too many already."""
    if len(view.updates) >= MAX_UPDATES:
        session.send(b"* NO [NOUPDATE " + quoted_or_literal(update.tag) + b"] Too many updates")
        return
    view.updates.append(update)


def check_tag(view: SelectedView, tag: str) -> None:
    if any(update.tag == tag for update in view.updates):
        raise ParseError("Duplicate search update tag")


def removed_by_expunge(session: ImapSession, view: SelectedView, gone: list[int]) -> None:
    """Before the EXPUNGE responses: REMOVEFROM with the numbers the client still knows."""
    gone_set = set(gone)
    for update in view.updates:
        data = update.expunged(view, gone_set)
        if data:
            session.send(update.head() + data)


async def push_updates(session: ImapSession) -> None:
    """ADDTO and REMOVEFROM for the messages added or changed since the last push."""
    view = session.view
    if view is None or not view.updates or not view.touched:
        return
    touched = {uid for uid in view.touched if uid in view.meta}
    view.touched.clear()
    if not touched:
        return
    for update in view.updates:
        data = await update.changed(session, view, touched)
        if data:
            session.send(update.head() + data)


async def cmd_cancelupdate(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    view = session.require_view()
    tags: list[str] = []
    while parser.maybe_sp():
        tags.append(parser.string().decode("utf-8", "replace"))
    parser.end()
    if not tags:
        raise ParseError("CANCELUPDATE needs a tag")
    known = {update.tag for update in view.updates}
    unknown = [tag for tag in tags if tag not in known]
    if unknown:
        raise ParseError(f"Unknown search update tag {unknown[0]}")
    view.updates = [update for update in view.updates if update.tag not in tags]
    session.ok(context, "Cancelupdate completed")

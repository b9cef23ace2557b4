"""Searches kept up to date while the mailbox changes: CONTEXT=SEARCH (RFC 5267 section 4),
``SEARCH RETURN (UPDATE)``, its ADDTO and REMOVEFROM notifications, and CANCELUPDATE."""

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
    """One ``SEARCH RETURN (UPDATE)``: its tag, its program and the UIDs it matches now."""

    tag: str
    uid: bool
    program: Key
    members: set[int] = field(default_factory=set)

    def head(self) -> bytes:
        line = b"* ESEARCH (TAG " + quoted_or_literal(self.tag) + b")"
        return line + b" UID" if self.uid else line


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
        removed = sorted(update.members & gone_set)
        if not removed:
            continue
        update.members -= gone_set
        numbers = removed if update.uid else [view.seq_of(uid) for uid in removed]
        session.send(update.head() + b" REMOVEFROM (0 " + compress(numbers).encode() + b")")


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
        found = await find_messages(session, view, update.program, only=touched)
        matched = {uid for _, uid in found}
        removes = sorted((touched & update.members) - matched)
        adds = sorted(matched - update.members)
        if not removes and not adds:
            continue
        update.members -= set(removes)
        update.members |= matched
        line = update.head()
        for word, uids in ((b"REMOVEFROM", removes), (b"ADDTO", adds)):
            if uids:
                numbers = uids if update.uid else [view.seq_of(uid) for uid in uids]
                line += b" " + word + b" (0 " + compress(numbers).encode() + b")"
        session.send(line)


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

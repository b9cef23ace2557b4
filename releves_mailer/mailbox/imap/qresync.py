"""QRESYNC (RFC 7162 section 3.2) on top of CONDSTORE: ``SELECT … (QRESYNC (uidvalidity
modseq [known-uids [seq-match]]))`` answered with ``VANISHED (EARLIER)`` and the changed
messages' FETCH, and ``UID FETCH … (CHANGEDSINCE n VANISHED)``.

Once a client enabled QRESYNC, expunges reach it as ``* VANISHED`` (see
:meth:`SelectedView.sync`). The store knows every expunged UID's MODSEQ
(:meth:`MailboxSession.vanished`), so the sequence match data a client may send is parsed
and not needed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from releves_mailer.mailbox.imap.connection import CommandError
from releves_mailer.mailbox.imap.parser import ParseError, Parser, SequenceSet
from releves_mailer.mailbox.imap.view import SelectedView

if TYPE_CHECKING:
    from releves_mailer.mailbox.imap.session import ImapSession

__all__ = [
    "QresyncParams",
    "format_ranges",
    "parse_qresync",
    "resync",
    "send_vanished_earlier",
    "vanished_since",
]


@dataclass(frozen=True, slots=True)
class QresyncParams:
    """What the client knew of the mailbox: ``(QRESYNC (uidvalidity modseq [known-uids]))``."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None


def format_ranges(ranges: list[tuple[int, int]]) -> bytes:
    """``[(1, 3), (5, 5)]`` as ``1:3,5``."""
    return b",".join(b"%d" % low if low == high else b"%d:%d" % (low, high) for low, high in ranges)


def parse_qresync(session: ImapSession, parser: Parser) -> QresyncParams:
    """The parameters after ``QRESYNC SP`` in a SELECT or EXAMINE option list."""
    if not session.qresync:
        raise CommandError("BAD", "QRESYNC is not enabled")
    parser.list_start()
    uidvalidity = parser.nz_number()
    parser.sp()
    modseq = parser.number()
    if modseq == 0:
        raise ParseError("MODSEQ must not be 0")
    known: SequenceSet | None = None
    if parser.maybe_sp():
        if parser.peek() != 0x28:
            known = parser.sequence_set()
            parser.maybe_sp()
        if parser.peek() == 0x28:
            # Sequence match data: both sets must have as many numbers; not needed here.
            parser.list_start()
            parser.sequence_set()
            parser.sp()
            parser.sequence_set()
            if not parser.list_end():
                raise ParseError("Expected )")
    if not parser.list_end():
        raise ParseError("Expected )")
    return QresyncParams(uidvalidity, modseq, known)


def vanished_since(
    session: ImapSession, view: SelectedView, params: QresyncParams
) -> asyncio.Future[list[tuple[int, int]]] | None:
    """The UID ranges expunged since the client's MODSEQ, read from now on (SELECT reads
    them while it claims ``\\Recent``); ``None`` when the client's UIDVALIDITY is stale."""
    if params.uidvalidity != view.uidvalidity:
        return None
    largest = max(view.uidnext - 1, 1)
    within = params.known_uids.resolve(largest) if params.known_uids is not None else None
    return asyncio.ensure_future(
        session.mailbox.vanished(
            view.folder_id, params.modseq, within, snapshot=(view.uids, view.uidnext)
        )
    )


async def resync(
    session: ImapSession,
    view: SelectedView,
    params: QresyncParams,
    vanished: asyncio.Future[list[tuple[int, int]]] | None,
) -> None:
    """After SELECT's responses: what vanished (``vanished``, from :func:`vanished_since`)
    and what changed since ``params.modseq``."""
    if vanished is None:
        return
    gone = await vanished
    if gone:
        session.send(b"* VANISHED (EARLIER) " + format_ranges(gone))
    for seq, uid in enumerate(view.uids, 1):
        meta = view.meta[uid]
        if meta.modseq > params.modseq:
            item = view.flags_item(meta, condstore=True, with_uid=True)
            session.send(b"* %d FETCH (%s)" % (seq, item))
        if seq % 1000 == 0:
            await session.maybe_flush()


async def send_vanished_earlier(
    session: ImapSession, view: SelectedView, since: int, sequence: SequenceSet
) -> None:
    """``UID FETCH <set> … (CHANGEDSINCE since VANISHED)``: the UIDs of the set expunged
    since ``since``."""
    largest = max(view.uidnext - 1, 1)
    gone = await session.mailbox.vanished(view.folder_id, since, sequence.resolve(largest))
    if gone:
        session.send(b"* VANISHED (EARLIER) " + format_ranges(gone))

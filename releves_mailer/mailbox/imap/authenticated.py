"""IMAP commands once logged in: mailboxes (SELECT, EXAMINE, CREATE, DELETE, RENAME, STATUS,
SUBSCRIBE), IDLE, NAMESPACE, ENABLE (RFC 3501 section 6.3 and extensions); LIST and LSUB are
in :mod:`.listing`, APPEND in :mod:`.append`."""

from __future__ import annotations

import asyncio
import bisect
import time
from typing import TYPE_CHECKING, Any

from releves_mailer.mailbox.contracts import FolderExists, NoSuchFolder
from releves_mailer.mailbox.imap.append import cmd_append
from releves_mailer.mailbox.imap.connection import CommandContext, CommandError, Disconnect
from releves_mailer.mailbox.imap.listing import cmd_list, cmd_lsub, send_status, status_items
from releves_mailer.mailbox.imap.parser import ParseError, Parser
from releves_mailer.mailbox.imap.qresync import (
    QresyncParams,
    parse_qresync,
    resync,
    vanished_since,
)
from releves_mailer.mailbox.imap.state import State
from releves_mailer.mailbox.imap.view import SelectedView

if TYPE_CHECKING:
    from releves_mailer.mailbox.imap.session import Handler, ImapSession

__all__ = ["AUTHENTICATED"]

DELIMITER = "/"
_SPECIAL_USES = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")


async def cmd_namespace(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    parser.end()
    session.send(b'* NAMESPACE (("" "/")) NIL NIL')
    session.ok(context, "Namespace completed")


async def cmd_enable(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    enabled = []
    while parser.maybe_sp():
        capability = parser.atom().upper()
        if capability == "CONDSTORE" and not session.condstore:
            session.condstore = True
            enabled.append(capability)
        elif capability == "QRESYNC" and not session.qresync:
            # QRESYNC implies CONDSTORE (RFC 7162 section 3.2.3).
            session.qresync = session.condstore = True
            if session.view is not None:
                session.view.vanished = True
            enabled.append(capability)
        elif capability == "UTF8=ACCEPT" and not session.utf8:
            session.utf8 = True
            enabled.append(capability)
    parser.end()
    session.send(("* ENABLED " + " ".join(enabled)).rstrip().encode())
    session.ok(context, "Enabled")


async def cmd_select(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    await _select(session, context, parser, readonly=False)


async def cmd_examine(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    await _select(session, context, parser, readonly=True)


async def _select(
    session: ImapSession, context: CommandContext, parser: Parser, readonly: bool
) -> None:
    parser.sp()
    name = parser.mailbox()
    qresync: QresyncParams | None = None
    if parser.maybe_sp():
        parser.list_start()
        while not parser.list_end():
            parser.maybe_sp()
            option = parser.atom().upper()
            if option == "QRESYNC":
                parser.sp()
                qresync = parse_qresync(session, parser)
            elif option != "CONDSTORE":
                raise ParseError(f"Unknown SELECT option {option}")
            session.condstore = True
    parser.end()
    if session.view is not None:
        session.deselect()
        session.send(b"* OK [CLOSED] Previous mailbox closed")
    session.state = State.AUTHENTICATED
    info = await session.mailbox.get_folder(name)
    if info is None:
        raise CommandError("NO", "[NONEXISTENT] Mailbox does not exist")
    event = session.mailbox.watch(info.id)
    info, metas = await session.mailbox.load_view(info.id)
    uids, meta, keywords, first_unseen = session.server.view_seeds.seed(info.id, metas)
    view = SelectedView(
        folder_id=info.id,
        name=name,
        readonly=readonly,
        uidvalidity=info.uidvalidity,
        uidnext=info.uidnext,
        modseq=info.highestmodseq,
        uids=uids,
        meta=meta,
        recent=set(),
        keywords=keywords,
        event=event,
        vanished=session.qresync,
    )
    # QRESYNC's expunged UIDs are read while \Recent is claimed: two round trips at once.
    vanished = vanished_since(session, view, qresync) if qresync is not None else None
    try:
        if not readonly and info.recent_uid < info.uidnext:
            # (Nothing new since the last claim, as the view was read: no transaction.)
            claimed = await session.mailbox.claim_recent(info.id)
            if claimed is not None:
                low, high = claimed
                start = bisect.bisect_left(view.uids, low)
                view.recent = {u for u in view.uids[start:] if u < high}
        else:
            # EXAMINE shows \Recent without taking it from the next SELECT.
            start = bisect.bisect_left(view.uids, info.recent_uid)
            view.recent = set(view.uids[start:])
    except BaseException:
        if vanished is not None:
            vanished.cancel()
        raise
    session.view = view
    session.state = State.SELECTED
    view.send_flags(session.send)
    session.send(b"* %d EXISTS" % len(view.uids))
    session.send(b"* %d RECENT" % len(view.recent))
    if first_unseen is not None:
        session.send(b"* OK [UNSEEN %d] First unseen" % first_unseen)
    session.send(b"* OK [UIDVALIDITY %d] UIDs valid" % view.uidvalidity)
    session.send(b"* OK [UIDNEXT %d] Predicted next UID" % view.uidnext)
    session.send(b"* OK [HIGHESTMODSEQ %d] Highest" % view.modseq)
    if qresync is not None:
        await resync(session, view, qresync, vanished)
    mode = "READ-ONLY" if readonly else "READ-WRITE"
    session.ok(context, "Select completed", mode)


def _check_name(name: str) -> str:
    if not name or len(name) > 900 or "\x00" in name or "//" in name:
        raise CommandError("NO", "Invalid mailbox name")
    if name.startswith(DELIMITER) or any(ord(c) < 0x20 for c in name):
        raise CommandError("NO", "Invalid mailbox name")
    return name


async def cmd_create(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    parser.sp()
    name = parser.mailbox().rstrip(DELIMITER)
    special = ""
    if parser.maybe_sp():
        parser.list_start()
        parser.expect(b"USE")
        parser.sp()
        uses = _special_use_list(parser)
        if not parser.list_end():
            raise ParseError("Expected )")
        special = " ".join(uses)
    parser.end()
    _check_name(name)
    if name == "INBOX":
        raise CommandError("NO", "[ALREADYEXISTS] INBOX already exists")
    try:
        await session.mailbox.create_folder(name, special)
    except FolderExists:
        raise CommandError("NO", "[ALREADYEXISTS] Mailbox already exists") from None
    session.ok(context, "Create completed")


def _special_use_list(parser: Parser) -> list[str]:
    parser.list_start()
    uses: list[str] = []
    while not parser.list_end():
        parser.maybe_sp()
        parser.expect(b"\\")
        use = "\\" + parser.atom().capitalize()
        if use not in _SPECIAL_USES:
            raise CommandError("NO", "[USEATTR] Unsupported special-use attribute")
        uses.append(use)
    return uses


async def cmd_delete(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    parser.sp()
    name = parser.mailbox()
    parser.end()
    if name == "INBOX":
        raise CommandError("NO", "INBOX cannot be deleted")
    if session.view is not None and session.view.name == name:
        session.deselect()
    try:
        await session.mailbox.delete_folder(name)
    except NoSuchFolder:
        raise CommandError("NO", "[NONEXISTENT] Mailbox does not exist") from None
    session.ok(context, "Delete completed")


async def cmd_rename(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    parser.sp()
    old = parser.mailbox()
    parser.sp()
    new = parser.mailbox().rstrip(DELIMITER)
    parser.end()
    _check_name(new)
    if new == "INBOX":
        raise CommandError("NO", "[ALREADYEXISTS] INBOX already exists")
    try:
        await session.mailbox.rename_folder(old, new)
    except NoSuchFolder:
        raise CommandError("NO", "[NONEXISTENT] Mailbox does not exist") from None
    except FolderExists:
        raise CommandError("NO", "[ALREADYEXISTS] Target mailbox already exists") from None
    if session.view is not None and session.view.name == old and old != "INBOX":
        session.view.name = new
    session.ok(context, "Rename completed")


async def cmd_subscribe(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    await _set_subscribed(session, context, parser, True)


async def cmd_unsubscribe(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    await _set_subscribed(session, context, parser, False)


async def _set_subscribed(
    session: ImapSession, context: CommandContext, parser: Parser, subscribed: bool
) -> None:
    parser.sp()
    name = parser.mailbox()
    parser.end()
    await session.mailbox.set_subscribed(name, subscribed)
    session.ok(context, "Subscribe completed" if subscribed else "Unsubscribe completed")


async def cmd_status(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    parser.sp()
    name = parser.mailbox()
    parser.sp()
    items = status_items(parser)
    parser.end()
    info = await session.mailbox.get_folder(name)
    if info is None:
        raise CommandError("NO", "[NONEXISTENT] Mailbox does not exist")
    await send_status(session, name, info.id, items)
    await session.sync_view(allow_expunge=True)
    session.ok(context, "Status completed")


async def cmd_idle(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    parser.end()
    session.send(b"+ idling")
    await session.sync_view(allow_expunge=True)
    await session.flush()
    deadline = time.monotonic() + session.config.idle_timeout_seconds
    reading = asyncio.ensure_future(session.reader.readuntil(b"\n"))
    try:
        while True:
            waiters: set[asyncio.Future[Any]] = {reading}
            watcher: asyncio.Future[Any] | None = None
            if session.view is not None:
                watcher = asyncio.ensure_future(session.view.event.wait())
                waiters.add(watcher)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                session.send(b"* BYE Autologout; idle for too long")
                raise Disconnect()
            done, _ = await asyncio.wait(
                waiters,
                timeout=min(session.server.poll_interval, remaining),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if watcher is not None and not watcher.done():
                watcher.cancel()
            if reading in done:
                try:
                    line = reading.result()
                except (
                    asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError,
                    ConnectionError,
                    OSError,
                ) as exc:
                    raise Disconnect() from exc
                if line.strip().upper() == b"DONE":
                    break
                raise CommandError("BAD", "Expected DONE")
            await session.sync_view(allow_expunge=True)
            await session.flush()
    finally:
        if not reading.done():
            reading.cancel()
    session.ok(context, "Idle completed")


#: Commands allowed once logged in, a mailbox selected or not.
AUTHENTICATED: dict[str, Handler] = {
    "SELECT": cmd_select,
    "EXAMINE": cmd_examine,
    "CREATE": cmd_create,
    "DELETE": cmd_delete,
    "RENAME": cmd_rename,
    "SUBSCRIBE": cmd_subscribe,
    "UNSUBSCRIBE": cmd_unsubscribe,
    "LIST": cmd_list,
    "LSUB": cmd_lsub,
    "STATUS": cmd_status,
    "APPEND": cmd_append,
    "NAMESPACE": cmd_namespace,
    "ENABLE": cmd_enable,
    "IDLE": cmd_idle,
}

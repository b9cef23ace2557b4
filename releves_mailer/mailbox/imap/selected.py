"""IMAP commands of the selected state: CHECK, CLOSE, UNSELECT, EXPUNGE, STORE, COPY, MOVE
(RFC 3501 section 6.4, RFC 4315, RFC 6851, RFC 7162); FETCH, SEARCH, SORT and THREAD live in
their own modules."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from releves_mailer.mailbox.imap.connection import CommandContext, CommandError
from releves_mailer.mailbox.imap.context import cmd_cancelupdate
from releves_mailer.mailbox.imap.esearch import cmd_search
from releves_mailer.mailbox.imap.fetch import cmd_fetch
from releves_mailer.mailbox.imap.parser import ParseError, Parser
from releves_mailer.mailbox.imap.response import compress
from releves_mailer.mailbox.imap.sort import cmd_sort
from releves_mailer.mailbox.imap.thread import cmd_thread

if TYPE_CHECKING:
    from releves_mailer.mailbox.imap.session import Handler, ImapSession

__all__ = ["SELECTED"]


async def cmd_check(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    parser.end()
    await session.sync_view(allow_expunge=True)
    session.ok(context, "CHECK completed")


async def cmd_close(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    parser.end()
    view = session.require_view()
    if not view.readonly:
        await session.mailbox.expunge(view.folder_id)
    session.deselect()
    session.ok(context, "Close completed")


async def cmd_unselect(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    parser.end()
    session.require_view()
    session.deselect()
    session.ok(context, "Unselect completed")


async def cmd_expunge(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    view = session.require_view()
    uids: list[int] | None = None
    if context.uid:
        parser.sp()
        uids = view.resolve(parser.sequence_set(), uid=True)
    parser.end()
    if view.readonly:
        raise CommandError("NO", "[READ-ONLY] Mailbox is read-only")
    await session.mailbox.expunge(view.folder_id, uids)
    await session.sync_view(allow_expunge=True)
    session.ok(context, "Expunge completed")


async def cmd_store(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    view = session.require_view()
    parser.sp()
    sequence = parser.sequence_set()
    parser.sp()
    unchanged_since: int | None = None
    if parser.peek() == 0x28:
        parser.list_start()
        parser.expect(b"UNCHANGEDSINCE ")
        unchanged_since = parser.number()
        if not parser.list_end():
            raise ParseError("Expected )")
        parser.sp()
        session.enable_condstore()
    item = parser.atom().upper()
    mode: Literal["set", "add", "remove"]
    base = item.removesuffix(".SILENT")
    silent = item.endswith(".SILENT")
    if base == "FLAGS":
        mode = "set"
    elif base == "+FLAGS":
        mode = "add"
    elif base == "-FLAGS":
        mode = "remove"
    else:
        raise ParseError(f"Invalid STORE item {item}")
    parser.sp()
    flags = parser.flags_maybe_list()
    parser.end()
    if "\\*" in flags:
        raise ParseError("\\* is not a flag")
    await session.sync_view(allow_expunge=False)
    uids = view.resolve(sequence, context.uid)
    if view.readonly:
        raise CommandError("NO", "[READ-ONLY] Mailbox is read-only")
    updated, failed = await session.mailbox.store_flags(
        view.folder_id, uids, mode, flags, unchanged_since
    )
    changed = set()
    for meta in updated:
        view.set_meta(meta)
        changed.add(meta.uid)
    if updated and updated[0].modseq == view.modseq + 1:
        # Nothing happened between the view's MODSEQ and this change (each change takes the
        # next one): the view is current, the next command need not read the changes back.
        view.modseq = updated[0].modseq
    new_keywords = {f for m in updated for f in m.flags if not f.startswith("\\")}
    if new_keywords - view.keywords:
        view.keywords |= new_keywords
        view.send_flags(session.send)
    failed_set = set(failed)
    for uid in uids:
        if uid in failed_set or uid not in view.meta:
            continue
        if silent and not (session.condstore and uid in changed):
            continue
        meta = view.meta[uid]
        if silent:
            body = b"MODSEQ (%d)" % meta.modseq
            if context.uid or session.qresync:
                body = b"UID %d " % uid + body
        else:
            body = view.flags_item(
                meta, condstore=session.condstore, with_uid=context.uid or session.qresync
            )
        session.send(b"* %d FETCH (%s)" % (view.seq_of(uid), body))
    if failed:
        numbers = failed if context.uid else [view.seq_of(uid) for uid in failed]
        session.ok(context, "Conditional store failed", "MODIFIED " + compress(numbers))
    else:
        session.ok(context, "Store completed")


async def cmd_copy(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    await _copy(session, context, parser, move=False)


async def cmd_move(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    await _copy(session, context, parser, move=True)


async def _copy(
    session: ImapSession, context: CommandContext, parser: Parser, *, move: bool
) -> None:
    view = session.require_view()
    parser.sp()
    sequence = parser.sequence_set()
    parser.sp()
    name = parser.mailbox()
    parser.end()
    await session.sync_view(allow_expunge=move)
    uids = view.resolve(sequence, context.uid)
    target = await session.mailbox.get_folder(name)
    if target is None:
        raise CommandError("NO", "[TRYCREATE] Mailbox does not exist")
    if move and view.readonly:
        raise CommandError("NO", "[READ-ONLY] Mailbox is read-only")
    uidvalidity, mapping = await session.mailbox.copy(view.folder_id, uids, target.id, move=move)
    code = ""
    if mapping:
        code = (
            f"COPYUID {uidvalidity} {compress([a for a, _ in mapping])} "
            f"{compress([b for _, b in mapping])}"
        )
    if move:
        if code:
            session.send(f"* OK [{code}] Moved".encode())
        await session.sync_view(allow_expunge=True)
        session.ok(context, "Move completed")
    else:
        await session.sync_view(allow_expunge=False)
        session.ok(context, "Copy completed", code)


#: Commands allowed with a mailbox selected.
SELECTED: dict[str, Handler] = {
    "CHECK": cmd_check,
    "CLOSE": cmd_close,
    "UNSELECT": cmd_unselect,
    "EXPUNGE": cmd_expunge,
    "SEARCH": cmd_search,
    "SORT": cmd_sort,
    "THREAD": cmd_thread,
    "CANCELUPDATE": cmd_cancelupdate,
    "FETCH": cmd_fetch,
    "STORE": cmd_store,
    "COPY": cmd_copy,
    "MOVE": cmd_move,
}

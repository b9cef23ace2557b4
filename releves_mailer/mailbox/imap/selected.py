"""IMAP commands of the selected state but FETCH: CHECK, CLOSE, UNSELECT, EXPUNGE, SEARCH,
STORE, COPY, MOVE (RFC 3501 section 6.4, RFC 4315, RFC 6851, RFC 7162)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from releves_mailer.mailbox.contracts import MessageRecord
from releves_mailer.mailbox.imap.connection import CommandContext, CommandError
from releves_mailer.mailbox.imap.fetch import cmd_fetch
from releves_mailer.mailbox.imap.parser import ParseError, Parser
from releves_mailer.mailbox.imap.response import compress
from releves_mailer.mailbox.imap.search import (
    MessageContext,
    columns_needed,
    matches,
    parse_search_keys,
    uses_modseq,
)

if TYPE_CHECKING:
    from releves_mailer.mailbox.imap.session import Handler, ImapSession

__all__ = ["SELECTED"]

_SEARCH_BATCH = 10_000


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


async def cmd_search(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    view = session.require_view()
    parser.sp()
    if parser.accept(b"RETURN "):
        parser.list_start()
        while not parser.list_end():
            parser.maybe_sp()
            parser.atom()
        parser.sp()
    if parser.accept(b"CHARSET "):
        charset = parser.astring().decode("ascii", "replace").upper()
        if charset not in ("UTF-8", "US-ASCII", "UTF8"):
            raise CommandError("NO", "[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset")
        parser.sp()
    program = parse_search_keys(parser)
    await session.sync_view(allow_expunge=False)
    columns = columns_needed(program)
    count = len(view.uids)
    largest_uid = view.uids[-1] if view.uids else 0
    found: list[tuple[int, int]] = []
    for start in range(0, count, _SEARCH_BATCH):
        uids = view.uids[start : start + _SEARCH_BATCH]
        records: dict[int, MessageRecord] = {}
        if columns:
            for record in await session.mailbox.fetch_records(view.folder_id, uids, columns):
                records[record.uid] = record
        blobs: dict[int, bytes] = {}
        if "blob" in columns:
            blob_list = await session.mailbox.read_blobs(
                [records[u].blob for u in uids if u in records]
            )
            blobs = dict(zip([u for u in uids if u in records], blob_list, strict=True))
        # One context reused for every message: SEARCH over a big box is a hot loop.
        ctx = MessageContext(0, 0, (), 0, False, MessageRecord(0), count, largest_uid, bytes)
        empty = MessageRecord(0)
        recent = view.recent
        for offset, uid in enumerate(uids):
            meta = view.meta[uid]
            ctx.seq = start + offset + 1
            ctx.uid = uid
            ctx.flags = meta.flags
            ctx.modseq = meta.modseq
            ctx.recent = uid in recent
            ctx.record = records.get(uid) or empty
            if blobs:
                ctx.raw = _getter(blobs, uid)
                ctx._text = None
            if matches(program, ctx):
                found.append((ctx.seq, uid))
    numbers = [uid if context.uid else seq for seq, uid in found]
    line = b"* SEARCH" + b"".join(b" %d" % n for n in numbers)
    if uses_modseq(program) and found:
        session.condstore = True
        line += b" (MODSEQ %d)" % max(view.meta[uid].modseq for _, uid in found)
    session.send(line)
    session.ok(context, "Search completed")


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
        session.condstore = True
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
        view.meta[meta.uid] = meta
        changed.add(meta.uid)
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


def _getter(blobs: dict[int, bytes], uid: int) -> Callable[[], bytes]:
    return lambda: blobs.get(uid, b"")


#: Commands allowed with a mailbox selected.
SELECTED: dict[str, Handler] = {
    "CHECK": cmd_check,
    "CLOSE": cmd_close,
    "UNSELECT": cmd_unselect,
    "EXPUNGE": cmd_expunge,
    "SEARCH": cmd_search,
    "FETCH": cmd_fetch,
    "STORE": cmd_store,
    "COPY": cmd_copy,
    "MOVE": cmd_move,
}

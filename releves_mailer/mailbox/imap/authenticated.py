"""IMAP commands once logged in: mailboxes (SELECT, EXAMINE, CREATE, DELETE, RENAME, LIST,
LSUB, STATUS, SUBSCRIBE), APPEND, IDLE, NAMESPACE, ENABLE (RFC 3501 section 6.3 and extensions)."""

from __future__ import annotations

import asyncio
import bisect
import time
from typing import TYPE_CHECKING, Any

from releves_mailer.mailbox.contracts import FolderExists, NoSuchFolder
from releves_mailer.mailbox.imap.append import cmd_append
from releves_mailer.mailbox.imap.connection import CommandContext, CommandError, Disconnect
from releves_mailer.mailbox.imap.parser import ParseError, Parser
from releves_mailer.mailbox.imap.response import astring
from releves_mailer.mailbox.imap.state import State
from releves_mailer.mailbox.imap.view import SelectedView
from releves_mailer.mailbox.imap.wildcard import ListPattern

if TYPE_CHECKING:
    from releves_mailer.mailbox.imap.session import Handler, ImapSession

__all__ = ["AUTHENTICATED"]

DELIMITER = "/"
#: Longest run of CPU work a command does before it lets the event loop serve others.
_SLICE_SECONDS = 0.02
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
    if parser.maybe_sp():
        parser.list_start()
        while not parser.list_end():
            parser.maybe_sp()
            option = parser.atom().upper()
            if option != "CONDSTORE":
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
    view = SelectedView(
        folder_id=info.id,
        name=name,
        readonly=readonly,
        uidvalidity=info.uidvalidity,
        uidnext=info.uidnext,
        modseq=info.highestmodseq,
        uids=[m.uid for m in metas],
        meta={m.uid: m for m in metas},
        recent=set(),
        keywords={f for m in metas for f in m.flags if not f.startswith("\\")},
        event=event,
    )
    if not readonly:
        claimed = await session.mailbox.claim_recent(info.id)
        if claimed is not None:
            low, high = claimed
            start = bisect.bisect_left(view.uids, low)
            view.recent = {u for u in view.uids[start:] if u < high}
    else:
        # EXAMINE shows \Recent without taking it from the next SELECT.
        start = bisect.bisect_left(view.uids, info.recent_uid)
        view.recent = set(view.uids[start:])
    session.view = view
    session.state = State.SELECTED
    view.send_flags(session.send)
    session.send(b"* %d EXISTS" % len(view.uids))
    session.send(b"* %d RECENT" % len(view.recent))
    first_unseen = next(
        (i for i, u in enumerate(view.uids, 1) if "\\Seen" not in view.meta[u].flags), None
    )
    if first_unseen is not None:
        session.send(b"* OK [UNSEEN %d] First unseen" % first_unseen)
    session.send(b"* OK [UIDVALIDITY %d] UIDs valid" % view.uidvalidity)
    session.send(b"* OK [UIDNEXT %d] Predicted next UID" % view.uidnext)
    session.send(b"* OK [HIGHESTMODSEQ %d] Highest" % view.modseq)
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


async def cmd_list(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    parser.sp()
    selection: set[str] = set()
    if parser.peek() == 0x28:
        parser.list_start()
        while not parser.list_end():
            parser.maybe_sp()
            selection.add(parser.atom().upper())
        parser.sp()
    reference = parser.mailbox() if parser.peek() != 0x22 else parser.string().decode()
    parser.sp()
    patterns: list[str] = []
    if parser.peek() == 0x28:
        parser.list_start()
        while not parser.list_end():
            parser.maybe_sp()
            patterns.append(parser.list_mailbox())
    else:
        patterns.append(parser.list_mailbox())
    returns: set[str] = set()
    status_items: list[str] = []
    if parser.maybe_sp():
        parser.expect(b"RETURN")
        parser.sp()
        parser.list_start()
        while not parser.list_end():
            parser.maybe_sp()
            option = parser.atom().upper()
            returns.add(option)
            if option == "STATUS":
                parser.sp()
                status_items = _status_items(parser)
    parser.end()
    if patterns == [""]:
        session.send(b'* LIST (\\Noselect) "/" ""')
        session.ok(context, "List completed")
        return
    await _list(
        session,
        "LIST",
        reference,
        patterns,
        selection,
        returns,
        status_items,
        subscribed_only=False,
    )
    session.ok(context, "List completed")


async def cmd_lsub(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    parser.sp()
    reference = parser.mailbox() if parser.peek() != 0x22 else parser.string().decode()
    parser.sp()
    pattern = parser.list_mailbox()
    parser.end()
    if pattern == "":
        session.send(b'* LSUB (\\Noselect) "/" ""')
    else:
        await _list(session, "LSUB", reference, [pattern], set(), set(), [], subscribed_only=True)
    session.ok(context, "Lsub completed")


async def _list(
    session: ImapSession,
    verb: str,
    reference: str,
    patterns: list[str],
    selection: set[str],
    returns: set[str],
    status_items: list[str],
    *,
    subscribed_only: bool,
) -> None:
    folders = {f.name: f for f in await session.mailbox.list_folders()}
    subscribed = set(await session.mailbox.subscriptions())
    matchers = [ListPattern(reference + p, DELIMITER) for p in dict.fromkeys(patterns)]
    names = set(subscribed) if subscribed_only or "SUBSCRIBED" in selection else set(folders)
    # Parents without a folder of their own show as \Noselect (or \NonExistent).
    implied = {parent for name in names for parent in _parents(name)} - names
    parents = {parent for name in set(folders) | implied for parent in _parents(name)}
    slice_start = time.monotonic()
    for name in sorted(names | implied, key=lambda n: (n != "INBOX", n)):
        if time.monotonic() - slice_start > _SLICE_SECONDS:
            # Many folders or long patterns: let other clients in between slices.
            await session.maybe_flush()
            await asyncio.sleep(0)
            slice_start = time.monotonic()
        if not any(matcher.matches(name) for matcher in matchers):
            continue
        if (
            name in implied
            and not any("%" in p for p in patterns)
            and name not in folders
            and not subscribed_only
        ):
            continue
        attributes: list[str] = []
        info = folders.get(name)
        if subscribed_only:
            if name not in subscribed:
                attributes.append("\\Noselect")
        else:
            if info is None:
                attributes.append(
                    "\\Noselect" if "SUBSCRIBED" not in selection else "\\NonExistent"
                )
            attributes.append("\\HasChildren" if name in parents else "\\HasNoChildren")
            if info is not None and info.special_use:
                attributes += info.special_use.split()
            if ("SUBSCRIBED" in selection or "SUBSCRIBED" in returns) and name in subscribed:
                attributes.append("\\Subscribed")
        if "SPECIAL-USE" in selection and not (info and info.special_use):
            continue
        session.send(f'* {verb} ({" ".join(attributes)}) "/" '.encode() + astring(name))
        if status_items and info is not None:
            await _send_status(session, name, info.id, status_items)


def _status_items(parser: Parser) -> list[str]:
    parser.list_start()
    items: list[str] = []
    while not parser.list_end():
        parser.maybe_sp()
        item = parser.atom().upper()
        if item not in (
            "MESSAGES",
            "RECENT",
            "UIDNEXT",
            "UIDVALIDITY",
            "UNSEEN",
            "HIGHESTMODSEQ",
        ):
            raise ParseError(f"Unknown status item {item}")
        items.append(item)
    if not items:
        raise ParseError("Empty status item list")
    return items


async def cmd_status(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    parser.sp()
    name = parser.mailbox()
    parser.sp()
    items = _status_items(parser)
    parser.end()
    info = await session.mailbox.get_folder(name)
    if info is None:
        raise CommandError("NO", "[NONEXISTENT] Mailbox does not exist")
    await _send_status(session, name, info.id, items)
    await session.sync_view(allow_expunge=True)
    session.ok(context, "Status completed")


async def _send_status(session: ImapSession, name: str, folder_id: int, items: list[str]) -> None:
    info = await session.mailbox.get_folder(name)
    if info is None:
        return
    messages, unseen, recent = await session.mailbox.folder_counts(folder_id)
    values = {
        "MESSAGES": messages,
        "RECENT": recent,
        "UIDNEXT": info.uidnext,
        "UIDVALIDITY": info.uidvalidity,
        "UNSEEN": unseen,
        "HIGHESTMODSEQ": info.highestmodseq,
    }
    if session.view is not None and session.view.folder_id == folder_id:
        values["RECENT"] = len(session.view.recent) + recent
    text = " ".join(f"{item} {values[item]}" for item in items)
    session.send(b"* STATUS " + astring(name) + f" ({text})".encode())


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


def _parents(name: str) -> list[str]:
    """``a``, ``a/b`` for ``a/b/c``: every ancestor in the hierarchy."""
    out = []
    index = name.find(DELIMITER)
    while index > 0:
        out.append(name[:index])
        index = name.find(DELIMITER, index + 1)
    return out


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

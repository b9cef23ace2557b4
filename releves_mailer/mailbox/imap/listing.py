"""IMAP LIST and LSUB (RFC 3501 6.3.8-9) with LIST-EXTENDED (RFC 5258), LIST-STATUS
(RFC 5819) and SPECIAL-USE (RFC 6154), and the STATUS data they share with STATUS.

Selection options: SUBSCRIBED, REMOTE (no remote mailboxes here: ignored), SPECIAL-USE and
RECURSIVEMATCH; return options: CHILDREN, SUBSCRIBED, SPECIAL-USE and STATUS. Names are
matched by :class:`~releves_mailer.mailbox.imap.wildcard.ListPattern` (linear time) and a
long listing lets other clients in every 20 ms.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from releves_mailer.mailbox.contracts import FolderInfo
from releves_mailer.mailbox.imap import utf7
from releves_mailer.mailbox.imap.connection import CommandContext
from releves_mailer.mailbox.imap.parser import ParseError, Parser
from releves_mailer.mailbox.imap.response import astring
from releves_mailer.mailbox.imap.wildcard import ListPattern

if TYPE_CHECKING:
    from releves_mailer.mailbox.imap.session import ImapSession

__all__ = ["cmd_list", "cmd_lsub", "parents", "send_status", "status_items", "wire_name"]

DELIMITER = "/"
#: Longest run of CPU work a listing does before it lets the event loop serve others.
_SLICE_SECONDS = 0.02
_SELECTION_OPTIONS = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
_RETURN_OPTIONS = frozenset({"CHILDREN", "SUBSCRIBED", "SPECIAL-USE", "STATUS"})
#: Selection options that select mailboxes (and name CHILDINFO), in RFC 5258's order.
_CRITERIA = ("SUBSCRIBED", "SPECIAL-USE")
_STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ")


def wire_name(session: ImapSession, name: str) -> bytes:
    """A stored name as this client reads it: in UTF-8 once it enabled UTF8=ACCEPT."""
    return astring(utf7.decode(name) if session.utf8 else name)


def parents(name: str) -> list[str]:
    """``a``, ``a/b`` for ``a/b/c``: every ancestor in the hierarchy."""
    out = []
    index = name.find(DELIMITER)
    while index > 0:
        out.append(name[:index])
        index = name.find(DELIMITER, index + 1)
    return out


def _options(parser: Parser, known: frozenset[str], kind: str) -> list[str]:
    parser.list_start()
    options: list[str] = []
    while not parser.list_end():
        parser.maybe_sp()
        option = parser.atom().upper()
        if option not in known:
            raise ParseError(f"Unknown LIST {kind} option {option}")
        options.append(option)
    return options


async def cmd_list(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    parser.sp()
    selection: set[str] = set()
    if parser.peek() == 0x28:
        selection = set(_options(parser, _SELECTION_OPTIONS, "selection"))
        if "RECURSIVEMATCH" in selection and not selection & set(_CRITERIA):
            raise ParseError("RECURSIVEMATCH needs another selection option")
        parser.sp()
    reference = _reference(session, parser)
    parser.sp()
    patterns: list[str] = []
    if parser.peek() == 0x28:
        parser.list_start()
        while not parser.list_end():
            parser.maybe_sp()
            patterns.append(parser.list_mailbox())
        if not patterns:
            raise ParseError("Empty pattern list")
    else:
        patterns.append(parser.list_mailbox())
    returns: set[str] = set()
    items: list[str] = []
    if parser.maybe_sp():
        parser.expect(b"RETURN")
        parser.sp()
        parser.list_start()
        while not parser.list_end():
            parser.maybe_sp()
            option = parser.atom().upper()
            if option not in _RETURN_OPTIONS:
                raise ParseError(f"Unknown LIST return option {option}")
            returns.add(option)
            if option == "STATUS":
                parser.sp()
                items = status_items(parser)
    parser.end()
    if patterns == [""] and not selection:
        session.send(b'* LIST (\\Noselect) "/" ""')
        session.ok(context, "List completed")
        return
    listing = _Listing(session, reference, patterns, selection, returns)
    await listing.run(items)
    session.ok(context, "List completed")


async def cmd_lsub(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    parser.sp()
    reference = _reference(session, parser)
    parser.sp()
    pattern = parser.list_mailbox()
    parser.end()
    if pattern == "":
        session.send(b'* LSUB (\\Noselect) "/" ""')
    else:
        await _lsub(session, reference, pattern)
    session.ok(context, "Lsub completed")


def _reference(session: ImapSession, parser: Parser) -> str:
    if parser.peek() == 0x22:
        return parser.string().decode("utf-8", "replace")
    reference = parser.mailbox()
    # Patterns of a UTF8=ACCEPT client are matched against the names it reads, in UTF-8.
    return utf7.decode(reference) if session.utf8 else reference


async def _matching(
    session: ImapSession, names: Iterable[str], matchers: list[ListPattern]
) -> set[str]:
    """The names some pattern matches, computed in slices between which others are served."""
    out: set[str] = set()
    slice_start = time.monotonic()
    for name in names:
        if time.monotonic() - slice_start > _SLICE_SECONDS:
            # Many folders or long patterns: let other clients in between slices.
            await session.maybe_flush()
            await asyncio.sleep(0)
            slice_start = time.monotonic()
        shown = utf7.decode(name) if session.utf8 else name
        if any(matcher.matches(shown) for matcher in matchers):
            out.add(name)
    return out


def _order(names: Iterable[str]) -> list[str]:
    return sorted(names, key=lambda n: (n != "INBOX", n))


async def _lsub(session: ImapSession, reference: str, pattern: str) -> None:
    subscribed = set(await session.mailbox.subscriptions())
    matcher = ListPattern(reference + pattern, DELIMITER)
    # RFC 3501 6.3.9: with "%", a level above subscribed names shows as \Noselect.
    implied = set()
    if "%" in pattern:
        implied = {parent for name in subscribed for parent in parents(name)} - subscribed
    for name in _order(await _matching(session, subscribed | implied, [matcher])):
        attributes = "" if name in subscribed else "\\Noselect"
        session.send(f'* LSUB ({attributes}) "/" '.encode() + wire_name(session, name))


class _Listing:
    """One LIST command: which names it shows and with which attributes."""

    def __init__(
        self,
        session: ImapSession,
        reference: str,
        patterns: list[str],
        selection: set[str],
        returns: set[str],
    ) -> None:
        self.session = session
        self.matchers = [ListPattern(reference + p, DELIMITER) for p in dict.fromkeys(patterns)]
        self.wildcard_level = any("%" in p for p in patterns)
        self.selection = selection
        self.criteria = [c for c in _CRITERIA if c in selection]
        self.recursive = "RECURSIVEMATCH" in selection
        self.show_subscribed = "SUBSCRIBED" in selection or "SUBSCRIBED" in returns
        self.folders: dict[str, FolderInfo] = {}
        self.subscribed: set[str] = set()

    def satisfies(self, name: str) -> bool:
        """Whether ``name`` meets the selection criteria (exists, when there are none)."""
        info = self.folders.get(name)
        if "SUBSCRIBED" in self.selection:
            if name not in self.subscribed:
                return False
        elif info is None:
            return False
        return "SPECIAL-USE" not in self.selection or bool(info and info.special_use)

    async def run(self, items: list[str]) -> None:
        session = self.session
        self.folders = {f.name: f for f in await session.mailbox.list_folders()}
        if self.show_subscribed:
            self.subscribed = set(await session.mailbox.subscriptions())
        pool = set(self.folders) | (self.subscribed if "SUBSCRIBED" in self.selection else set())
        chosen = {name for name in pool if self.satisfies(name)}
        ancestors = {parent for name in chosen for parent in parents(name)}
        candidates = set(chosen)
        if self.recursive or (not self.criteria and self.wildcard_level):
            # RECURSIVEMATCH: a name above a selected one; plain "%": a hierarchy level
            # without a folder of its own (RFC 3501 6.3.8).
            candidates |= ancestors
        matched = await _matching(session, _order(candidates), self.matchers)
        child_info: set[str] = set()
        if self.recursive:
            for name in chosen - matched:
                child_info.update(parents(name))
        has_children = {parent for name in set(self.folders) | chosen for parent in parents(name)}
        for name in _order(matched):
            if name not in chosen and name not in child_info and self.recursive:
                continue
            attributes: list[str] = []
            info = self.folders.get(name)
            if info is None:
                attributes.append("\\NonExistent" if self.criteria else "\\Noselect")
            attributes.append("\\HasChildren" if name in has_children else "\\HasNoChildren")
            if info is not None and info.special_use:
                attributes += info.special_use.split()
            if self.show_subscribed and name in self.subscribed:
                attributes.append("\\Subscribed")
            line = f'* LIST ({" ".join(attributes)}) "/" '.encode() + wire_name(session, name)
            if name in child_info:
                line += b' ("CHILDINFO" (%s))' % " ".join(f'"{c}"' for c in self.criteria).encode()
            session.send(line)
            if items and info is not None:
                await send_status(session, name, info.id, items)


def status_items(parser: Parser) -> list[str]:
    """``(MESSAGES UNSEEN ...)``: the items of a STATUS or of LIST's RETURN (STATUS ...)."""
    parser.list_start()
    items: list[str] = []
    while not parser.list_end():
        parser.maybe_sp()
        item = parser.atom().upper()
        if item not in _STATUS_ITEMS:
            raise ParseError(f"Unknown status item {item}")
        items.append(item)
    if not items:
        raise ParseError("Empty status item list")
    return items


async def send_status(session: ImapSession, name: str, folder_id: int, items: list[str]) -> None:
    """The ``* STATUS`` response of a mailbox (nothing when it went meanwhile)."""
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
    session.send(b"* STATUS " + wire_name(session, name) + f" ({text})".encode())

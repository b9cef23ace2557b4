"""SEARCH and UID SEARCH with ESEARCH results (RFC 4731), the saved result (RFC 5182) and
the RETURN options of RFC 5267 (PARTIAL, UPDATE, CONTEXT); SORT's RETURN shares them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from releves_mailer.mailbox.imap.connection import CommandContext, CommandError
from releves_mailer.mailbox.imap.context import SearchUpdate, check_tag, register
from releves_mailer.mailbox.imap.parser import ParseError, Parser
from releves_mailer.mailbox.imap.response import compress, quoted_or_literal
from releves_mailer.mailbox.imap.search import find_messages, parse_search_keys, uses_modseq

if TYPE_CHECKING:
    from releves_mailer.mailbox.imap.session import ImapSession
    from releves_mailer.mailbox.imap.view import SelectedView

__all__ = [
    "ReturnOptions",
    "check_charset",
    "cmd_search",
    "esearch_line",
    "parse_charset",
    "parse_return",
    "save_result",
]

_RESULT_OPTIONS = ("MIN", "MAX", "ALL", "COUNT", "SAVE", "UPDATE", "CONTEXT", "PARTIAL")
#: Options that change what is kept, not what the ESEARCH response shows.
_SILENT = frozenset({"SAVE", "UPDATE", "CONTEXT"})
_CHARSETS = ("UTF-8", "US-ASCII", "UTF8")


@dataclass(slots=True)
class ReturnOptions:
    """The ``RETURN (...)`` of SEARCH or SORT; ``given`` is false for a plain SEARCH."""

    given: bool = False
    options: set[str] = field(default_factory=set)
    #: ``PARTIAL low:high``: positions in the result, 1-based, low <= high.
    partial: tuple[int, int] | None = None

    @property
    def save(self) -> bool:
        return "SAVE" in self.options

    @property
    def update(self) -> bool:
        return "UPDATE" in self.options

    def answered(self) -> set[str] | None:
        """Options that show in the ESEARCH response (``RETURN ()`` means ALL); ``None``
        when no ESEARCH response is due at all (SAVE alone, RFC 5182 section 2.4)."""
        if not self.options:
            return {"ALL"}
        if self.options - {"CONTEXT"} == {"SAVE"}:
            return None
        return self.options - _SILENT


def parse_return(parser: Parser) -> ReturnOptions:
    """``RETURN (opt ...) `` if present (the trailing space is consumed)."""
    result = ReturnOptions()
    if not parser.accept(b"RETURN "):
        return result
    result.given = True
    parser.list_start()
    first = True
    while not parser.list_end():
        if not first:
            parser.sp()
        first = False
        name = parser.atom().upper()
        if name not in _RESULT_OPTIONS:
            raise ParseError(f"Unknown RETURN option {name}")
        if name in result.options and name in ("UPDATE", "PARTIAL"):
            raise ParseError(f"{name} given twice")
        result.options.add(name)
        if name == "PARTIAL":
            parser.sp()
            low = parser.nz_number()
            parser.expect(b":")
            high = parser.nz_number()
            result.partial = (min(low, high), max(low, high))
    if {"PARTIAL", "ALL"} <= result.options:
        raise ParseError("PARTIAL conflicts with ALL")
    parser.sp()
    return result


def parse_charset(parser: Parser, *, required: bool) -> str:
    """``CHARSET x `` of SEARCH (optional) or the charset of SORT and THREAD (required);
    checked by :func:`check_charset` once the whole command parsed (bad syntax is BAD)."""
    if not required and not parser.accept(b"CHARSET "):
        return "UTF-8"
    charset = parser.astring().decode("ascii", "replace").upper()
    parser.sp()
    return charset


def check_charset(charset: str) -> None:
    if charset not in _CHARSETS:
        raise CommandError("NO", "[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset")


def save_result(view: SelectedView, options: ReturnOptions, ordered_uids: Sequence[int]) -> None:
    """RFC 5182 section 2.4: with MIN or MAX only those are saved, else the whole result."""
    if not ordered_uids:
        view.saved = []
        return
    picked = options.options & {"MIN", "MAX"}
    if picked and not options.options & {"ALL", "COUNT"}:
        chosen = set()
        if "MIN" in picked:
            chosen.add(ordered_uids[0])
        if "MAX" in picked:
            chosen.add(ordered_uids[-1])
        view.saved = sorted(chosen)
    else:
        view.saved = sorted(ordered_uids)


def esearch_line(
    tag: str,
    uid: bool,
    options: set[str],
    numbers: Sequence[int],
    modseq: Callable[[Sequence[int]], int] | None = None,
    partial: tuple[int, int] | None = None,
) -> bytes:
    """``* ESEARCH (TAG "t") [UID] MIN a MAX b COUNT c ALL set [MODSEQ m]``.

    ``numbers`` are in result order (mailbox order for SEARCH, sort order for SORT), so MIN
    and MAX are the first and last; ``modseq`` gives the MODSEQ of some of them."""
    line = b"* ESEARCH (TAG " + quoted_or_literal(tag) + b")"
    if uid:
        line += b" UID"
    if numbers:
        if "MIN" in options:
            line += b" MIN %d" % numbers[0]
        if "MAX" in options:
            line += b" MAX %d" % numbers[-1]
    if "COUNT" in options:
        line += b" COUNT %d" % len(numbers)
    if numbers and "ALL" in options:
        line += b" ALL " + compress(numbers).encode()
    if partial is not None:
        low, high = partial
        chosen = numbers[low - 1 : high]
        shown_set = compress(chosen).encode() if chosen else b"NIL"
        line += b" PARTIAL (%d:%d %s)" % (low, high, shown_set)
    if modseq is not None and numbers and options:
        if options & {"ALL", "COUNT", "PARTIAL"}:
            shown: list[int] = list(numbers)
        else:
            shown = [numbers[0]] if "MIN" in options else []
            shown += [numbers[-1]] if "MAX" in options else []
        line += b" MODSEQ %d" % modseq(shown)
    return line


async def cmd_search(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    view = session.require_view()
    parser.sp()
    options = ReturnOptions()
    try:
        options = parse_return(parser)
        charset = parse_charset(parser, required=False)
        program = parse_search_keys(parser)
        check_charset(charset)
        if options.update:
            check_tag(view, context.tag)
        await session.sync_view(allow_expunge=False)
        found = await find_messages(session, view, program)
    except (ParseError, CommandError):
        if options.save:
            view.saved = []  # RFC 5182 section 2.1: a failed SAVE empties the variable
        raise
    if options.save:
        save_result(view, options, [uid for _, uid in found])
    if options.update:
        members = {uid for _, uid in found}
        register(session, view, SearchUpdate(context.tag, context.uid, program, members))
    numbers = [uid if context.uid else seq for seq, uid in found]
    modseq_of: Callable[[Sequence[int]], int] | None = None
    if uses_modseq(program) and found:
        session.enable_condstore()
        by_number = {uid if context.uid else seq: uid for seq, uid in found}

        def modseq_of(chosen: Sequence[int]) -> int:
            return max(view.meta[by_number[n]].modseq for n in chosen)

    if options.given:
        shown = options.answered()
        if shown is not None:
            session.send(
                esearch_line(context.tag, context.uid, shown, numbers, modseq_of, options.partial)
            )
    else:
        line = b"* SEARCH" + b"".join(b" %d" % n for n in numbers)
        if modseq_of is not None:
            line += b" (MODSEQ %d)" % modseq_of(numbers)
        session.send(line)
    session.ok(context, "Search completed")

"""Parses the IMAP server's FETCH answers for the webmail: nested lists out of aioimaplib lines.

A list page reads 50 ENVELOPE and BODYSTRUCTURE items; a generic character-by-character
lexer costs about 2 ms per message there, so this one cuts each line with one regular
expression, builds the lists in the same pass, and splices the literals that aioimaplib
hands over as separate items.
Strings stay ``bytes``; ``NIL`` is ``None``; numbers are ``int``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = ["FetchItems", "ParseError", "parse_fetch", "parse_internaldate", "parse_line"]

# ``(``, ``)``, a quoted string, a literal's announce ``{n}``, or an atom (``BODY[1.2]``,
# ``\\Seen``, ``NIL``, a number): sections with spaces (``HEADER.FIELDS (A)``) are not asked.
_TOKEN = re.compile(rb'(\()|(\))|"((?:[^"\\]|\\.)*)"|(\{\d+\+?\}$)|([^\s()"{]+)', re.S)
_UNESCAPE = re.compile(rb"\\(.)")

FetchItems = dict[bytes, Any]


class ParseError(ValueError):
    """An answer this parser cannot read."""


def _tree(lines: Sequence[Any]) -> list[Any]:
    """Nested lists of one response made of text segments and literal items, in one pass."""
    top: list[Any] = []
    stack = [top]
    for item in lines:
        if isinstance(item, bytearray):
            stack[-1].append(bytes(item))
            continue
        for match in _TOKEN.finditer(item):
            kind = match.lastindex
            if kind == 1:
                opened: list[Any] = []
                stack[-1].append(opened)
                stack.append(opened)
            elif kind == 2:
                if len(stack) == 1:
                    raise ParseError("unbalanced parenthesis")
                stack.pop()
            elif kind == 3:
                quoted = match.group(3)
                stack[-1].append(_UNESCAPE.sub(rb"\1", quoted) if b"\\" in quoted else quoted)
            elif kind == 5:
                atom = match.group(5)
                if atom == b"NIL":
                    stack[-1].append(None)
                elif atom.isdigit():
                    stack[-1].append(int(atom))
                else:
                    stack[-1].append(_Atom(atom))
            # kind 4: a literal's announce; its bytes come as the next item.
    if len(stack) != 1:
        raise ParseError("unbalanced parenthesis")
    return top


class _Atom(bytes):
    """An unquoted atom (a flag, a keyword): kept apart from strings only by its type."""


def parse_line(lines: Sequence[Any]) -> list[Any]:
    """One response (text segments and literals) as nested lists."""
    return _tree(lines)


def parse_fetch(lines: Sequence[Any]) -> dict[int, FetchItems]:
    """``UID -> {item name: value}`` of aioimaplib's FETCH answer (its last line is the
    tagged status text); the names are upper-case bytes (``b"ENVELOPE"``)."""
    found: dict[int, FetchItems] = {}
    group: list[Any] = []
    depth = 0
    for item in lines[:-1]:
        group.append(item)
        if isinstance(item, bytes):
            depth += _depth(item)
        if depth <= 0 and isinstance(item, bytes) and not item.rstrip().endswith(b"}"):
            _add(found, parse_line(group))
            group, depth = [], 0
    if group:
        _add(found, parse_line(group))
    return found


def _depth(text: bytes) -> int:
    """Open minus closed parentheses outside quoted strings."""
    stripped = re.sub(rb'"(?:[^"\\]|\\.)*"', b"", text)
    return stripped.count(b"(") - stripped.count(b")")


def _add(found: dict[int, FetchItems], parsed: list[Any]) -> None:
    # ``1 FETCH (UID 5 FLAGS (...) ...)``
    if len(parsed) < 3 or not isinstance(parsed[2], list):
        return
    values = parsed[2]
    items = {bytes(values[i]).upper(): values[i + 1] for i in range(0, len(values) - 1, 2)}
    uid = items.get(b"UID")
    if isinstance(uid, int):
        found[uid] = items


def parse_internaldate(value: Any) -> dt.datetime | None:
    if not isinstance(value, bytes):
        return None
    try:
        return dt.datetime.strptime(value.decode("ascii"), "%d-%b-%Y %H:%M:%S %z")
    except ValueError:
        try:
            return parsedate_to_datetime(value.decode("ascii", "replace"))
        except (TypeError, ValueError):
            return None

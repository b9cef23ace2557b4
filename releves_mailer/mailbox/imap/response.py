"""Wire serialisation of IMAP response data: atoms, quoted strings, literals, lists, sets."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

__all__ = [
    "astring",
    "compress",
    "format_internal_date",
    "literal",
    "nstring",
    "paren",
    "quoted_or_literal",
]

_QUOTE_SAFE_MAX = 1024
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]')


def _needs_literal(data: bytes) -> bool:
    # CR, LF and NUL can never be quoted; 8-bit bytes are not allowed in a quoted string
    # either (RFC 3501 section 9, QUOTED-CHAR), and very long values read better as literals.
    if len(data) > _QUOTE_SAFE_MAX:
        return True
    return any(byte > 0x7E or byte < 0x20 for byte in data)


def quoted_or_literal(value: bytes | str) -> bytes:
    """A string as a quoted string when possible, else as a synchronising literal."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    if _needs_literal(data):
        return b"{%d}\r\n%s" % (len(data), data)
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def nstring(value: bytes | str | None) -> bytes:
    return b"NIL" if value is None else quoted_or_literal(value)


def astring(value: bytes | str) -> bytes:
    """An atom when the value is a plain atom, else a string (used for mailbox names)."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    if (
        data
        and data.upper() != b"NIL"
        and all(0x20 < byte < 0x7F and byte not in _ATOM_SPECIALS for byte in data)
    ):
        return data
    return quoted_or_literal(data)


def paren(items: Iterable[bytes]) -> bytes:
    return b"(" + b" ".join(items) + b")"


def format_internal_date(value: dt.datetime) -> bytes:
    """``"dd-Mon-yyyy hh:mm:ss +zzzz"`` (RFC 3501 date-time), shown in UTC."""
    value = value.astimezone(dt.UTC)
    return b'"%2d-%s-%04d %02d:%02d:%02d +0000"' % (
        value.day,
        _MONTHS[value.month - 1].encode(),
        value.year,
        value.hour,
        value.minute,
        value.second,
    )


def literal(data: bytes) -> bytes:
    """``data`` as a synchronising literal, whatever its octets."""
    return b"{%d}\r\n" % len(data) + data


def compress(numbers: Sequence[int]) -> str:
    """``1,2,3,5`` as ``1:3,5`` (order kept, runs merged)."""
    out: list[str] = []
    run_start: int | None = None
    previous: int | None = None
    for number in numbers:
        if previous is not None and number == previous + 1:
            previous = number
            continue
        if run_start is not None:
            out.append(str(run_start) if run_start == previous else f"{run_start}:{previous}")
        run_start = previous = number
    if run_start is not None:
        out.append(str(run_start) if run_start == previous else f"{run_start}:{previous}")
    return ",".join(out)

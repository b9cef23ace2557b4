"""IMAP command tokenizer: the only error it ever raises is :class:`ParseError`.

The connection reader hands over one whole command, literals inline (``{n}\\r\\n`` followed
by the n octets, exactly as they came on the wire); the session reads its arguments with the
methods below, one grammar rule each (RFC 3501 section 9).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from releves_mailer.mailbox.imap import utf7

__all__ = ["FetchAttribute", "ParseError", "Parser", "SequenceSet", "SpooledLiteral"]

_MONTHS = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
# ATOM-CHAR: any CHAR except atom-specials: ( ) { SP CTL % * " \ ]
_ATOM_EXCLUDED = frozenset(b'(){ %*"\\]') | frozenset(range(0x20)) | {0x7F}
_LITERAL = re.compile(rb"\{(\d{1,19})(\+?)\}\r\n")
_DATE_TIME = re.compile(
    rb'"([ \d]\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"'
)
_SECTION = re.compile(r"^((?:[1-9]\d*)(?:\.[1-9]\d*)*)?(?:\.?(.*))?$")


@dataclass(frozen=True, slots=True)
class SpooledLiteral:
    """A literal too large to keep in memory: its octets are in ``file`` (from offset 0),
    not in the command; only a message (APPEND) may be one."""

    file: BinaryIO
    size: int


class ParseError(Exception):
    """The command does not follow the grammar; the session answers ``BAD``."""


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A sequence-set: ranges of numbers where ``None`` stands for ``*``; ``saved`` is the
    ``$`` of RFC 5182 (the result saved by the last ``SEARCH RETURN (SAVE)``), no ranges."""

    ranges: tuple[tuple[int | None, int | None], ...]
    saved: bool = False

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """Ranges as ``(low, high)`` with ``*`` replaced by ``largest`` (may be 0)."""
        out = []
        for first, last in self.ranges:
            a = largest if first is None else first
            b = largest if last is None else last
            out.append((min(a, b), max(a, b)))
        return out

    def iter_sorted(self, largest: int, limit: int | None = None) -> Iterator[int]:
        """Distinct numbers in order, none above ``limit`` when it is given."""
        merged: list[tuple[int, int]] = []
        for low, high in sorted(self.resolve(largest)):
            if limit is not None:
                high = min(high, limit)
            if low > high:
                continue
            if merged and low <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], high))
            else:
                merged.append((low, high))
        for low, high in merged:
            yield from range(low, high + 1)

    def contains(self, number: int, largest: int) -> bool:
        return any(low <= number <= high for low, high in self.resolve(largest))


@dataclass(slots=True)
class FetchAttribute:
    """One FETCH data item; ``name`` is upper case (``BODY`` for BODY[...] too)."""

    name: str
    section: bool = False
    path: list[int] = field(default_factory=list)
    text: str = ""
    fields: list[bytes] = field(default_factory=list)
    partial: tuple[int, int] | None = None
    peek: bool = False
    #: The item name as echoed in the response, e.g. ``BODY[HEADER.FIELDS (FROM)]<0>``.
    label: bytes = b""


class Parser:
    """A cursor over one command.

    ``spooled`` maps the offset just after a literal's ``{n}\\r\\n`` to the literal's file,
    for the literals the connection reader kept out of ``data``.
    """

    def __init__(self, data: bytes, spooled: Mapping[int, SpooledLiteral] | None = None) -> None:
        self.data = data
        self.pos = 0
        self.spooled: Mapping[int, SpooledLiteral] = spooled or {}
        #: UTF8=ACCEPT enabled (RFC 6855): names come in UTF-8 and are stored in modified
        #: UTF-7, like the names other clients send.
        self.utf8_names = False

    # region primitives ###################################################################

    def fail(self, message: str) -> ParseError:
        return ParseError(message)

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def end(self) -> None:
        if not self.at_end():
            raise self.fail("Unexpected data at end of command")

    def peek(self) -> int | None:
        return self.data[self.pos] if self.pos < len(self.data) else None

    def sp(self) -> None:
        if self.peek() != 0x20:
            raise self.fail("Expected a space")
        self.pos += 1

    def maybe_sp(self) -> bool:
        if self.peek() == 0x20:
            self.pos += 1
            return True
        return False

    def expect(self, token: bytes) -> None:
        if self.data[self.pos : self.pos + len(token)].upper() != token.upper():
            raise self.fail(f"Expected {token.decode()}")
        self.pos += len(token)

    def accept(self, token: bytes) -> bool:
        if self.data[self.pos : self.pos + len(token)].upper() == token.upper():
            self.pos += len(token)
            return True
        return False

    def _chars(self, allowed_extra: bytes = b"", stop: bytes = b"") -> bytes:
        start = self.pos
        data = self.data
        while self.pos < len(data):
            byte = data[self.pos]
            if byte in stop:
                break
            if byte in _ATOM_EXCLUDED and byte not in allowed_extra:
                break
            if byte > 0x7E:
                break
            self.pos += 1
        return data[start : self.pos]

    def token(self, stop: bytes = b"") -> bytes:
        """Atom characters up to one of ``stop`` (may be empty): SASL data, fetch macros."""
        return self._chars(stop=stop)

    def atom(self) -> str:
        value = self._chars()
        if not value:
            raise self.fail("Expected an atom")
        return value.decode("ascii")

    def tag(self) -> str:
        value = self._chars(stop=b"+")
        if not value:
            raise self.fail("Missing tag")
        return value.decode("ascii")

    def number(self) -> int:
        start = self.pos
        while self.pos < len(self.data) and 0x30 <= self.data[self.pos] <= 0x39:
            self.pos += 1
        digits = self.data[start : self.pos]
        if not digits or len(digits) > 19:
            raise self.fail("Expected a number")
        return int(digits)

    def nz_number(self) -> int:
        value = self.number()
        if value == 0 or value > 0xFFFFFFFF:
            raise self.fail("Expected a non-zero 32-bit number")
        return value

    def quoted(self) -> bytes:
        if self.peek() != 0x22:
            raise self.fail("Expected a quoted string")
        self.pos += 1
        out = bytearray()
        data = self.data
        while True:
            if self.pos >= len(data):
                raise self.fail("Unterminated quoted string")
            byte = data[self.pos]
            self.pos += 1
            if byte == 0x22:
                return bytes(out)
            if byte == 0x5C:
                if self.pos >= len(data) or data[self.pos] not in b'"\\':
                    raise self.fail("Invalid escape in quoted string")
                byte = data[self.pos]
                self.pos += 1
            elif byte in (0x0D, 0x0A, 0x00):
                raise self.fail("Invalid character in quoted string")
            out.append(byte)

    def literal(self) -> bytes:
        if self.peek() == 0x7E:
            raise self.fail("literal8 not allowed here")
        value = self.message_literal()
        if isinstance(value, SpooledLiteral):
            raise self.fail("Literal too large for this argument")
        return value

    def message_literal(self) -> bytes | SpooledLiteral:
        """A literal, or a literal8 (``~{n}``, RFC 3516), that may have been spooled to a
        file (the message of an APPEND)."""
        start_pos = self.pos + 1 if self.peek() == 0x7E else self.pos
        match = _LITERAL.match(self.data, start_pos)
        if match is None:
            raise self.fail("Expected a literal")
        size = int(match.group(1))
        start = match.end()
        spooled = self.spooled.get(start)
        if spooled is not None:
            self.pos = start
            return spooled
        if start + size > len(self.data):
            raise self.fail("Truncated literal")
        self.pos = start + size
        return self.data[start : self.pos]

    def is_literal(self) -> bool:
        return self.peek() == 0x7B

    def is_message_literal(self) -> bool:
        """A literal or a literal8 follows."""
        return self.peek() == 0x7B or self.data[self.pos : self.pos + 2] == b"~{"

    def string(self) -> bytes:
        if self.peek() == 0x22:
            return self.quoted()
        if self.peek() == 0x7B:
            return self.literal()
        raise self.fail("Expected a string")

    def astring(self) -> bytes:
        if self.peek() in (0x22, 0x7B):
            return self.string()
        value = self._chars(allowed_extra=b"]")
        if not value:
            raise self.fail("Expected an astring")
        return value

    def list_start(self) -> None:
        if self.peek() != 0x28:
            raise self.fail("Expected (")
        self.pos += 1

    def list_end(self) -> bool:
        if self.peek() == 0x29:
            self.pos += 1
            return True
        return False

    # endregion
    # region composite rules ##############################################################

    def mailbox(self) -> str:
        """A mailbox name; ``INBOX`` in any case is INBOX (RFC 3501 section 5.1)."""
        raw = self.astring()
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail("Mailbox name is not valid UTF-8") from exc
        if self.utf8_names:
            name = utf7.encode(name)
        if name.upper() == "INBOX":
            return "INBOX"
        if name.upper().startswith("INBOX/"):
            return "INBOX" + name[5:]
        return name

    def list_mailbox(self) -> str:
        """list-mailbox: like astring, with ``%`` and ``*`` allowed in atoms."""
        if self.peek() in (0x22, 0x7B):
            return self.string().decode("utf-8", "replace")
        value = self._chars(allowed_extra=b"%*]")
        if not value:
            raise self.fail("Expected a mailbox pattern")
        return value.decode("ascii")

    def flag(self) -> str:
        if self.peek() == 0x5C:
            self.pos += 1
            if self.peek() == 0x2A:
                self.pos += 1
                return "\\*"
            name = self.atom()
            flag = "\\" + name.capitalize()
            if flag not in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"):
                if flag == "\\Recent":
                    raise self.fail("\\Recent cannot be set")
                raise self.fail(f"Invalid system flag \\{name}")
            return flag
        return self.atom()

    def flag_list(self) -> list[str]:
        self.list_start()
        flags: list[str] = []
        if self.list_end():
            return flags
        while True:
            flags.append(self.flag())
            if self.list_end():
                return flags
            self.sp()

    def flags_maybe_list(self) -> list[str]:
        """STORE flags: a parenthesised list or bare flags separated by spaces."""
        if self.peek() == 0x28:
            return self.flag_list()
        flags = [self.flag()]
        while self.peek() == 0x20 and self.pos + 1 < len(self.data):
            self.sp()
            flags.append(self.flag())
        return flags

    def sequence_set(self) -> SequenceSet:
        if self.peek() == 0x24:
            self.pos += 1
            return SequenceSet((), saved=True)
        ranges: list[tuple[int | None, int | None]] = []
        while True:
            first = self._seq_number()
            last = first
            if self.peek() == 0x3A:
                self.pos += 1
                last = self._seq_number()
            ranges.append((first, last))
            if self.peek() != 0x2C:
                return SequenceSet(tuple(ranges))
            self.pos += 1

    def _seq_number(self) -> int | None:
        if self.peek() == 0x2A:
            self.pos += 1
            return None
        return self.nz_number()

    def is_sequence_set(self) -> bool:
        byte = self.peek()
        return byte is not None and (0x30 <= byte <= 0x39 or byte in (0x2A, 0x24))

    def date(self) -> dt.date:
        quoted = self.peek() == 0x22
        if quoted:
            self.pos += 1
        match = re.compile(rb"(\d{1,2})-([A-Za-z]{3})-(\d{4})").match(self.data, self.pos)
        if match is None:
            raise self.fail("Expected a date")
        self.pos = match.end()
        if quoted:
            self.expect(b'"')
        month = _MONTHS.get(match.group(2).decode().lower())
        if month is None:
            raise self.fail("Invalid month")
        try:
            return dt.date(int(match.group(3)), month, int(match.group(1)))
        except ValueError as exc:
            raise self.fail("Invalid date") from exc

    def date_time(self) -> dt.datetime:
        match = _DATE_TIME.match(self.data, self.pos)
        if match is None:
            raise self.fail("Expected a date-time")
        self.pos = match.end()
        day, mon, year, hh, mm, ss, sign, zh, zm = match.groups()
        month = _MONTHS.get(mon.decode().lower())
        if month is None:
            raise self.fail("Invalid month")
        try:
            offset = dt.timedelta(hours=int(zh), minutes=int(zm))
            zone = dt.timezone(-offset if sign == b"-" else offset)
            return dt.datetime(
                int(year), month, int(day.strip()), int(hh), int(mm), int(ss), tzinfo=zone
            )
        except ValueError as exc:
            raise self.fail("Invalid date-time") from exc

    def fetch_attribute(self) -> FetchAttribute:
        start = self.pos
        name = self._chars(stop=b"[<").decode("ascii").upper()
        if not name:
            raise self.fail("Expected a fetch attribute")
        simple = {
            "ENVELOPE",
            "FLAGS",
            "INTERNALDATE",
            "RFC822",
            "RFC822.HEADER",
            "RFC822.SIZE",
            "RFC822.TEXT",
            "BODYSTRUCTURE",
            "UID",
            "MODSEQ",
            "BODY",
            "BODY.PEEK",
            "BINARY",
            "BINARY.PEEK",
            "BINARY.SIZE",
        }
        if name not in simple:
            raise self.fail(f"Unknown fetch attribute {name}")
        if self.peek() != 0x5B:
            if name in ("BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE"):
                raise self.fail(f"{name} needs a section")
            return FetchAttribute(name, label=name.encode())
        if name.startswith("BINARY"):
            return self._binary_attribute(start, name)
        if name not in ("BODY", "BODY.PEEK"):
            raise self.fail(f"{name} takes no section")
        self.pos += 1
        item = FetchAttribute("BODY", section=True, peek=name == "BODY.PEEK")
        spec = self._chars(allowed_extra=b"", stop=b" ]").decode("ascii").upper()
        match = _SECTION.match(spec)
        if match is None:
            raise self.fail("Invalid section")
        if match.group(1):
            item.path = [int(n) for n in match.group(1).split(".")]
        text = match.group(2) or ""
        if text not in ("", "HEADER", "TEXT", "MIME", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            raise self.fail("Invalid section text")
        if text == "MIME" and not item.path:
            raise self.fail("MIME needs a part number")
        item.text = text
        if text.startswith("HEADER.FIELDS"):
            self.sp()
            self.list_start()
            while True:
                item.fields.append(self.astring())
                if self.list_end():
                    break
                self.sp()
            if not item.fields:
                raise self.fail("Empty header list")
        self.expect(b"]")
        section_end = self.pos
        if self.peek() == 0x3C:
            self.pos += 1
            offset = self.number()
            self.expect(b".")
            count = self.nz_number()
            self.expect(b">")
            item.partial = (offset, count)
        label = self.data[start:section_end].upper()
        if item.peek:
            label = b"BODY" + label[len(b"BODY.PEEK") :]
        if item.partial is not None:
            label += b"<%d>" % item.partial[0]
        item.label = label
        return item

    def _binary_attribute(self, start: int, name: str) -> FetchAttribute:
        """``BINARY[1.2]<0.10>``, ``BINARY.PEEK[...]``, ``BINARY.SIZE[...]`` (RFC 3516)."""
        self.pos += 1
        path: list[int] = []
        if self.peek() != 0x5D:
            path.append(self.nz_number())
            while self.accept(b"."):
                path.append(self.nz_number())
        self.expect(b"]")
        label = self.data[start : self.pos].upper()
        item = FetchAttribute(
            "BINARY.SIZE" if name == "BINARY.SIZE" else "BINARY",
            path=path,
            peek=name == "BINARY.PEEK",
        )
        if item.peek:
            label = b"BINARY" + label[len(b"BINARY.PEEK") :]
        if self.peek() == 0x3C and item.name == "BINARY":
            self.pos += 1
            offset = self.number()
            self.expect(b".")
            count = self.nz_number()
            self.expect(b">")
            item.partial = (offset, count)
            label += b"<%d>" % offset
        item.label = label
        return item

    # endregion

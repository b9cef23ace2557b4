"""MIME structure of a raw message by byte offsets: ENVELOPE, BODYSTRUCTURE and BODY[section].

The parse keeps offsets into the original bytes instead of re-serialising, so that
``BODY[1.2.MIME]`` and friends return exactly the octets the sender wrote.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from releves_mailer.mailbox.imap.response import nstring, paren, quoted_or_literal

__all__ = [
    "MimePart",
    "body_lines",
    "bodystructure",
    "bodystructures",
    "envelope",
    "header_fields",
    "parse_addresses",
    "parse_message",
    "parse_sent_date",
    "section_bytes",
    "section_span",
    "split_header",
]

_MAX_DEPTH = 50
#: Octets scanned by one C call: a thread analysing a large message gives the event loop's
#: thread the GIL between windows instead of holding it for the whole message.
_WINDOW = 1 << 21
_HEADER_END = re.compile(rb"\r?\n\r?\n")


@dataclass(slots=True)
class MimePart:
    """One entity: its header and body as offsets into ``raw``."""

    raw: bytes
    start: int
    body_start: int
    end: int
    headers: list[tuple[str, bytes]]
    maintype: str
    subtype: str
    params: list[tuple[bytes, bytes]]
    children: list[MimePart] = field(default_factory=list)
    message: MimePart | None = None

    @property
    def header_bytes(self) -> bytes:
        return self.raw[self.start : self.body_start]

    @property
    def body_bytes(self) -> bytes:
        return self.raw[self.body_start : self.end]

    @property
    def body_size(self) -> int:
        return self.end - self.body_start

    @property
    def body_line_count(self) -> int:
        """:func:`body_lines` of the body, counted in place (a large body is not copied)."""
        if self.end <= self.body_start:
            return 0
        ends_with_lf = self.raw[self.end - 1] == 0x0A
        newlines = sum(
            self.raw.count(b"\n", start, min(start + _WINDOW, self.end))
            for start in range(self.body_start, self.end, _WINDOW)
        )
        return newlines + (0 if ends_with_lf else 1)

    def header(self, name: str) -> bytes | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def is_multipart(self) -> bool:
        return self.maintype == "multipart"

    @property
    def is_message(self) -> bool:
        return self.maintype == "message" and self.subtype == "rfc822"


def split_header(raw: bytes, start: int = 0, end: int | None = None) -> int:
    """Offset where the body starts (just after the blank line ending the header)."""
    end = len(raw) if end is None else end
    if raw.startswith(b"\r\n", start) and start + 2 <= end:
        return start + 2
    if raw.startswith(b"\n", start) and start + 1 <= end:
        return start + 1
    for window_start, window_end in _windows(start, end, 3):
        match = _HEADER_END.search(raw, window_start, window_end)
        if match is not None:
            return match.end()
    return end


def _windows(start: int, end: int, overlap: int) -> Iterator[tuple[int, int]]:
    """``[start, end)`` in ``_WINDOW`` pieces, each overlapping the next by ``overlap``
    octets, so that a match up to ``overlap + 1`` long is found whole in one of them."""
    while start < end:
        stop = min(end, start + _WINDOW + overlap)
        yield start, stop
        if stop == end:
            return
        start = stop - overlap


def _find(raw: bytes, needle: bytes, start: int, end: int) -> int:
    """``raw.find(needle, start, end)``, in windows."""
    for window_start, window_end in _windows(start, end, len(needle) - 1):
        index = raw.find(needle, window_start, window_end)
        if index >= 0:
            return index
    return -1


def _parse_headers(block: bytes) -> list[tuple[str, bytes]]:
    headers: list[tuple[str, bytes]] = []
    name: str | None = None
    value = b""
    for line in block.splitlines():
        if line[:1] in (b" ", b"\t") and name is not None:
            value += line
            continue
        if name is not None:
            headers.append((name, value.strip()))
            name = None
        colon = line.find(b":")
        if colon <= 0:
            continue
        name = line[:colon].strip().decode("latin-1").lower()
        value = line[colon + 1 :]
    if name is not None:
        headers.append((name, value.strip()))
    return headers


def _skip_ws(value: bytes, pos: int) -> int:
    while pos < len(value) and value[pos] in b" \t\r\n":
        pos += 1
    return pos


def _parse_params(value: bytes, pos: int) -> list[tuple[bytes, bytes]]:
    params: list[tuple[bytes, bytes]] = []
    length = len(value)
    while pos < length:
        pos = _skip_ws(value, pos)
        if pos < length and value[pos] == ord(";"):
            pos += 1
            continue
        eq = value.find(b"=", pos)
        if eq < 0:
            break
        name = value[pos:eq].strip()
        pos = _skip_ws(value, eq + 1)
        if pos < length and value[pos] == ord('"'):
            pos += 1
            out = bytearray()
            while pos < length and value[pos] != ord('"'):
                if value[pos] == ord("\\") and pos + 1 < length:
                    pos += 1
                out.append(value[pos])
                pos += 1
            pos += 1
            param_value = bytes(out)
        else:
            semi = value.find(b";", pos)
            semi = length if semi < 0 else semi
            param_value = value[pos:semi].strip()
            pos = semi
        if name and re.fullmatch(rb"[!#-'*+.0-9A-Z^-~-]+", name):
            params.append((name, param_value))
    return params


def _content_type(value: bytes | None, default: str) -> tuple[str, str, list[tuple[bytes, bytes]]]:
    if value is None:
        main, sub = default.split("/")
        if main == "text":
            return main, sub, [(b"charset", b"us-ascii")]
        return main, sub, []
    value = re.sub(rb"\([^()]*\)", b"", value)
    semi = value.find(b";")
    kind = (value if semi < 0 else value[:semi]).strip().decode("latin-1").lower()
    main, slash, sub = kind.partition("/")
    if not slash or not main or not sub or " " in kind:
        main, sub = "text", "plain"
        return main, sub, [(b"charset", b"us-ascii")]
    params = [] if semi < 0 else _parse_params(value, semi + 1)
    return main, sub, params


def parse_message(
    raw: bytes, start: int = 0, end: int | None = None, default: str = "text/plain", depth: int = 0
) -> MimePart:
    """Parse the entity ``raw[start:end]`` (header, then body) recursively."""
    end = len(raw) if end is None else end
    body_start = split_header(raw, start, end)
    headers = _parse_headers(raw[start:body_start])
    ctype = next((v for k, v in headers if k == "content-type"), None)
    main, sub, params = _content_type(ctype, default)
    part = MimePart(raw, start, body_start, end, headers, main, sub, params)
    if depth >= _MAX_DEPTH:
        return part
    if main == "multipart":
        boundary = next((v for k, v in params if k.lower() == b"boundary"), None)
        if boundary:
            child_default = "message/rfc822" if sub == "digest" else "text/plain"
            for child_start, child_end in _split_multipart(raw, body_start, end, boundary):
                part.children.append(
                    parse_message(raw, child_start, child_end, child_default, depth + 1)
                )
        else:
            part.maintype, part.subtype, part.params = "text", "plain", [(b"charset", b"us-ascii")]
    elif main == "message" and sub == "rfc822":
        part.message = parse_message(raw, body_start, end, "text/plain", depth + 1)
    return part


def _find_delimiter(
    raw: bytes, dash_boundary: bytes, pos: int, end: int
) -> tuple[int, int, bool] | None:
    """The next delimiter line ``--boundary(--)?[ \t]*\r?`` in ``raw[pos:end]``.

    Returns (line start, end of the match before its LF, closing delimiter?). Same matches
    as the multiline regex ``^--boundary(--)?[ \t]*\r?$`` searched from ``pos`` with
    ``endpos=end``, but a plain substring search instead of trying the anchor at every byte
    (a 70 KB base64 body made the regex the most expensive part of a delivery).
    """
    while True:
        index = _find(raw, dash_boundary, pos, end)
        if index < 0:
            return None
        if index == 0 or raw[index - 1] == 0x0A:
            after = index + len(dash_boundary)
            tries = (after + 2, True), (after, False)
            for stop, closing in tries if raw.startswith(b"--", after, end) else tries[1:]:
                while stop < end and raw[stop] in b" \t":
                    stop += 1
                if stop < end and raw[stop] == 0x0D:
                    stop += 1
                if stop == end or raw[stop] == 0x0A:
                    return index, stop, closing
        pos = index + 1


def _split_multipart(raw: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    dash_boundary = b"--" + boundary
    parts: list[tuple[int, int]] = []
    current: int | None = None
    pos = start
    while True:
        found = _find_delimiter(raw, dash_boundary, pos, end)
        if found is None:
            if current is not None:
                parts.append((current, end))
            return parts
        line_start, line_end, closing = found
        if current is not None:
            part_end = line_start
            # The CRLF before the delimiter belongs to the delimiter (RFC 2046 5.1.1).
            if part_end > current and raw[part_end - 1] == ord("\n"):
                part_end -= 1
                if part_end > current and raw[part_end - 1] == ord("\r"):
                    part_end -= 1
            parts.append((current, part_end))
        if closing:
            return parts
        after = line_end
        if raw.startswith(b"\n", after):
            after += 1
        current = min(after, end)
        pos = current


def body_lines(body: bytes) -> int:
    if not body:
        return 0
    return body.count(b"\n") + (0 if body.endswith(b"\n") else 1)


# region address lists ####################################################################

_SPECIALS = b'()<>@,;:\\".[]'


def _tokens(value: bytes) -> list[tuple[str, bytes]]:
    tokens: list[tuple[str, bytes]] = []
    pos = 0
    length = len(value)
    while pos < length:
        char = value[pos]
        if char in b" \t\r\n":
            pos += 1
        elif char == ord("("):
            depth = 0
            comment_start = pos
            while pos < length:
                if value[pos] == ord("\\"):
                    pos += 2
                    continue
                if value[pos] == ord("("):
                    depth += 1
                elif value[pos] == ord(")"):
                    depth -= 1
                    if depth == 0:
                        pos += 1
                        break
                pos += 1
            tokens.append(("c", value[comment_start + 1 : pos - 1].strip()))
        elif char == ord('"'):
            pos += 1
            out = bytearray()
            while pos < length and value[pos] != ord('"'):
                if value[pos] == ord("\\") and pos + 1 < length:
                    pos += 1
                out.append(value[pos])
                pos += 1
            pos += 1
            tokens.append(("q", bytes(out)))
        elif char in _SPECIALS:
            tokens.append(("s", bytes([char])))
            pos += 1
        else:
            start = pos
            while pos < length and value[pos] not in _SPECIALS and value[pos] not in b" \t\r\n":
                pos += 1
            tokens.append(("a", value[start:pos]))
    return tokens


Address = tuple[bytes | None, bytes | None, bytes | None, bytes | None]


def _addr_spec(tokens: list[tuple[str, bytes]]) -> tuple[bytes | None, bytes | None]:
    local = bytearray()
    domain = bytearray()
    target = local
    seen_at = False
    for kind, text in tokens:
        if kind == "c":
            continue
        if kind == "s" and text == b"@" and not seen_at:
            seen_at = True
            target = domain
            continue
        if kind == "q":
            target += text
        else:
            target += text
    mailbox = bytes(local) if local else None
    host = bytes(domain) if seen_at and domain else None
    return mailbox, host


def _phrase(tokens: list[tuple[str, bytes]]) -> bytes | None:
    words = [text for kind, text in tokens if kind != "c"]
    if not words:
        return None
    out = bytearray()
    for index, word in enumerate(words):
        if index and word != b"." and words[index - 1] != b".":
            out += b" "
        out += word
    return bytes(out)


def parse_addresses(value: bytes) -> list[Address]:
    """Address list as ENVELOPE address structures, group markers included (RFC 3501)."""
    tokens = _tokens(value)
    result: list[Address] = []
    pos = 0
    in_group = False
    while pos < len(tokens):
        collected: list[tuple[str, bytes]] = []
        while pos < len(tokens) and not (
            tokens[pos][0] == "s" and tokens[pos][1] in (b"<", b":", b",", b";")
        ):
            collected.append(tokens[pos])
            pos += 1
        stop = tokens[pos][1] if pos < len(tokens) else b""
        if stop == b"<":
            pos += 1
            inner: list[tuple[str, bytes]] = []
            while pos < len(tokens) and tokens[pos] != ("s", b">"):
                inner.append(tokens[pos])
                pos += 1
            pos += 1
            route: bytes | None = None
            colon = next((i for i, t in enumerate(inner) if t == ("s", b":")), None)
            if colon is not None:
                route = b"".join(t for _, t in inner[:colon])
                inner = inner[colon + 1 :]
            mailbox, host = _addr_spec(inner)
            result.append((_phrase(collected), route, mailbox, host))
            # Skip anything up to the next separator.
            while pos < len(tokens) and tokens[pos] not in (("s", b","), ("s", b";")):
                pos += 1
            continue
        if stop == b":" and not in_group:
            pos += 1
            in_group = True
            result.append((None, None, _phrase(collected) or b"", None))
            continue
        if collected:
            mailbox, host = _addr_spec(collected)
            if mailbox is not None or host is not None:
                # Old style "user@domain (Real Name)": the comment is the display name.
                comments = [text for kind, text in collected if kind == "c" and text]
                name = comments[-1] if comments else None
                result.append((name, None, mailbox, host))
        if stop == b";" and in_group:
            in_group = False
            result.append((None, None, None, None))
        pos += 1
    if in_group:
        result.append((None, None, None, None))
    return result


def _address_list(value: bytes | None) -> bytes:
    if value is None:
        return b"NIL"
    addresses = parse_addresses(value)
    if not addresses:
        return b"NIL"
    return paren(paren(nstring(item) for item in address) for address in addresses)


# endregion


def envelope(part: MimePart) -> bytes:
    """The ENVELOPE of an entity from its header (RFC 3501 section 7.4.2)."""
    date = part.header("date")
    subject = part.header("subject")
    from_ = part.header("from")
    sender = part.header("sender") or from_
    reply_to = part.header("reply-to") or from_
    fields = [
        nstring(_unfold(date)),
        nstring(_unfold(subject)),
        _address_list(from_),
        _address_list(sender),
        _address_list(reply_to),
        _address_list(part.header("to")),
        _address_list(part.header("cc")),
        _address_list(part.header("bcc")),
        nstring(_unfold(part.header("in-reply-to"))),
        nstring(_unfold(part.header("message-id"))),
    ]
    return paren(fields)


def _unfold(value: bytes | None) -> bytes | None:
    if value is None:
        return None
    return value.replace(b"\r\n", b"").replace(b"\n", b"")


def _params(params: list[tuple[bytes, bytes]]) -> bytes:
    if not params:
        return b"NIL"
    return paren(quoted_or_literal(item) for pair in params for item in pair)


def _disposition(part: MimePart) -> bytes:
    value = part.header("content-disposition")
    if value is None:
        return b"NIL"
    semi = value.find(b";")
    kind = (value if semi < 0 else value[:semi]).strip()
    if not kind:
        return b"NIL"
    params = [] if semi < 0 else _parse_params(value, semi + 1)
    return paren([quoted_or_literal(kind), _params(params)])


def _language(part: MimePart) -> bytes:
    value = part.header("content-language")
    if value is None:
        return b"NIL"
    tags = [t.strip() for t in re.split(rb"[,\s]+", value) if t.strip()]
    if not tags:
        return b"NIL"
    if len(tags) == 1:
        return quoted_or_literal(tags[0])
    return paren(quoted_or_literal(t) for t in tags)


def bodystructure(part: MimePart, extended: bool = True) -> bytes:
    """BODYSTRUCTURE (``extended``) or BODY (RFC 3501 section 7.4.2) of an entity."""
    if part.is_multipart and part.children:
        items = b"".join(bodystructure(child, extended) for child in part.children)
        out = [items + b" " + quoted_or_literal(part.subtype)]
        if extended:
            out += [
                _params(part.params),
                _disposition(part),
                _language(part),
                nstring(_unfold(part.header("content-location"))),
            ]
        return paren(out)
    encoding = part.header("content-transfer-encoding")
    fields = [
        quoted_or_literal(part.maintype),
        quoted_or_literal(part.subtype),
        _params(part.params),
        nstring(_unfold(part.header("content-id"))),
        nstring(_unfold(part.header("content-description"))),
        quoted_or_literal(encoding.strip().lower() if encoding else b"7bit"),
        b"%d" % part.body_size,
    ]
    if part.is_message and part.message is not None:
        fields += [envelope(part.message), bodystructure(part.message, extended)]
        fields.append(b"%d" % part.body_line_count)
    elif part.maintype == "text":
        fields.append(b"%d" % part.body_line_count)
    if extended:
        fields += [
            nstring(_unfold(part.header("content-md5"))),
            _disposition(part),
            _language(part),
            nstring(_unfold(part.header("content-location"))),
        ]
    return paren(fields)


def bodystructures(part: MimePart) -> tuple[bytes, bytes]:
    """``(bodystructure(part, True), bodystructure(part, False))`` in one walk of the tree."""
    if part.is_multipart and part.children:
        pairs = [bodystructures(child) for child in part.children]
        subtype = b" " + quoted_or_literal(part.subtype)
        basic = paren([b"".join(pair[1] for pair in pairs) + subtype])
        extended = paren(
            [
                b"".join(pair[0] for pair in pairs) + subtype,
                _params(part.params),
                _disposition(part),
                _language(part),
                nstring(_unfold(part.header("content-location"))),
            ]
        )
        return extended, basic
    encoding = part.header("content-transfer-encoding")
    fields = [
        quoted_or_literal(part.maintype),
        quoted_or_literal(part.subtype),
        _params(part.params),
        nstring(_unfold(part.header("content-id"))),
        nstring(_unfold(part.header("content-description"))),
        quoted_or_literal(encoding.strip().lower() if encoding else b"7bit"),
        b"%d" % part.body_size,
    ]
    extended_fields = fields
    if part.is_message and part.message is not None:
        inner_extended, inner_basic = bodystructures(part.message)
        head = envelope(part.message)
        lines = b"%d" % part.body_line_count
        extended_fields = [*fields, head, inner_extended, lines]
        fields = [*fields, head, inner_basic, lines]
    elif part.maintype == "text":
        fields.append(b"%d" % part.body_line_count)
    basic = paren(fields)
    extended = paren(
        [
            *extended_fields,
            nstring(_unfold(part.header("content-md5"))),
            _disposition(part),
            _language(part),
            nstring(_unfold(part.header("content-location"))),
        ]
    )
    return extended, basic


def header_fields(header: bytes, names: set[bytes], exclude: bool) -> bytes:
    """The header lines whose field name is (or, with ``exclude``, is not) in ``names``.

    ``names`` are lowercase. The result ends with the blank line, like BODY[HEADER].
    """
    out = bytearray()
    keep = False
    for line in header.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t"):
            if keep:
                out += line
            continue
        colon = line.find(b":")
        name = line[:colon].strip().lower() if colon > 0 else b""
        keep = bool(name) and ((name in names) != exclude)
        if keep:
            out += line
    out += b"\r\n"
    return bytes(out)


def parse_sent_date(value: bytes | None) -> dt.datetime | None:
    """The Date header's wall-clock time in the sender's own zone, labelled UTC.

    SENTBEFORE/SENTON/SENTSINCE compare dates "disregarding time and timezone"
    (RFC 3501 6.4.4), so the sender's calendar date is what must be kept.
    """
    if value is None:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value.decode("latin-1"))
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    return parsed.replace(tzinfo=dt.UTC)


def section_bytes(
    root: MimePart,
    path: list[int],
    text: str,
    fields: list[bytes] | None = None,
) -> bytes:
    """The octets of ``BODY[<path>.<text> (<fields>)]`` (RFC 3501 section 6.4.5).

    ``text`` is ``""``, ``HEADER``, ``HEADER.FIELDS``, ``HEADER.FIELDS.NOT``, ``TEXT`` or
    ``MIME``; an unknown part gives empty content, like Dovecot.
    """
    span = section_span(root, path, text, fields)
    if isinstance(span, bytes):
        return span
    return root.raw[span[0] : span[1]]


def section_span(
    root: MimePart,
    path: list[int],
    text: str,
    fields: list[bytes] | None = None,
) -> tuple[int, int] | bytes:
    """Where :func:`section_bytes` lies in ``root.raw``, as ``(start, end)``, so that a large
    section can be sent from the message's file; the selected header fields, which are not
    one run of the message, come as their bytes."""
    cur: MimePart | None = root
    for index, number in enumerate(path):
        assert cur is not None
        entity = cur
        if index > 0 and entity.is_message and entity.message is not None:
            entity = entity.message
        if entity.is_multipart and entity.children:
            if not 1 <= number <= len(entity.children):
                return b""
            cur = entity.children[number - 1]
        elif number == 1:
            cur = entity
        else:
            return b""
    assert cur is not None
    if text == "MIME":
        return (cur.start, cur.body_start) if path else b""
    if text == "":
        return (cur.start, cur.end) if not path else (cur.body_start, cur.end)
    message = cur
    if path:
        if not (cur.is_message and cur.message is not None):
            return b""
        message = cur.message
    if text == "HEADER":
        return message.start, message.body_start
    if text == "TEXT":
        return message.body_start, message.end
    names = {name.lower() for name in fields or []}
    return header_fields(message.header_bytes, names, exclude=text == "HEADER.FIELDS.NOT")

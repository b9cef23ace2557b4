"""FETCH BINARY[section], BINARY.PEEK and BINARY.SIZE (RFC 3516): a body part with its
Content-Transfer-Encoding undone (base64, quoted-printable; 7bit, 8bit and binary as they
are). Another encoding answers ``NO [UNKNOWN-CTE]``.

``BINARY[]`` is the whole message as stored; a multipart or message/rfc822 part is its body
as stored (only leaves have an encoding to undo). A message appended as a literal8 with NULs
is stored with those parts in base64 (:func:`encode_nul_parts`), so that BODY[] stays a
valid literal and BINARY[] gives the octets back.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import TYPE_CHECKING

from releves_mailer.mailbox.imap import mime
from releves_mailer.mailbox.imap.connection import CommandError
from releves_mailer.mailbox.imap.parser import FetchAttribute

if TYPE_CHECKING:
    from releves_mailer.mailbox.contracts import MessageRecord
    from releves_mailer.mailbox.imap.session import ImapSession

__all__ = ["decoded_section", "encode_nul_parts", "fetch_item", "fetch_item_from_file"]

_AS_IS = frozenset({"", "7bit", "8bit", "binary"})


def _part(root: mime.MimePart, path: list[int]) -> mime.MimePart | None:
    # The same walk as mime.section_span: inside a message/rfc822, numbers name the parts
    # of the encapsulated message.
    cur = root
    for index, number in enumerate(path):
        entity = cur
        if index > 0 and entity.is_message and entity.message is not None:
            entity = entity.message
        if entity.is_multipart and entity.children:
            if not 1 <= number <= len(entity.children):
                return None
            cur = entity.children[number - 1]
        elif number == 1:
            cur = entity
        else:
            return None
    return cur


def decoded_section(raw: bytes, path: list[int]) -> bytes:
    """The octets of ``BINARY[path]`` of the message ``raw``; empty for a missing part."""
    if not path:
        return raw
    part = _part(mime.parse_message(raw), path)
    if part is None:
        return b""
    body = part.body_bytes
    if part.is_multipart or part.is_message:
        return body
    encoding = (part.header("content-transfer-encoding") or b"").strip().lower()
    if encoding in (b"base64",):
        try:
            return binascii.a2b_base64(body)
        except binascii.Error:
            raise CommandError("NO", "[UNKNOWN-CTE] Invalid base64 content") from None
    if encoding == b"quoted-printable":
        return _decode_qp(body)
    if encoding.decode("ascii", "replace") in _AS_IS:
        return body
    raise CommandError("NO", "[UNKNOWN-CTE] Unknown Content-Transfer-Encoding")


def _decode_qp(body: bytes) -> bytes:
    # RFC 2045 6.7: trailing blanks of a line are transport padding, "=" at the end of a
    # line (blanks after it too) is a soft line break; binascii knows neither rule fully.
    out = bytearray()
    for line in body.splitlines(keepends=True):
        content = line.rstrip(b"\r\n")
        ending = line[len(content) :]
        content = content.rstrip(b" \t")
        if content.endswith(b"="):
            out += binascii.a2b_qp(content[:-1])
        else:
            out += binascii.a2b_qp(content) + ending
    return bytes(out)


def _leaves(part: mime.MimePart) -> list[mime.MimePart]:
    if part.is_multipart:
        return [leaf for child in part.children for leaf in _leaves(child)]
    if part.is_message and part.message is not None:
        return _leaves(part.message)
    return [part]


def encode_nul_parts(raw: bytes) -> bytes:
    """``raw`` with every body part holding a NUL turned into base64 (RFC 3516 section 4.3):
    a literal8 APPEND may bring NULs, which no literal of BODY[] may carry."""
    if b"\x00" not in raw:
        return raw
    edits: list[tuple[int, int, bytes]] = []
    for leaf in _leaves(mime.parse_message(raw)):
        body = leaf.body_bytes
        header = leaf.header_bytes
        if b"\x00" not in body or not header.endswith(b"\n"):
            continue
        blank = 2 if header.endswith(b"\r\n") else 1
        lines = [
            line
            for line in _unfolded(header[:-blank])
            if not line.lower().startswith(b"content-transfer-encoding:")
        ]
        new_header = b"".join(lines) + b"Content-Transfer-Encoding: base64\r\n\r\n"
        encoded = base64.encodebytes(body).replace(b"\n", b"\r\n")
        edits.append((leaf.start, leaf.end, new_header + encoded))
    out = bytearray()
    position = 0
    for start, end, replacement in sorted(edits):
        out += raw[position:start] + replacement
        position = end
    out += raw[position:]
    return bytes(out)


def _unfolded(header: bytes) -> list[bytes]:
    """The fields of a header block, each with its continuation lines and line ends."""
    fields: list[bytes] = []
    for line in header.splitlines(keepends=True):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def fetch_item(item: FetchAttribute, raw: bytes) -> bytes:
    """The FETCH response item: ``BINARY[...]`` with its data, or ``BINARY.SIZE[...] n``."""
    data = decoded_section(raw, item.path)
    if item.name == "BINARY.SIZE":
        return item.label + b" %d" % len(data)
    if item.partial is not None:
        offset, count = item.partial
        data = data[offset : offset + count]
    # A literal8 only when the data holds a NUL, which a literal may not (RFC 3516).
    prefix = b"~{%d}\r\n" if b"\x00" in data else b"{%d}\r\n"
    return item.label + b" " + prefix % len(data) + data


async def fetch_item_from_file(
    session: ImapSession, record: MessageRecord, item: FetchAttribute
) -> bytes:
    """:func:`fetch_item` of a message left in its file: read and decoded in a thread."""
    raw = await session.mailbox.read_blob(record.blob)
    return await asyncio.to_thread(fetch_item, item, raw)

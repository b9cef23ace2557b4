"""Byte-exact MIME writing for the mails the portal emits: 7-bit, CRLF, fixed boundaries.

The standard library's ``email`` object model costs about 10 ms per statement mail (header
registry parsing and refolding); the portal must sign hundreds of mails per second, and
the bytes it signs must not depend on a generator's choices. The shapes we emit are few
and fixed, so they are written directly here, with the standard library's C encoders
(``binascii`` quoted-printable, ``base64``) and its RFC 2047 header encoder.

Every function returns CRLF-terminated lines; a *part* is its header lines, an empty line
and its body (the body does not end with a line break: the delimiter that follows owns it,
RFC 2046 §5.1.1). Every body is 7-bit, which the S/MIME signature needs to survive transport
(RFC 8551 §3.1.1), and no boundary starting with ``=_`` can occur in base64 or
quoted-printable text.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from email.utils import formataddr
from typing import Final

__all__ = [
    "CRLF",
    "address_header",
    "attachment_part",
    "header",
    "multipart",
    "text_part",
]

CRLF: Final = b"\r\n"
_MAX_LINE: Final = 76
#: Raw bytes per encoded-word: 56 base64 characters, 68 with the ``=?utf-8?b?...?=`` frame,
#: so that "Subject: " and one word fit in 78 columns.
_WORD_BYTES: Final = 42


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n").encode("ascii")


def _encoded_words(value: str) -> list[str]:
    """RFC 2047 ``B`` encoded-words of at most 45 UTF-8 bytes each, never splitting a
    character (an encoded-word must hold whole characters, RFC 2047 §5)."""
    words: list[str] = []
    chunk = b""
    for char in value:
        raw = char.encode("utf-8")
        if len(chunk) + len(raw) > _WORD_BYTES:
            words.append(f"=?utf-8?b?{base64.b64encode(chunk).decode('ascii')}?=")
            chunk = b""
        chunk += raw
    if chunk:
        words.append(f"=?utf-8?b?{base64.b64encode(chunk).decode('ascii')}?=")
    return words


def _fold(name: str, pieces: Sequence[str]) -> bytes:
    """Join ``pieces`` with spaces after ``name:``, breaking before a space when a line
    would pass 78 columns (a piece longer than that stays whole on its own line)."""
    lines: list[str] = []
    line = f"{name}:"
    for piece in pieces:
        if len(line) + 1 + len(piece) > 78 and line != f"{name}:":
            lines.append(line)
            line = ""
        line += " " + piece
    lines.append(line)
    return "\r\n".join(lines).encode("ascii") + CRLF


def header(name: str, value: str) -> bytes:
    """One header field, RFC 2047-encoded when not ASCII and folded under 78 columns.

    Folding happens at white space, so runs of spaces in a long value become one.
    """
    if any(char in value for char in "\r\n"):
        raise ValueError(f"line break in header {name}: {value!r}")
    if value.isascii():
        if len(name) + 2 + len(value) <= 78:
            return f"{name}: {value}".encode("ascii") + CRLF
        return _fold(name, value.split())
    return _fold(name, _encoded_words(value))


def address_header(name: str, display_name: str, address: str) -> bytes:
    """``From: "Portail ASPOne.fr" <portail@domain>`` (quoted or encoded as needed)."""
    if not address.isascii() or any(char in address for char in "\r\n<> "):
        raise ValueError(f"invalid address: {address!r}")
    value = formataddr((display_name, address), charset="utf-8")
    return _crlf(f"{name}: {value}") + CRLF


def _quoted_printable(text: str) -> bytes:
    normalised = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    encoded = binascii.b2a_qp(normalised, istext=True)
    # "From " at a line start is mangled into ">From " by mbox stores: break the signature.
    if encoded.startswith(b"From ") or b"\nFrom " in encoded:
        encoded = b"=46rom " + encoded[5:] if encoded.startswith(b"From ") else encoded
        encoded = encoded.replace(b"\nFrom ", b"\n=46rom ")
    return encoded.replace(b"\n", CRLF)


def text_part(text: str, subtype: str) -> bytes:
    """A ``text/<subtype>; charset=utf-8`` part in quoted-printable."""
    body = _quoted_printable(text)
    if body.endswith(CRLF):
        body = body[: -len(CRLF)]
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"'.encode("ascii")
        + CRLF
        + b"Content-Transfer-Encoding: quoted-printable"
        + CRLF
        + CRLF
        + body
    )


def _parameters(parameters: dict[str, str]) -> bytes:
    pieces = b""
    for key, value in parameters.items():
        if not (key.isascii() and value.isascii()) or any(c in value for c in '"\\\r\n'):
            raise ValueError(f"unsupported MIME parameter {key}={value!r}")
        pieces += f';\r\n {key}="{value}"'.encode("ascii")
    return pieces


def attachment_part(filename: str, data: bytes, mime_type: str) -> bytes:
    """An attached file in base64, named by ``Content-Type`` ``name`` and
    ``Content-Disposition`` ``filename`` (ASCII names only: ours always are)."""
    kind, *extra = (piece.strip() for piece in mime_type.split(";"))
    parameters = dict(piece.split("=", 1) for piece in extra if "=" in piece)
    parameters = {key.strip(): value.strip().strip('"') for key, value in parameters.items()}
    flat = base64.b64encode(data)
    encoded = CRLF.join(flat[start : start + _MAX_LINE] for start in range(0, len(flat), _MAX_LINE))
    return (
        b"Content-Type: "
        + kind.encode("ascii")
        + _parameters({**parameters, "name": filename})
        + CRLF
        + b"Content-Transfer-Encoding: base64"
        + CRLF
        + b"Content-Disposition: attachment"
        + _parameters({"filename": filename})
        + CRLF
        + CRLF
        + encoded
    )


def multipart(subtype: str, boundary: str, parts: Sequence[bytes]) -> bytes:
    """A ``multipart/<subtype>`` entity holding ``parts`` between ``boundary`` lines."""
    if not parts:
        raise ValueError("a multipart entity needs at least one part")
    if not boundary.isascii() or len(boundary) > 70 or '"' in boundary:
        raise ValueError(f"invalid MIME boundary: {boundary!r}")
    delimiter = b"--" + boundary.encode("ascii")
    head = f'Content-Type: multipart/{subtype}; boundary="{boundary}"'.encode("ascii")
    chunks = [head, CRLF, CRLF]
    for index, part in enumerate(parts):
        if index:
            chunks.append(CRLF)
        chunks += [delimiter, CRLF, part]
    chunks += [CRLF, delimiter, b"--"]
    return b"".join(chunks)

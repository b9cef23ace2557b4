"""SASL PLAIN (RFC 4616), the one parser of IMAP AUTHENTICATE and SMTP AUTH.

Both protocols send the client's response in base64, with ``=`` for an empty initial
response (RFC 4959, RFC 4954) and ``*`` to cancel.
"""

from __future__ import annotations

import base64
import binascii
from typing import NamedTuple

__all__ = ["PlainCredentials", "SaslCancelled", "SaslError", "decode_response", "parse_plain"]

#: authzid, authcid and password are each at most 255 octets (RFC 4616, section 2).
_MAX_PART = 255
_MAX_MESSAGE = 3 * _MAX_PART + 2


class SaslError(ValueError):
    """The client's response is malformed (the message says how, for the log and reply)."""


class SaslCancelled(SaslError):
    """The client answered ``*``: it gave up."""


class PlainCredentials(NamedTuple):
    username: str
    password: str


def decode_response(line: bytes) -> bytes:
    """The octets of one base64 client response (``=``: empty); raises on ``*`` or bad data."""
    line = line.strip()
    if line == b"*":
        raise SaslCancelled("Authentication cancelled")
    if line == b"=":
        return b""
    if len(line) > (_MAX_MESSAGE + 2) // 3 * 4:
        raise SaslError("Response too long")
    try:
        return base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raise SaslError("Invalid base64 data") from None


def parse_plain(message: bytes) -> PlainCredentials:
    """Split ``authzid NUL authcid NUL passwd``; an authzid must name the authcid itself."""
    if len(message) > _MAX_MESSAGE:
        raise SaslError("Response too long")
    parts = message.split(b"\x00")
    if len(parts) != 3:
        raise SaslError("Invalid PLAIN credentials")
    authzid, authcid, password = parts
    if not authcid or not password or any(len(part) > _MAX_PART for part in parts):
        raise SaslError("Invalid PLAIN credentials")
    try:
        username = authcid.decode("utf-8")
        secret = password.decode("utf-8")
        identity = authzid.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError("PLAIN credentials are not UTF-8") from None
    if identity and identity.lower() != username.lower():
        raise SaslError("Authorization identity refused")
    return PlainCredentials(username, secret)

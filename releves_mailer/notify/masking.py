"""Secret tokens out of outgoing mails: the masked copy kept after sending, and its text.

A secure link's mail carries the link's clear token. Once the mail has left, the outbox
keeps only a copy with the token masked (for the "Messages envoyés" page), so the database
never holds a usable link after it was sent.
"""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

__all__ = ["MASK", "mask_text", "masked_copy", "readable_text"]

MASK = "••••••"
#: ``token=...`` in a link's query string.
_TOKEN_PARAMETER = re.compile(r"(?i)\b(token=)[^\s&\"'<>]+")
#: Any long random-looking word (a ``secrets.token_urlsafe(32)`` is 43 characters).
_RANDOM_WORD = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{32,}(?![A-Za-z0-9_-])")
#: Headers kept in the masked copy.
_KEPT = ("From", "To", "Reply-To", "Subject", "Date", "Message-ID")


def mask_text(text: str) -> str:
    """``text`` with every secret-looking token replaced by :data:`MASK`."""
    text = _TOKEN_PARAMETER.sub(lambda m: m.group(1) + MASK, text)
    return _RANDOM_WORD.sub(
        lambda m: MASK if any(c.isdigit() for c in m.group(0)) else m.group(0), text
    )


def _parse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def readable_text(raw: bytes) -> str:
    """The text of a mail (its plain part, or its HTML part's source), tokens masked."""
    if not raw:
        return ""
    message = _parse(raw)
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, ValueError):
        return ""
    return mask_text(content) if isinstance(content, str) else ""


def masked_copy(raw: bytes) -> bytes:
    """A plain-text copy of the mail ``raw`` with its headers and its tokens masked."""
    if not raw:
        return b""
    original = _parse(raw)
    copy = EmailMessage()
    for name in _KEPT:
        value = original.get(name)
        if value is not None:
            copy[name] = str(value)
    copy.set_content(readable_text(raw))
    return copy.as_bytes(policy=policy.SMTP)

"""Reading one message in the webmail: its text (or sanitized HTML) and its signature.

HTML goes through nh3 (the Ammonia sanitizer): scripts, styles, forms and event handlers
are removed, links get ``rel="noopener noreferrer nofollow"``, and every remote resource
(``img`` and the like pointing to http/https) is dropped, so opening a mail tells no tracker
anything; the page says when something was blocked. The portal's Content-Security-Policy
blocks any remote load as a second fence.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import nh3
from cryptography import x509

from releves_mailer.signing.verify import SignatureCheck, check_signature

__all__ = ["MessageView", "read_message", "sanitize_html"]

_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "code", "dd", "div", "dl", "dt", "em",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "li", "ol", "p", "pre", "s", "small",
    "span", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr",
    "u", "ul", "img",
}  # fmt: skip
_ATTRIBUTES = {"a": {"href", "title"}, "img": {"alt", "src"}, "td": {"colspan"}, "th": {"colspan"}}
#: Attributes whose value loads something.
_LOADING = {"src", "srcset", "background", "poster"}


@dataclass(frozen=True, slots=True)
class MessageView:
    subject: str
    sender: str
    recipients: str
    date: str
    text: str
    html: str
    remote_blocked: bool
    signature: SignatureCheck


def sanitize_html(html: str) -> tuple[str, bool]:
    """``(safe html, whether remote content was removed)``."""
    blocked = False

    def keep(tag: str, attribute: str, value: str) -> str | None:
        nonlocal blocked
        if attribute in _LOADING:
            if value.strip().lower().startswith(("data:", "cid:")):
                return None  # inline parts are not served either: dropped, not "remote"
            blocked = True
            return None
        return value

    clean = nh3.clean(
        html,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        attribute_filter=keep,
    )
    return clean, blocked


def _body(message: EmailMessage) -> tuple[str, str, bool]:
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return "", "", False
    try:
        content = part.get_content()
    except (LookupError, ValueError, AssertionError):
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    if not isinstance(content, str):
        return "", "", False
    if part.get_content_subtype() == "html":
        html, blocked = sanitize_html(content)
        return "", html, blocked
    return content, "", False


def read_message(raw: bytes, trusted: Sequence[x509.Certificate], at: dt.datetime) -> MessageView:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    inner: EmailMessage = message
    if message.get_content_type() == "multipart/signed":
        parts = message.get_payload()
        if isinstance(parts, list) and parts and isinstance(parts[0], EmailMessage):
            inner = parts[0]
    text, html, blocked = _body(inner)

    def header(name: str) -> str:
        try:
            return str(message.get(name, "") or "")
        except (ValueError, IndexError):
            return ""

    return MessageView(
        subject=header("Subject"),
        sender=header("From"),
        recipients=header("To"),
        date=header("Date"),
        text=text,
        html=html,
        remote_blocked=blocked,
        signature=check_signature(raw, trusted, at),
    )

"""CATENATE (RFC 4469) without URLAUTH: a message put together from text literals and from
messages or sections of the user's own mailboxes, named by IMAP URLs (RFC 5092).

Accepted URLs: ``/<mailbox>[;UIDVALIDITY=n]/;UID=m[/;SECTION=s][/;PARTIAL=o[.l]]``, the
same after ``imap://[user[;AUTH=…]@]host[:port]`` (the user, when given, must be the one
logged in), and ``;UID=m…`` relative to the selected mailbox. Anything else, another
user's mailbox or a message that is not there answers ``NO [BADURL <url>]``.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import unquote, unquote_to_bytes

from releves_mailer.mailbox.imap import mime, utf7
from releves_mailer.mailbox.imap.connection import CommandError
from releves_mailer.mailbox.imap.parser import ParseError, Parser, SpooledLiteral

if TYPE_CHECKING:
    from releves_mailer.mailbox.imap.session import ImapSession

__all__ = ["MAX_CATENATE_PARTS", "CatenatePart", "assemble", "parse_catenate", "resolve_url"]

#: Parts one CATENATE may join.
MAX_CATENATE_PARTS = 100
_MAX_URL_LENGTH = 2048

_PATH = re.compile(
    r"(?P<box>/[^;]*?)?(?:;UIDVALIDITY=(?P<uidvalidity>[1-9]\d{0,9}))?"
    r"/?;UID=(?P<uid>[1-9]\d{0,9})"
    r"(?:/;SECTION=(?P<section>[^/;]+))?"
    r"(?:/;PARTIAL=(?P<offset>\d{1,10})(?:\.(?P<length>[1-9]\d{0,9}))?)?",
    re.IGNORECASE,
)
_AUTHORITY = re.compile(r"imap://(?:(?P<userinfo>[^@/]*)@)?[^/@]+", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class CatenatePart:
    """A TEXT part (its octets, or the file of a spooled literal) or a URL part."""

    text: bytes | BinaryIO | None = None
    url: str = ""


def parse_catenate(parser: Parser) -> list[CatenatePart]:
    """``( TEXT literal / URL astring ... )`` after ``CATENATE SP``."""
    parser.list_start()
    parts: list[CatenatePart] = []
    while True:
        if parser.accept(b"TEXT "):
            if not parser.is_message_literal():
                raise ParseError("TEXT needs a literal")
            literal = parser.message_literal()
            text = literal.file if isinstance(literal, SpooledLiteral) else literal
            parts.append(CatenatePart(text=text))
        elif parser.accept(b"URL "):
            url = parser.astring()
            if len(url) > _MAX_URL_LENGTH:
                raise ParseError("URL too long")
            parts.append(CatenatePart(url=url.decode("utf-8", "replace")))
        else:
            raise ParseError("Expected TEXT or URL")
        if len(parts) > MAX_CATENATE_PARTS:
            raise CommandError("NO", f"[LIMIT] At most {MAX_CATENATE_PARTS} CATENATE parts")
        if parser.list_end():
            return parts
        parser.sp()


async def assemble(session: ImapSession, parts: list[CatenatePart]) -> bytes:
    """The message the parts make, at most ``max_literal_size`` octets (else ``TOOBIG``)."""
    limit = session.config.max_literal_size
    out = bytearray()
    for part in parts:
        if part.text is None:
            data = await resolve_url(session, part.url, limit - len(out))
        elif isinstance(part.text, bytes):
            data = part.text
        else:
            data = await asyncio.to_thread(_read_file, part.text)
        if len(out) + len(data) > limit:
            raise _too_big()
        out += data
    return bytes(out)


def _read_file(file: BinaryIO) -> bytes:
    file.seek(0)
    return file.read()


def _too_big() -> CommandError:
    return CommandError("NO", "[TOOBIG] Catenated message too big")


def _bad_url(url: str, why: str) -> CommandError:
    shown = "".join(c for c in url if c != "]" and " " < c < "\x7f")[:200]
    return CommandError("NO", f"[BADURL {shown}] {why}")


async def resolve_url(session: ImapSession, url: str, room: int) -> bytes:
    """The octets ``url`` names in the user's mailboxes; ``room``: most octets wanted."""
    path = url
    authority = _AUTHORITY.match(url)
    if authority is not None:
        userinfo = authority.group("userinfo")
        if userinfo is not None:
            user = unquote(userinfo.split(";", 1)[0]).lower()
            own = (session.user or "").lower()
            if user and user not in (own, own.partition("@")[0]):
                raise _bad_url(url, "Only your own mailboxes can be used")
        path = url[authority.end() :]
        if not path.startswith("/"):
            raise _bad_url(url, "Invalid IMAP URL")
    if ";URLAUTH=" in path.upper() or ";EXPIRE=" in path.upper():
        raise _bad_url(url, "URLAUTH is not supported")
    match = _PATH.fullmatch(path)
    if match is None:
        raise _bad_url(url, "Invalid IMAP URL")
    box = match.group("box")
    if box:
        try:
            name = unquote_to_bytes(box[1:]).decode("utf-8")
        except UnicodeDecodeError:
            raise _bad_url(url, "Invalid mailbox name") from None
        # URLs carry names in UTF-8 (RFC 5092); the store has them in modified UTF-7
        # (names stored in UTF-8 by older clients are looked up as they are).
        names = [_canonical(utf7.encode(name)), _canonical(name)]
    elif session.view is not None and match.group("uidvalidity") is None:
        names = [session.view.name]
    else:
        raise _bad_url(url, "No mailbox selected")
    info = None
    for candidate in dict.fromkeys(names):
        info = info or await session.mailbox.get_folder(candidate)
    if info is None:
        raise _bad_url(url, "No such mailbox")
    uidvalidity = match.group("uidvalidity")
    if uidvalidity is not None and int(uidvalidity) != info.uidvalidity:
        raise _bad_url(url, "UIDVALIDITY changed")
    uid = int(match.group("uid"))
    records = await session.mailbox.fetch_records(info.id, [uid], ["blob", "size"])
    if not records:
        raise _bad_url(url, "No such message")
    record = records[0]
    section = match.group("section")
    offset = int(match.group("offset") or 0)
    length = match.group("length")
    if section is None and record.size - offset > room and length is None:
        raise _too_big()
    if record.size > session.config.max_literal_size:
        raise _too_big()
    raw = await session.mailbox.read_blob(record.blob)
    if section is not None:
        raw = await asyncio.to_thread(_section, raw, unquote(section), url)
    data = raw[offset:] if length is None else raw[offset : offset + int(length)]
    if len(data) > room:
        raise _too_big()
    return data


def _section(raw: bytes, section: str, url: str) -> bytes:
    try:
        item = Parser(f"BODY[{section}]".encode()).fetch_attribute()
    except (ParseError, UnicodeEncodeError):
        raise _bad_url(url, "Invalid section") from None
    parsed = mime.parse_message(raw)
    data = mime.section_bytes(parsed, item.path, item.text, item.fields)
    if not data and item.text not in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        raise _bad_url(url, "No such section")
    return data


def _canonical(name: str) -> str:
    # INBOX in any case is INBOX (RFC 3501 section 5.1), as in the commands' arguments.
    if name.upper() == "INBOX":
        return "INBOX"
    if name.upper().startswith("INBOX/"):
        return "INBOX" + name[5:]
    return name

"""The IMAP APPEND command: one message or several (MULTIAPPEND, RFC 3502), each a literal,
a literal8 (BINARY, RFC 3516), ``UTF8 (literal8)`` (RFC 6855) or a CATENATE of text and URL
parts (RFC 4469).

Every message of one command is stored in one transaction of the store: all or none.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, BinaryIO

from releves_mailer.mailbox.contracts import AppendItem
from releves_mailer.mailbox.imap.binary import encode_nul_parts
from releves_mailer.mailbox.imap.catenate import CatenatePart, assemble, parse_catenate
from releves_mailer.mailbox.imap.connection import CommandContext, CommandError
from releves_mailer.mailbox.imap.parser import ParseError, Parser, SpooledLiteral
from releves_mailer.mailbox.imap.response import compress

if TYPE_CHECKING:
    from releves_mailer.mailbox.imap.session import ImapSession

__all__ = ["MAX_APPEND_MESSAGES", "cmd_append"]

#: Messages one MULTIAPPEND may carry (their octets are bounded by ``max_literal_size``).
MAX_APPEND_MESSAGES = 1000


async def cmd_append(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    parser.sp()
    name = parser.mailbox()
    messages: list[tuple[list[str], dt.datetime | None, bytes | BinaryIO | list[CatenatePart]]]
    messages = []
    while True:
        parser.sp()
        flags: list[str] = []
        when = None
        if parser.peek() == 0x28:
            flags = parser.flag_list()
            if "\\*" in flags:
                raise ParseError("\\* is not a flag")
            parser.sp()
        if parser.peek() == 0x22:
            when = parser.date_time()
            parser.sp()
        content: bytes | BinaryIO | list[CatenatePart]
        if parser.is_message_literal():
            literal = parser.message_literal()
            content = literal.file if isinstance(literal, SpooledLiteral) else literal
        elif parser.accept(b"UTF8 ("):
            # RFC 6855: a message with UTF-8 headers, as a literal8.
            if not session.utf8:
                raise ParseError("UTF8 needs ENABLE UTF8=ACCEPT")
            if parser.peek() != 0x7E:
                raise ParseError("UTF8 needs a literal8")
            literal = parser.message_literal()
            content = literal.file if isinstance(literal, SpooledLiteral) else literal
            if not parser.list_end():
                raise ParseError("Expected )")
        elif parser.accept(b"CATENATE "):
            content = parse_catenate(parser)
        else:
            raise ParseError("APPEND needs a literal or CATENATE")
        messages.append((flags, when, content))
        if len(messages) > MAX_APPEND_MESSAGES:
            raise CommandError("NO", f"[LIMIT] At most {MAX_APPEND_MESSAGES} messages per APPEND")
        if parser.at_end():
            break
    info = await session.mailbox.get_folder(name)
    if info is None:
        raise CommandError("NO", "[TRYCREATE] Mailbox does not exist")
    items: list[AppendItem] = []
    for flags, when, content in messages:
        if isinstance(content, list):
            raw: bytes | BinaryIO = await assemble(session, content)
        else:
            raw = content
        if isinstance(raw, bytes) and not raw:
            raise CommandError("NO", "Empty message")
        if isinstance(raw, bytes):
            raw = encode_nul_parts(raw)
        items.append(AppendItem(raw, flags, when))
    uidvalidity, uids = await session.mailbox.append_many(info.id, items)
    await session.sync_view(allow_expunge=True)
    session.ok(context, "Append completed", f"APPENDUID {uidvalidity} {compress(uids)}")

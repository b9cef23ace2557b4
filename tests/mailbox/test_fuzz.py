"""Random and mutated commands, a fixed number of them: no crash, no hang, fresh clients
served."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from releves_mailer.mailbox.imap.parser import ParseError, Parser
from releves_mailer.mailbox.imap.search import parse_search_keys
from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.store import MessageStore

from .conftest import DOMAIN, RawClient, put, sample_message

pytestmark = pytest.mark.once

#: Commands sent, whatever the speed of the machine: the same ones on every run.
FUZZ_COMMANDS = 80

TEMPLATES = [
    b"FETCH 1:* (FLAGS UID BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]<0.10> BODYSTRUCTURE)",
    b"UID FETCH 1:*,2,3:4 (ENVELOPE RFC822.SIZE INTERNALDATE BODY[1.MIME] BODY[TEXT])",
    b'SEARCH CHARSET UTF-8 OR (FROM alice SINCE 1-Jan-2020) NOT UID 2:* SUBJECT "x y"',
    b"UID SEARCH HEADER Message-ID <a@b> LARGER 10 SMALLER 100000 KEYWORD $x",
    b"STORE 1:2 +FLAGS.SILENT (\\Seen $Fuzz)",
    b"UID STORE 1 (UNCHANGEDSINCE 5) -FLAGS (\\Deleted)",
    b"COPY 1 INBOX",
    b"UID MOVE 9999 Nowhere",
    b'LIST "" "*"',
    b'LIST (SUBSCRIBED) "" % RETURN (CHILDREN STATUS (MESSAGES))',
    b"STATUS INBOX (MESSAGES UNSEEN UIDNEXT HIGHESTMODSEQ)",
    b'APPEND INBOX (\\Seen) "10-Mar-2026 10:00:00 +0100" {5+}\r\nhello',
    b"APPEND INBOX {5+}\r\nhello (\\Seen) "
    b'CATENATE (URL "/INBOX/;UID=1/;SECTION=1" TEXT ~{2+}\r\nhi)',
    b"FETCH 1:* (BINARY.PEEK[1]<0.5> BINARY.SIZE[2] BINARY[])",
    b'LIST (SUBSCRIBED RECURSIVEMATCH) "" ("%" "*/x") RETURN (SPECIAL-USE STATUS (UNSEEN))',
    b"SELECT INBOX (QRESYNC (1 1 1:* (1:2 1:2)))",
    b"UID FETCH 1:* FLAGS (CHANGEDSINCE 1 VANISHED)",
    b'CREATE "fu zz/&AOk-"',
    b'RENAME "fu zz" fuzz2',
    b"EXAMINE INBOX",
    b"SELECT INBOX (CONDSTORE)",
    b'ID ("a" "b" "c" NIL)',
    b"ENABLE CONDSTORE QRESYNC UTF8=ACCEPT",
    b"NOOP",
    b"CHECK",
    b"AUTHENTICATE PLAIN =",
    b"LOGIN a b",
]
JUNK = [
    b"(",
    b")",
    b"[",
    b"]",
    b"{",
    b"}",
    b'"',
    b"\\",
    b"*",
    b"%",
    b"<",
    b">",
    b" ",
    b"\x00",
    b"\xff",
    b"{3}",
    b"{99999999999}",
    b"{2+}",
    b"1:*",
    b"~{1}",
    b"NIL",
    b"\r",
]


def mutate(rng: random.Random, command: bytes) -> bytes:
    data = bytearray(command)
    for _ in range(rng.randint(0, 4)):
        choice = rng.random()
        position = rng.randint(0, len(data))
        if choice < 0.3 and data:
            del data[min(position, len(data) - 1)]
        elif choice < 0.6:
            data[position:position] = rng.choice(JUNK)
        elif choice < 0.8 and data:
            data[min(position, len(data) - 1)] = rng.randint(0, 255)
        else:
            del data[position:]
    return bytes(data).replace(b"\n", b"")


async def test_fuzzed_commands_never_break_the_server(
    server: ImapServer, store: MessageStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="releves_mailer.mailbox")
    for index in range(3):
        await put(store, f"demo@{DOMAIN}", sample_message(subject=f"f{index}"))
    rng = random.Random(20260310)
    client = await RawClient.connect(server.port)
    await client.ok("s SELECT INBOX")
    for sent in range(FUZZ_COMMANDS):
        if rng.random() < 0.15:
            payload = bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 80)))
            line = payload.replace(b"\n", b"")
        else:
            line = b"f%d " % sent + mutate(rng, rng.choice(TEMPLATES))
        try:
            await client.send(line + b"\r\n")
            # Read whatever comes within a short time; a pending literal may swallow lines.
            while True:
                reply = await asyncio.wait_for(client.reader.readline(), 0.05)
                if not reply:
                    raise ConnectionResetError
        except TimeoutError:
            pass
        except (ConnectionError, OSError):
            await client.close()
            client = await RawClient.connect(server.port)
            await client.ok("s SELECT INBOX")
    await client.close()

    fresh = await RawClient.connect(server.port)
    lines = await fresh.ok("t1 SELECT INBOX")
    assert any(line.endswith(b"EXISTS\r\n") for line in lines)
    await fresh.ok("t2 FETCH 1:* (FLAGS ENVELOPE)")
    await fresh.close()
    crashes = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert crashes == [], [r.getMessage() for r in crashes]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_parser_raises_only_parse_errors(data: bytes) -> None:
    for rule in (
        "tag",
        "atom",
        "astring",
        "string",
        "mailbox",
        "list_mailbox",
        "flag_list",
        "flags_maybe_list",
        "sequence_set",
        "date",
        "date_time",
        "fetch_attribute",
    ):
        with contextlib.suppress(ParseError):
            getattr(Parser(data), rule)()
    with contextlib.suppress(ParseError):
        parse_search_keys(Parser(data))

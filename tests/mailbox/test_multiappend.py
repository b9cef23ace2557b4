"""MULTIAPPEND (RFC 3502): several messages in one APPEND, stored all or none."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import aioimaplib
import pytest
from aioimaplib.aioimaplib import Command
from imapclient import IMAPClient

from releves_mailer.mailbox.contracts import MailboxLimits
from releves_mailer.mailbox.imap.append import MAX_APPEND_MESSAGES
from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.store import MessageStore

from .conftest import PASSWORD, RawClient, crash_after, in_thread, sample_message


def _literal(data: bytes) -> bytes:
    return b"{%d+}\r\n" % len(data) + data


async def _messages(client: RawClient, box: str = "INBOX") -> int:
    lines = await client.ok(f"s STATUS {box} (MESSAGES)")
    found = re.search(rb"\* STATUS \S+ \(MESSAGES (\d+)\)", b"".join(lines))
    assert found is not None, lines
    return int(found.group(1))


async def test_raw_multiappend_stores_each_message_with_its_flags_and_date(
    server: ImapServer,
) -> None:
    client = await RawClient.connect(server.port)
    first = sample_message(subject="one")
    second = sample_message(subject="two")
    third = sample_message(subject="three")
    command = (
        b"a1 APPEND INBOX (\\Seen) "
        + _literal(first)
        + b' (\\Flagged $Label) "05-Mar-2026 10:00:00 +0100" '
        + _literal(second)
        + b" "
        + _literal(third)
    )
    lines = await client.command(command)
    assert re.match(rb"a1 OK \[APPENDUID \d+ 1:3\]", lines[-1]), lines
    await client.ok("a2 SELECT INBOX")
    lines = await client.ok("a3 FETCH 1:3 (FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    text = b"".join(lines)
    assert b"* 1 FETCH (FLAGS (\\Seen \\Recent)" in text
    assert b"* 2 FETCH (FLAGS (\\Flagged $Label \\Recent)" in text
    assert b'INTERNALDATE " 5-Mar-2026 09:00:00 +0000"' in text
    assert b"* 3 FETCH (FLAGS (\\Recent)" in text
    for subject in (b"one", b"two", b"three"):
        assert b"Subject: " + subject in text
    lines = await client.ok("a4 FETCH 2 BODY.PEEK[]")
    assert second in b"".join(lines)
    await client.close()


async def test_multiappend_with_an_empty_message_stores_nothing(server: ImapServer) -> None:
    client = await RawClient.connect(server.port)
    command = b"a1 APPEND INBOX " + _literal(sample_message()) + b" " + _literal(b"")
    lines = await client.command(command)
    assert lines[-1].startswith(b"a1 NO "), lines
    assert await _messages(client) == 0
    await client.close()


async def test_multiappend_is_one_transaction(
    server: ImapServer, store: MessageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A failure once the rows went in rolls the whole APPEND back, first message included.
    monkeypatch.setattr(store, "_insert_many", crash_after(store._insert_many))
    client = await RawClient.connect(server.port)
    command = (
        b"a1 APPEND INBOX "
        + _literal(sample_message(subject="a"))
        + b" "
        + _literal(sample_message(subject="b"))
    )
    lines = await client.command(command)
    assert lines[-1].startswith(b"a1 NO [SERVERBUG]"), lines
    monkeypatch.undo()
    assert await _messages(client) == 0
    await client.close()


async def test_multiappend_to_a_missing_mailbox_asks_to_create_it(server: ImapServer) -> None:
    client = await RawClient.connect(server.port)
    command = b"a1 APPEND Nowhere " + _literal(b"x") + b" " + _literal(b"y")
    lines = await client.command(command)
    assert lines[-1].startswith(b"a1 NO [TRYCREATE]"), lines
    await client.close()


async def test_multiappend_message_count_is_limited(server: ImapServer) -> None:
    client = await RawClient.connect(server.port)
    message = _literal(b"Subject: x\r\n\r\nx\r\n")
    command = b"a1 APPEND INBOX " + b" ".join([message] * (MAX_APPEND_MESSAGES + 1))
    lines = await client.command(command)
    assert lines[-1].startswith(b"a1 NO [LIMIT]"), lines
    assert await _messages(client) == 0
    # The same command within the limit goes through.
    command = b"a2 APPEND INBOX " + b" ".join([message] * 3)
    lines = await client.command(command)
    assert re.match(rb"a2 OK \[APPENDUID \d+ 1:3\]", lines[-1]), lines
    await client.close()


async def test_multiappend_total_size_is_bounded_by_the_literal_limit(
    server_factory: object,
) -> None:
    server: ImapServer = await server_factory(max_literal_size=10_000)  # type: ignore[operator]
    client = await RawClient.connect(server.port)
    part = b"Subject: x\r\n\r\n" + b"y" * 6000
    await client.send(b"a1 APPEND INBOX {%d}\r\n" % len(part))
    assert (await client.line()).startswith(b"+")
    await client.send(part + b" {%d}\r\n" % len(part))
    line = await client.line()
    assert line.startswith(b"a1 NO [TOOBIG]"), line
    await client.send(b"\r\n")
    assert await _messages(client) == 0
    await client.close()


async def test_imapclient_multiappend(server: ImapServer) -> None:
    def run() -> tuple[Any, list[int], dict[int, dict[bytes, object]]]:
        with IMAPClient("127.0.0.1", port=server.port, ssl=False) as client:
            client.login("demo", PASSWORD)
            assert b"MULTIAPPEND" in client.capabilities()
            client.create_folder("Archive")
            response = client.multiappend(
                "Archive",
                [
                    sample_message(subject="first").decode(),
                    {
                        "msg": sample_message(subject="second").decode(),
                        "flags": [b"\\Answered"],
                        "date": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
                    },
                ],
            )
            client.select_folder("Archive")
            uids = client.search("ALL")
            fetched = client.fetch(uids, ["FLAGS", "INTERNALDATE", "BODY.PEEK[HEADER]"])
            return response, uids, fetched

    response, uids, fetched = await in_thread(run)
    status, [text] = response
    assert status == "OK"
    assert re.match(rb"\[APPENDUID \d+ 1:2\]", text), response
    assert uids == [1, 2]
    assert b"Subject: first" in fetched[1][b"BODY[HEADER]"]  # type: ignore[operator]
    assert b"\\Answered" in fetched[2][b"FLAGS"]  # type: ignore[operator]
    when = fetched[2][b"INTERNALDATE"]
    assert isinstance(when, dt.datetime)
    assert when.astimezone(dt.UTC) == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


async def test_multiappend_over_quota_stores_nothing(
    server: ImapServer, store: MessageStore
) -> None:
    store.limits = MailboxLimits(quota_bytes=5_000)
    client = await RawClient.connect(server.port)
    message = sample_message(body="x" * 2_000)
    lines = await client.command(b"a1 APPEND INBOX " + b" ".join([_literal(message)] * 3))
    assert lines[-1].startswith(b"a1 NO [OVERQUOTA]"), lines
    assert await _messages(client) == 0
    lines = await client.command(b"a2 APPEND INBOX " + b" ".join([_literal(message)] * 2))
    assert re.match(rb"a2 OK \[APPENDUID \d+ 1:2\]", lines[-1]), lines
    await client.close()


async def test_aioimaplib_multiappend(server: ImapServer) -> None:
    """aioimaplib sends one synchronising literal per APPEND: after the server's
    continuation it writes the first message, and what follows it on the wire carries the
    second message as a non-synchronising literal, as a client built on it would send a
    MULTIAPPEND."""
    client = aioimaplib.IMAP4(host="127.0.0.1", port=server.port, timeout=60)
    await client.wait_hello_from_server()
    assert (await client.login("demo", PASSWORD)).result == "OK"
    assert client.has_capability("MULTIAPPEND")
    assert (await client.create("Archive")).result == "OK"
    first = sample_message(subject="premier")
    second = sample_message(subject="second")
    protocol = client.protocol
    protocol.literal_data = (
        first + b' (\\Flagged) "02-Jan-2026 04:04:05 +0100" {%d+}\r\n' % len(second) + second
    )
    response = await protocol.execute(
        Command(
            "APPEND",
            protocol.new_tag(),
            "Archive",
            "(\\Seen)",
            f"{{{len(first)}}}",
            loop=protocol.loop,
        )
    )
    assert response.result == "OK", response
    assert re.search(rb"\[APPENDUID \d+ 1:2\]", b" ".join(response.lines)), response.lines
    assert (await client.select("Archive")).result == "OK"
    fetched = await client.fetch("1:2", "(FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    await client.logout()
    # aioimaplib gives the literals (the headers asked for) as bytearrays between the lines.
    text = b"".join(bytes(line) for line in fetched.lines)
    assert b"Subject: premier" in text
    assert b"Subject: second" in text
    assert b"1 FETCH (FLAGS (\\Seen \\Recent)" in text
    assert b"2 FETCH (FLAGS (\\Flagged \\Recent)" in text
    assert b'INTERNALDATE " 2-Jan-2026 03:04:05 +0000"' in text

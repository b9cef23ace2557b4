"""QRESYNC (RFC 7162): VANISHED instead of EXPUNGE, SELECT (QRESYNC ...), UID FETCH VANISHED."""

from __future__ import annotations

import asyncio
import re

import aioimaplib
import pytest
from imapclient import IMAPClient
from sqlalchemy import delete

from releves_mailer.db.models.mailbox import MailExpunged
from releves_mailer.mailbox.folders import _gaps
from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.store import MessageStore

from .conftest import DOMAIN, PASSWORD, RawClient, in_thread, put, sample_message

ADDRESS = f"demo@{DOMAIN}"


async def _box(store: MessageStore, count: int = 5) -> None:
    for index in range(count):
        await put(store, ADDRESS, sample_message(subject=f"m{index}"))


def _number(lines: list[bytes], name: bytes) -> int:
    found = re.search(rb"\[" + name + rb" (\d+)\]", b"".join(lines))
    assert found is not None, lines
    return int(found.group(1))


async def _changes(client: RawClient) -> tuple[int, int]:
    """Flag message 2, expunge 3 and 4; the UIDVALIDITY and the MODSEQ before."""
    lines = await client.ok("p1 SELECT INBOX")
    validity, modseq = _number(lines, b"UIDVALIDITY"), _number(lines, b"HIGHESTMODSEQ")
    await client.ok("p2 STORE 2 +FLAGS (\\Flagged)")
    await client.ok("p3 STORE 3:4 +FLAGS (\\Deleted)")
    lines = await client.ok("p4 EXPUNGE")
    text = b"".join(lines)
    if b"VANISHED" in text:
        assert b"* VANISHED 3:4\r\n" in text
        assert b"EXPUNGE\r\n" not in text
    else:
        assert b"* 4 EXPUNGE\r\n* 3 EXPUNGE\r\n" in text
    return validity, modseq


async def test_select_qresync_reports_vanished_and_changed(
    server: ImapServer, store: MessageStore
) -> None:
    await _box(store)
    writer = await RawClient.connect(server.port)
    lines = await writer.ok("e ENABLE QRESYNC")
    assert lines[0] == b"* ENABLED QRESYNC\r\n"
    validity, modseq = await _changes(writer)
    client = await RawClient.connect(server.port)
    lines = await client.command(f"a SELECT INBOX (QRESYNC ({validity} {modseq}))")
    assert lines[-1].startswith(b"a BAD"), lines  # not enabled yet
    await client.ok("b ENABLE QRESYNC")
    lines = await client.ok(f"c SELECT INBOX (QRESYNC ({validity} {modseq}))")
    text = b"".join(lines)
    assert b"* VANISHED (EARLIER) 3:4\r\n" in text
    assert re.search(rb"\* 2 FETCH \(UID 2 FLAGS \(\\Flagged\) MODSEQ \(\d+\)\)", text), text
    assert b"* 1 FETCH" not in text and b"* 3 FETCH" not in text
    # Known UIDs limit what vanished; a stale UIDVALIDITY gets a plain SELECT.
    lines = await client.ok(f"d EXAMINE INBOX (QRESYNC ({validity} {modseq} 1:3,5))")
    assert b"* VANISHED (EARLIER) 3\r\n" in b"".join(lines)
    lines = await client.ok(f"f EXAMINE INBOX (QRESYNC ({validity} {modseq} 1:2 (1:2 1:2)))")
    assert b"VANISHED" not in b"".join(lines)
    lines = await client.ok(f"g SELECT INBOX (QRESYNC ({validity + 1} {modseq}))")
    assert b"VANISHED" not in b"".join(lines) and b"FETCH" not in b"".join(lines)
    assert b"* OK [CLOSED]" in b"".join(lines)
    lines = await client.command("h SELECT INBOX (QRESYNC (1 0))")
    assert lines[-1].startswith(b"h BAD"), lines
    await client.close()
    await writer.close()


async def test_uid_fetch_changedsince_vanished(server: ImapServer, store: MessageStore) -> None:
    await _box(store)
    client = await RawClient.connect(server.port)
    _, modseq = await _changes(client)
    lines = await client.command(f"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")
    assert lines[-1].startswith(b"a BAD"), lines  # QRESYNC not enabled
    await client.ok("b ENABLE QRESYNC")
    lines = await client.ok(f"c UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")
    assert lines[0] == b"* VANISHED (EARLIER) 3:4\r\n"
    assert re.match(rb"\* 2 FETCH \(UID 2 FLAGS \(\\Flagged \\Recent\) MODSEQ \(\d+\)\)", lines[1])
    assert len(lines) == 3
    lines = await client.ok(f"d UID FETCH 4:5 (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")
    assert lines[0] == b"* VANISHED (EARLIER) 4\r\n"
    lines = await client.command(f"e FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")
    assert lines[-1].startswith(b"e BAD"), lines
    await client.close()


async def test_other_sessions_hear_vanished_or_expunge(
    server: ImapServer, store: MessageStore
) -> None:
    await _box(store, 3)
    modern = await RawClient.connect(server.port)
    await modern.ok("a ENABLE QRESYNC")
    await modern.ok("b SELECT INBOX")
    classic = await RawClient.connect(server.port)
    await classic.ok("c SELECT INBOX")
    writer = await RawClient.connect(server.port)
    await writer.ok("d SELECT INBOX")
    await writer.ok("e STORE 1,3 +FLAGS (\\Deleted)")
    await writer.ok("f CLOSE")
    lines = await modern.ok("g NOOP")
    text = b"".join(lines)
    assert b"* VANISHED 1,3\r\n" in text and b"EXPUNGE" not in text
    lines = await classic.ok("h NOOP")
    assert b"* 3 EXPUNGE\r\n* 1 EXPUNGE\r\n" in b"".join(lines)
    # MOVE answers VANISHED too once QRESYNC is on.
    await modern.ok("i CREATE Kept")
    lines = await modern.ok("j MOVE 1 Kept")
    assert b"* VANISHED 2\r\n" in b"".join(lines)
    await modern.close()
    await classic.close()
    await writer.close()


async def test_expunges_older_than_the_record_are_still_reported(
    server: ImapServer, store: MessageStore
) -> None:
    # A box expunged before schema 0013 has no record: its missing UIDs count as vanished.
    await _box(store)
    client = await RawClient.connect(server.port)
    await client.ok("a ENABLE QRESYNC")
    _, modseq = await _changes(client)
    async with store._session() as session:
        await session.execute(delete(MailExpunged))
    lines = await client.ok(f"b UID FETCH 1:* UID (CHANGEDSINCE {modseq + 10} VANISHED)")
    assert lines[0] == b"* VANISHED (EARLIER) 3:4\r\n"
    await client.close()


@pytest.mark.parametrize(
    ("present", "known_gone", "uidnext", "within", "expected"),
    [
        ([], set(), 1, None, []),
        ([1, 2, 5], set(), 8, None, [(3, 4), (6, 7)]),
        ([1, 2, 5], {3, 7}, 8, None, [(4, 4), (6, 6)]),
        ([5], {2}, 6, [(1, 3)], [(1, 1), (3, 3)]),
        ([10], set(), 11, [(2, 3), (5, 6)], [(2, 3), (5, 6)]),
        ([2], {1}, 1000, [(1, 1), (100, 200)], [(100, 200)]),
    ],
)
def test_gaps(
    present: list[int],
    known_gone: set[int],
    uidnext: int,
    within: list[tuple[int, int]] | None,
    expected: list[tuple[int, int]],
) -> None:
    assert _gaps(present, known_gone, uidnext, within) == expected


async def test_imapclient_qresync(server: ImapServer, store: MessageStore) -> None:
    await _box(store)
    writer = await RawClient.connect(server.port)
    validity, modseq = await _changes(writer)
    await writer.close()

    def run() -> tuple[list[bytes], dict[int, dict[bytes, object]], list[bytes]]:
        with IMAPClient("127.0.0.1", port=server.port, ssl=False) as client:
            client.login("demo", PASSWORD)
            assert b"QRESYNC" in client.capabilities()
            assert client.enable("QRESYNC") == [b"QRESYNC"]
            imap = client._imap
            typ, _ = imap._simple_command("SELECT", "INBOX", f"(QRESYNC ({validity} {modseq}))")
            assert typ == "OK"
            imap.state = "SELECTED"  # imaplib only knows of its own select()
            on_select = list(imap.untagged_responses.pop("VANISHED", []))
            fetched = client.fetch(
                [1, 2, 3, 4, 5], ["FLAGS"], modifiers=[f"CHANGEDSINCE {modseq} VANISHED"]
            )
            on_fetch = list(imap.untagged_responses.pop("VANISHED", []))
            return on_select, fetched, on_fetch

    on_select, fetched, on_fetch = await in_thread(run)
    assert on_select == [b"(EARLIER) 3:4"]
    assert on_fetch == [b"(EARLIER) 3:4"]
    assert list(fetched) == [2]
    assert fetched[2][b"FLAGS"] == (b"\\Flagged",)


async def test_aioimaplib_idle_hears_vanished(server: ImapServer, store: MessageStore) -> None:
    await _box(store, 2)
    client = aioimaplib.IMAP4(host="127.0.0.1", port=server.port, timeout=60)
    await client.wait_hello_from_server()
    assert (await client.login("demo", PASSWORD)).result == "OK"
    assert (await client.enable("QRESYNC")).result == "OK"
    assert (await client.select("INBOX")).result == "OK"
    idle = await client.idle_start(timeout=60)
    writer = await RawClient.connect(server.port)
    await writer.ok("a SELECT INBOX")
    await writer.ok("b STORE 2 +FLAGS.SILENT (\\Deleted)")
    await writer.ok("c EXPUNGE")
    pushed: list[bytes] = []
    while not any(b"VANISHED" in line for line in pushed):
        pushed += await asyncio.wait_for(client.wait_server_push(), 60)
    client.idle_done()
    await asyncio.wait_for(idle, 60)
    await client.logout()
    await writer.close()
    assert b"VANISHED 2" in pushed
    assert not any(b"EXPUNGE" in line for line in pushed)


async def test_fetch_and_store_responses_carry_the_uid(
    server: ImapServer, store: MessageStore
) -> None:
    await _box(store, 2)
    client = await RawClient.connect(server.port)
    await client.ok("a SELECT INBOX")
    lines = await client.ok("b FETCH 2 FLAGS")
    assert lines[0] == b"* 2 FETCH (FLAGS (\\Recent))\r\n"
    await client.ok("c ENABLE QRESYNC")
    lines = await client.ok("d FETCH 2 FLAGS")
    assert re.match(rb"\* 2 FETCH \(UID 2 FLAGS \(\\Recent\) MODSEQ \(\d+\)\)", lines[0]), lines
    lines = await client.ok("e STORE 2 +FLAGS (\\Seen)")
    assert re.match(rb"\* 2 FETCH \(UID 2 FLAGS \(\\Seen \\Recent\) MODSEQ \(\d+\)\)", lines[0])
    lines = await client.ok("f STORE 1 +FLAGS.SILENT (\\Seen)")
    assert re.match(rb"\* 1 FETCH \(UID 1 MODSEQ \(\d+\)\)", lines[0]), lines
    await client.close()

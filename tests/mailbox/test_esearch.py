"""ESEARCH (RFC 4731), SEARCHRES (RFC 5182) and WITHIN (RFC 5032), on the wire and through
imapclient, imaplib and aioimaplib."""

from __future__ import annotations

import datetime as dt

import aioimaplib
from aioimaplib import Command
from imapclient import IMAPClient

from releves_mailer.clock import ManualClock
from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.store import MessageStore

from .conftest import DOMAIN, PASSWORD, RawClient, in_thread, put
from .mailmaker import mail

ADDRESS = f"demo@{DOMAIN}"


async def five_with_a_gap(store: MessageStore, client: RawClient) -> None:
    """UIDs 1, 2, 4, 5 (sequence 1 to 4): subjects a, b, d, e; d and e are flagged."""
    for subject in "abcde":
        await put(store, ADDRESS, mail(subject))
    await client.ok("s1 SELECT INBOX")
    await client.ok("s2 STORE 3 +FLAGS (\\Deleted)")
    await client.ok("s3 EXPUNGE")
    await client.ok("s4 STORE 3:4 +FLAGS (\\Flagged)")


async def test_capabilities_after_login(server: ImapServer) -> None:
    client = await RawClient.connect(server.port)
    lines = await client.ok("c CAPABILITY")
    words = lines[0].split()
    for name in (b"ESEARCH", b"SEARCHRES", b"WITHIN", b"SORT", b"SORT=DISPLAY", b"ESORT"):
        assert name in words
    assert b"THREAD=REFERENCES" in words and b"THREAD=ORDEREDSUBJECT" in words
    await client.close()


async def test_esearch_response_formats(server: ImapServer, store: MessageStore) -> None:
    client = await RawClient.connect(server.port)
    await five_with_a_gap(store, client)
    lines = await client.ok("a1 UID SEARCH RETURN (MIN MAX COUNT ALL) ALL")
    assert lines[0] == b'* ESEARCH (TAG "a1") UID MIN 1 MAX 5 COUNT 4 ALL 1:2,4:5\r\n'
    # RETURN () is RETURN (ALL); sequence numbers have no gap.
    lines = await client.ok("a2 SEARCH RETURN () ALL")
    assert lines[0] == b'* ESEARCH (TAG "a2") ALL 1:4\r\n'
    lines = await client.ok("a3 SEARCH RETURN (MIN COUNT) SUBJECT nothing-like-this")
    assert lines[0] == b'* ESEARCH (TAG "a3") COUNT 0\r\n'
    lines = await client.ok("a4 SEARCH RETURN (MAX) SUBJECT nothing-like-this")
    assert lines[0] == b'* ESEARCH (TAG "a4")\r\n'
    lines = await client.ok("a5 UID SEARCH RETURN (COUNT) CHARSET UTF-8 FLAGGED")
    assert lines[0] == b'* ESEARCH (TAG "a5") UID COUNT 2\r\n'
    # Without RETURN the answer stays the RFC 3501 one.
    lines = await client.ok("a6 UID SEARCH FLAGGED")
    assert lines[0] == b"* SEARCH 4 5\r\n"
    await client.close()


async def test_esearch_with_modseq(server: ImapServer, store: MessageStore) -> None:
    client = await RawClient.connect(server.port)
    await five_with_a_gap(store, client)
    fetched = await client.ok("m0 FETCH 4 (MODSEQ)")
    line = next(line for line in fetched if line.startswith(b"* 4 FETCH"))
    modseq = int(line.split(b"MODSEQ (")[1].split(b")")[0])
    lines = await client.ok("m1 SEARCH RETURN (ALL) MODSEQ 1")
    assert lines[0].startswith(b'* ESEARCH (TAG "m1") ALL 1:4 MODSEQ ')
    assert int(lines[0].split()[-1]) == modseq
    lines = await client.ok("m2 SEARCH RETURN (MIN) MODSEQ 1")
    assert lines[0].startswith(b'* ESEARCH (TAG "m2") MIN 1 MODSEQ ')
    assert int(lines[0].split()[-1]) < modseq
    await client.close()


async def test_esearch_errors(server: ImapServer, store: MessageStore) -> None:
    client = await RawClient.connect(server.port)
    await five_with_a_gap(store, client)
    lines = await client.command("e1 SEARCH RETURN (FOO) ALL")
    assert lines[-1].startswith(b"e1 BAD ")
    lines = await client.command("e2 SEARCH RETURN (MIN ALL")
    assert lines[-1].startswith(b"e2 BAD ")
    lines = await client.command("e3 SEARCH CHARSET KOI8-R ALL")
    assert lines[-1].startswith(b"e3 NO [BADCHARSET")
    lines = await client.command("e4 SEARCH YOUNGER 0")
    assert lines[-1].startswith(b"e4 BAD ")
    await client.close()


async def test_searchres_save_and_dollar(server: ImapServer, store: MessageStore) -> None:
    client = await RawClient.connect(server.port)
    await five_with_a_gap(store, client)
    # SAVE alone: no ESEARCH response at all.
    lines = await client.ok("r1 SEARCH RETURN (SAVE) FLAGGED")
    assert lines == [lines[-1]]
    lines = await client.ok("r2 FETCH $ (UID)")
    assert lines[:-1] == [b"* 3 FETCH (UID 4)\r\n", b"* 4 FETCH (UID 5)\r\n"]
    lines = await client.ok("r3 UID SEARCH UID $")
    assert lines[0] == b"* SEARCH 4 5\r\n"
    lines = await client.ok("r4 SEARCH NOT $")
    assert lines[0] == b"* SEARCH 1 2\r\n"
    lines = await client.ok("r5 UID STORE $ +FLAGS (\\Seen)")
    assert len(lines) == 3 and all(b"\\Seen" in line for line in lines[:-1])
    # SAVE with MIN keeps only the smallest; with an ESEARCH answer too.
    lines = await client.ok("r6 UID SEARCH RETURN (SAVE MIN COUNT) ALL")
    assert lines[0] == b'* ESEARCH (TAG "r6") UID MIN 1 COUNT 4\r\n'
    lines = await client.ok("r7 UID SEARCH $")
    assert lines[0] == b"* SEARCH 1 2 4 5\r\n"  # COUNT given: the whole result is saved
    await client.ok("r8 SEARCH RETURN (SAVE MAX) ALL")
    lines = await client.ok("r9 UID FETCH $ (FLAGS)")
    assert len(lines) == 2 and lines[0].startswith(b"* 4 FETCH (UID 5 ")
    # A SEARCH with SAVE that fails empties $.
    lines = await client.command("r10 SEARCH RETURN (SAVE) CHARSET KOI8-R ALL")
    assert lines[-1].startswith(b"r10 NO [BADCHARSET")
    lines = await client.ok("r11 FETCH $ (UID)")
    assert lines == [lines[-1]]
    # Expunged messages leave $; a new SELECT empties it.
    await client.ok("r12 SEARCH RETURN (SAVE) ALL")
    await client.ok("r13 STORE 1 +FLAGS (\\Deleted)")
    await client.ok("r14 EXPUNGE")
    lines = await client.ok("r15 UID SEARCH UID $")
    assert lines[0] == b"* SEARCH 2 4 5\r\n"
    await client.ok("r16 SELECT INBOX")
    lines = await client.ok("r17 UID SEARCH UID $")
    assert lines[0] == b"* SEARCH\r\n"
    await client.close()


async def test_within_uses_the_server_clock(
    server: ImapServer, store: MessageStore, clock: ManualClock
) -> None:
    now = clock.now()
    for hours in (50, 5, 1):
        await put(store, ADDRESS, mail(f"{hours}h"), internal_date=now - dt.timedelta(hours=hours))
    client = await RawClient.connect(server.port)
    await client.ok("w0 SELECT INBOX")
    lines = await client.ok("w1 SEARCH YOUNGER 7200")
    assert lines[0] == b"* SEARCH 3\r\n"
    lines = await client.ok("w2 SEARCH OLDER 7200")
    assert lines[0] == b"* SEARCH 1 2\r\n"
    lines = await client.ok("w3 SEARCH OLDER 3600 YOUNGER 86400")
    assert lines[0] == b"* SEARCH 2\r\n"
    clock.advance(dt.timedelta(hours=2))
    lines = await client.ok("w4 SEARCH YOUNGER 7200")
    assert lines[0] == b"* SEARCH\r\n"
    lines = await client.ok("w5 SEARCH OLDER 86400")
    assert lines[0] == b"* SEARCH 1\r\n"
    await client.close()


async def test_imapclient_and_imaplib(server: ImapServer, store: MessageStore) -> None:
    for subject in ("one", "two", "three"):
        await put(store, ADDRESS, mail(subject))

    def talk() -> tuple[list[int], list[bytes], list[bytes], list[int]]:
        with IMAPClient("127.0.0.1", port=server.port, ssl=False, timeout=60) as client:
            client.login("demo", PASSWORD)
            assert b"ESEARCH" in client.capabilities()
            client.select_folder("INBOX")
            younger = client.search([b"YOUNGER", 3600 * 24 * 365 * 30])
            # imapclient has no ESEARCH API: its imaplib object sends the command.
            raw = client._imap
            typ, _ = raw._simple_command("UID", "SEARCH", "RETURN", "(MIN MAX ALL)", "ALL")
            assert typ == "OK"
            _, esearch = raw._untagged_response(typ, [], "ESEARCH")
            typ, _ = raw._simple_command("SEARCH", "RETURN", "(SAVE)", "SUBJECT", "t")
            assert typ == "OK"
            typ, fetched = raw._simple_command("UID", "FETCH", "$", "(UID)")
            _, fetched = raw._untagged_response(typ, fetched, "FETCH")
            return younger, esearch, fetched, client.search([b"UID", b"$"])

    younger, esearch, fetched, saved = await in_thread(talk)
    assert younger == [1, 2, 3]
    assert len(esearch) == 1 and esearch[0].startswith(b'(TAG "')
    assert esearch[0].endswith(b'") UID MIN 1 MAX 3 ALL 1:3')
    assert sorted(fetched) == [b"2 (UID 2)", b"3 (UID 3)"]
    assert saved == [2, 3]


async def test_aioimaplib(server: ImapServer, store: MessageStore) -> None:
    for subject in ("one", "two", "three"):
        await put(store, ADDRESS, mail(subject))
    client = aioimaplib.IMAP4(host="127.0.0.1", port=server.port, timeout=60)
    await client.wait_hello_from_server()
    await client.login("demo", PASSWORD)
    await client.select("INBOX")
    protocol = client.protocol
    command = Command(
        "SEARCH", protocol.new_tag(), "RETURN (COUNT MAX) SUBJECT t", untagged_resp_name="ESEARCH"
    )
    response = await protocol.execute(command)
    assert response.result == "OK"
    assert response.lines[0].endswith(b") MAX 3 COUNT 2")
    response = await client.search("RETURN", "(SAVE)", "SUBJECT", "o", charset=None)
    assert response.result == "OK"
    response = await client.search("$", charset=None)
    assert response.lines[0] == b"1 2"
    # Delivered at the clock's time: all are younger than a minute, none older.
    response = await client.search("YOUNGER", "60", charset=None)
    assert response.result == "OK" and response.lines[0] == b"1 2 3"
    response = await client.search("OLDER", "60", charset=None)
    assert response.result == "OK" and response.lines[0] == b""
    await client.logout()


async def test_first_condstore_command_reports_highestmodseq(
    server: ImapServer, store: MessageStore
) -> None:
    client = await RawClient.connect(server.port)
    await five_with_a_gap(store, client)
    status = await client.ok("h0 STATUS INBOX (HIGHESTMODSEQ)")
    highest = int(status[0].split(b"HIGHESTMODSEQ ")[1].split(b")")[0])
    lines = await client.ok("h1 FETCH 1 (MODSEQ)")
    assert f"* OK [HIGHESTMODSEQ {highest}] ".encode() in b"".join(lines)
    lines = await client.ok("h2 FETCH 1 (MODSEQ)")
    assert b"HIGHESTMODSEQ" not in b"".join(lines)
    await client.close()

"""CONTEXT=SEARCH (RFC 5267 section 4): PARTIAL results, searches kept up to date with
ADDTO and REMOVEFROM, CANCELUPDATE; on the wire, and pushed to an idling aioimaplib."""

from __future__ import annotations

import asyncio

import aioimaplib
from imapclient import IMAPClient

from releves_mailer.mailbox.imap.context import MAX_UPDATES
from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.store import MessageStore

from .conftest import DOMAIN, PASSWORD, RawClient, in_thread, put
from .mailmaker import mail

ADDRESS = f"demo@{DOMAIN}"


async def selected(server: ImapServer, store: MessageStore, count: int) -> RawClient:
    for number in range(1, count + 1):
        await put(store, ADDRESS, mail(f"s{number}", body=f"body {number}\r\n"))
    client = await RawClient.connect(server.port)
    await client.ok("s SELECT INBOX")
    return client


async def test_partial_results(server: ImapServer, store: MessageStore) -> None:
    client = await selected(server, store, 5)
    cases = {
        "SEARCH RETURN (PARTIAL 1:1) ALL": b"PARTIAL (1:1 1)",
        "SEARCH RETURN (PARTIAL 4:2) ALL": b"PARTIAL (2:4 2:4)",
        "SEARCH RETURN (PARTIAL 1:9) ALL": b"PARTIAL (1:9 1:5)",
        "SEARCH RETURN (PARTIAL 6:6) ALL": b"PARTIAL (6:6 NIL)",
        "SEARCH RETURN (PARTIAL 2:3) 1:2,4:5": b"PARTIAL (2:3 2,4)",
        "SEARCH RETURN (PARTIAL 1:2 COUNT) 2:5": b"COUNT 4 PARTIAL (1:2 2:3)",
        "SORT RETURN (PARTIAL 1:3) (REVERSE ARRIVAL SUBJECT) UTF-8 ALL": b"PARTIAL (1:3 1:3)",
        "SORT RETURN (PARTIAL 2:4) (REVERSE SUBJECT) UTF-8 ALL": b"PARTIAL (2:4 4,3,2)",
    }
    for number, (command, expected) in enumerate(cases.items()):
        lines = await client.ok(f"p{number} {command}")
        assert lines[0] == f'* ESEARCH (TAG "p{number}") '.encode() + expected + b"\r\n"
    await client.ok("s1 STORE 2 +FLAGS (\\Deleted)")
    await client.ok("s2 EXPUNGE")
    lines = await client.ok("u1 UID SEARCH RETURN (PARTIAL 2:2) ALL")
    assert lines[-2] == b'* ESEARCH (TAG "u1") UID PARTIAL (2:2 3)\r\n'
    for number, bad in enumerate(
        ["PARTIAL 1", "PARTIAL 1:*", "PARTIAL *:1", "PARTIAL 0:2", "PARTIAL 1:2 ALL"]
    ):
        lines = await client.command(f"b{number} SEARCH RETURN ({bad}) ALL")
        assert lines[-1].startswith(f"b{number} BAD ".encode()), lines
    await client.close()


async def test_update_follows_flags_expunges_and_appends(
    server: ImapServer, store: MessageStore
) -> None:
    client = await selected(server, store, 5)
    lines = await client.ok("u SEARCH RETURN (UPDATE) BODY body SEEN")
    assert lines[0] == b'* ESEARCH (TAG "u")\r\n'
    # This session's own STORE is reported before the STORE completes.
    lines = await client.ok("a STORE 1,2,4 +FLAGS.SILENT (\\Seen)")
    assert lines == [b'* ESEARCH (TAG "u") ADDTO (0 1:2,4)\r\n', b"a OK Store completed\r\n"]
    lines = await client.ok("b STORE 1,2 -FLAGS.SILENT (\\Seen)")
    assert lines[0] == b'* ESEARCH (TAG "u") REMOVEFROM (0 1:2)\r\n'
    # Expunged members leave before the EXPUNGE responses, numbered as the client knew them.
    await client.ok("c STORE 3:5 +FLAGS.SILENT (\\Deleted)")
    lines = await client.ok("d EXPUNGE")
    assert lines[:4] == [
        b'* ESEARCH (TAG "u") REMOVEFROM (0 4)\r\n',
        b"* 5 EXPUNGE\r\n",
        b"* 4 EXPUNGE\r\n",
        b"* 3 EXPUNGE\r\n",
    ]
    # A message appended by this session shows up after its EXISTS.
    raw = mail("new", body="body new\r\n")
    await client.send(f"e APPEND INBOX (\\Seen) {{{len(raw)}+}}\r\n".encode() + raw + b"\r\n")
    lines = await client.until_tagged(b"e")
    lines += await client.ok("f NOOP")
    exists = lines.index(b"* 3 EXISTS\r\n")
    assert lines.index(b'* ESEARCH (TAG "u") ADDTO (0 3)\r\n') > exists
    # A delivery from outside, with the right flags, is added too.
    await put(store, ADDRESS, mail("other", body="body other\r\n"), flags=["\\Seen"])
    lines = await client.ok("g NOOP")
    assert lines[0] == b"* 4 EXISTS\r\n" and lines[1].endswith(b" RECENT\r\n")
    assert lines[2:] == [b'* ESEARCH (TAG "u") ADDTO (0 4)\r\n', b"g OK NOOP completed\r\n"]
    # Once cancelled, nothing more.
    await client.ok('h CANCELUPDATE "u"')
    lines = await client.ok("i STORE 1 +FLAGS.SILENT (\\Seen)")
    assert lines == [b"i OK Store completed\r\n"]
    await client.close()


async def test_uid_update_and_several_searches(server: ImapServer, store: MessageStore) -> None:
    client = await selected(server, store, 6)
    await client.ok("a STORE 1 +FLAGS.SILENT (\\Deleted)")
    await client.ok("b EXPUNGE")  # UIDs 2..6 are sequence numbers 1..5
    await client.ok("c STORE 1,2 +FLAGS.SILENT (\\Seen)")
    lines = await client.ok("u1 UID SEARCH RETURN (UPDATE ALL) OR SEEN SUBJECT s6")
    assert lines[0] == b'* ESEARCH (TAG "u1") UID ALL 2:3,6\r\n'
    lines = await client.ok("u2 SEARCH RETURN (UPDATE COUNT) FLAGGED")
    assert lines[0] == b'* ESEARCH (TAG "u2") COUNT 0\r\n'
    lines = await client.ok("d STORE 3:5 +FLAGS.SILENT (\\Seen \\Flagged)")
    assert lines[:-1] == [
        b'* ESEARCH (TAG "u1") UID ADDTO (0 4:5)\r\n',
        b'* ESEARCH (TAG "u2") ADDTO (0 3:5)\r\n',
    ]
    lines = await client.ok("e STORE 1:5 -FLAGS.SILENT (\\Seen)")
    assert lines[0] == b'* ESEARCH (TAG "u1") UID REMOVEFROM (0 2:5)\r\n'
    assert len(lines) == 2
    # Errors: a tag in use, an unknown CANCELUPDATE tag.
    lines = await client.command("u1 SEARCH RETURN (UPDATE) ALL")
    assert lines[-1].startswith(b"u1 BAD ")
    lines = await client.command('f CANCELUPDATE "nope"')
    assert lines[-1].startswith(b"f BAD ")
    lines = await client.command("g SORT RETURN (UPDATE) (DATE) UTF-8 ALL")
    assert lines[-1].startswith(b"g OK ")  # another tag is fine, for SORT too
    # A new SELECT forgets every update.
    await client.ok("h SELECT INBOX")
    lines = await client.ok("i STORE 1:5 +FLAGS.SILENT (\\Seen)")
    assert lines == [b"i OK Store completed\r\n"]
    await client.close()


async def test_too_many_updates(server: ImapServer, store: MessageStore) -> None:
    client = await selected(server, store, 1)
    for number in range(MAX_UPDATES):
        await client.ok(f"u{number} SEARCH RETURN (UPDATE) SEEN")
    lines = await client.ok("over SEARCH RETURN (UPDATE) SEEN")
    assert b'* ESEARCH (TAG "over")\r\n' in lines
    assert any(line.startswith(b'* NO [NOUPDATE "over"]') for line in lines)
    lines = await client.ok("s STORE 1 +FLAGS.SILENT (\\Seen)")
    assert len(lines) == MAX_UPDATES + 1
    assert not any(b'"over"' in line for line in lines)
    await client.close()


async def test_update_pushed_to_an_idling_aioimaplib(
    server: ImapServer, store: MessageStore
) -> None:
    await put(store, ADDRESS, mail("first"))
    client = aioimaplib.IMAP4(host="127.0.0.1", port=server.port, timeout=60)
    await client.wait_hello_from_server()
    await client.login("demo", PASSWORD)
    await client.select("INBOX")
    response = await client.search("RETURN", "(UPDATE)", "SUBJECT", "wanted", charset=None)
    assert response.result == "OK"
    idle = await client.idle_start(timeout=60)
    await put(store, ADDRESS, mail("wanted"))
    pushed: list[bytes] = []
    while not any(b"ADDTO" in line for line in pushed):
        pushed += await asyncio.wait_for(client.wait_server_push(), 60)
    client.idle_done()
    await asyncio.wait_for(idle, 60)
    await client.logout()
    assert any(line.endswith(b"ADDTO (0 2)") for line in pushed)


async def test_imapclient_sees_context_search(server: ImapServer, store: MessageStore) -> None:
    for number in range(3):
        await put(store, ADDRESS, mail(f"m{number}"))

    def talk() -> tuple[bool, list[tuple[bytes, bytes]]]:
        with IMAPClient("127.0.0.1", port=server.port, ssl=False, timeout=60) as client:
            client.login("demo", PASSWORD)
            client.select_folder("INBOX")
            raw = client._imap
            typ, _ = raw._simple_command("SEARCH", "RETURN", "(UPDATE)", "FLAGGED")
            assert typ == "OK"
            client.add_flags([2, 3], [b"\\Flagged"], silent=True)
            _, esearch = raw._untagged_response("OK", [], "ESEARCH")
            return client.has_capability("CONTEXT=SEARCH"), esearch

    advertised, esearch = await in_thread(talk)
    assert advertised
    assert esearch[-1].endswith(b") ADDTO (0 2:3)")


async def test_sort_update_tells_positions(server: ImapServer, store: MessageStore) -> None:
    # Subjects s1..s6 delivered in that order; sorted by REVERSE SUBJECT: 6 5 4 3 2 1.
    client = await selected(server, store, 6)
    lines = await client.ok("u SORT RETURN (UPDATE ALL) (REVERSE SUBJECT) UTF-8 UNSEEN")
    assert lines[0] == b'* ESEARCH (TAG "u") ALL 6,5,4,3,2,1\r\n'
    # 5 and 2 leave (positions 2, then 4 once 5 is gone), 3 then leaves and comes back.
    lines = await client.ok("a STORE 2,5 +FLAGS.SILENT (\\Seen)")
    assert lines[0] == b'* ESEARCH (TAG "u") REMOVEFROM (2 5 4 2)\r\n'
    lines = await client.ok("b STORE 5,2 -FLAGS.SILENT (\\Seen)")
    assert lines[0] == b'* ESEARCH (TAG "u") ADDTO (2 5 5 2)\r\n'
    # Expunged: before the EXPUNGE responses, with the positions and numbers known then.
    await client.ok("c STORE 4 +FLAGS.SILENT (\\Deleted)")
    lines = await client.ok("d EXPUNGE")
    assert lines[:2] == [b'* ESEARCH (TAG "u") REMOVEFROM (3 4)\r\n', b"* 4 EXPUNGE\r\n"]
    # A delivered message goes where the order puts it: s0 sorts last.
    await put(store, ADDRESS, mail("s0"))
    lines = await client.ok("e NOOP")
    assert lines[0] == b"* 6 EXISTS\r\n"
    assert lines[-2] == b'* ESEARCH (TAG "u") ADDTO (6 6)\r\n'
    await client.ok("f STORE 6 +FLAGS.SILENT (\\Seen)")
    lines = await client.ok("g UID SORT RETURN (UPDATE) (SUBJECT) UTF-8 UNSEEN")
    lines = await client.ok("h STORE 6 -FLAGS.SILENT (\\Seen)")
    assert lines[:-1] == [
        b'* ESEARCH (TAG "u") ADDTO (6 6)\r\n',
        b'* ESEARCH (TAG "g") UID ADDTO (1 7)\r\n',
    ]
    await client.close()

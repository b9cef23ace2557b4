"""SORT (RFC 5256), SORT=DISPLAY (RFC 5957) and ESORT (RFC 5267): the base subject, the
sent date, the wire format and errors, and imapclient, imaplib and aioimaplib."""

from __future__ import annotations

import datetime as dt
import imaplib

import aioimaplib
import pytest
from aioimaplib import Command
from imapclient import IMAPClient

from releves_mailer.mailbox.contracts import MessageRecord
from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.imap.sort import sent_date
from releves_mailer.mailbox.imap.subject import base_subject
from releves_mailer.mailbox.store import MessageStore

from .conftest import DOMAIN, PASSWORD, RawClient, in_thread, put
from .mailmaker import mail

ADDRESS = f"demo@{DOMAIN}"


@pytest.mark.parametrize(
    ("subject", "base", "reply"),
    [
        (b"Hello", "Hello", False),
        (b"Re: Hello", "Hello", True),
        (b"RE: re:   Hello  ", "Hello", True),
        (b"Fwd: Hello", "Hello", True),
        (b"FW: Hello", "Hello", True),
        (b"Re[2]: Hello", "Hello", True),
        (b"Re [list]: Hello", "Hello", True),
        (b"[list] Re: Hello", "Hello", True),
        (b"[list] Hello", "Hello", False),
        (b"[list]", "[list]", False),  # the blob stays when nothing would be left
        (b"[a][b] Re: [c] Hello", "Hello", True),
        (b"Hello (fwd)", "Hello", True),
        (b"Hello (FWD) (fwd)  ", "Hello", True),
        (b"[Fwd: Re: Hello]", "Hello", True),
        (b"[fwd: [fwd: Hello (fwd)]]", "Hello", True),
        (b"Re: [fwd: Hello] (fwd)", "Hello", True),
        (b"Hello\t\r\n  world", "Hello world", False),
        (b"=?utf-8?q?Re=3A_Relev=C3=A9?=", "Relevé", True),
        (b"Review: Hello", "Review: Hello", False),
        (b"Re:", "", True),
        (b"", "", False),
    ],
)
def test_base_subject(subject: bytes, base: str, reply: bool) -> None:
    assert base_subject(subject) == (base, reply)


def test_sent_date_is_utc_and_falls_back_to_the_internal_date() -> None:
    arrived = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    paris = MessageRecord(1, envelope=b'("Tue, 10 Mar 2026 10:00:00 +0100" NIL)')
    utc = MessageRecord(2, envelope=b'("10 Mar 2026 09:00 GMT" NIL)')
    none = MessageRecord(4, envelope=b"(NIL NIL)", internal_date=arrived)
    junk = MessageRecord(5, envelope=b'("not a date" NIL)', internal_date=arrived)
    assert (
        sent_date(paris)
        == sent_date(utc)
        == int(dt.datetime(2026, 3, 10, 9, tzinfo=dt.UTC).timestamp())
    )
    assert sent_date(none) == sent_date(junk) == int(arrived.timestamp())


SORTABLE = [
    # seq 1..6
    mail(
        "Re: Banana",
        "Tue, 10 Mar 2026 10:00:00 +0100",  # 09:00 UTC
        sender="Zoe <zoe@example.org>",
        to="bob@example.org",
        cc="carol@example.org",
        body="x" * 300,
    ),
    mail(
        "apple",
        "Tue, 10 Mar 2026 08:30:00 -0100",  # 09:30 UTC
        sender='"alice" <bob@example.org>',
        to="Zed <adam@example.org>",
        body="x" * 10,
    ),
    mail("[list] Cherry", "Tue, 10 Mar 2026 08:00:00 +0000", sender="mike@example.org"),
    mail(
        "Fwd: apple",
        "Tue, 10 Mar 2026 09:00:00 +0000",  # ties with message 1
        sender="=?utf-8?q?=C3=89mile?= <emile@example.org>",
        cc="Aaron <aaron@example.org>",
        body="x" * 100,
    ),
    mail("banana (fwd)", None, sender="bob@example.org", to=None),  # internal date
    mail("Cherry", "garbage date", sender="Bob <BOB@example.org>", body="x" * 50),
]


async def sorted_box(store: MessageStore, client: RawClient) -> None:
    for raw in SORTABLE:
        await put(store, ADDRESS, raw)
    await client.ok("s0 SELECT INBOX")


async def sort(client: RawClient, command: str) -> list[int]:
    lines = await client.ok("t " + command)
    assert lines[0].startswith(b"* SORT"), lines
    return [int(n) for n in lines[0].split()[2:]]


async def test_sort_orders(server: ImapServer, store: MessageStore) -> None:
    client = await RawClient.connect(server.port)
    await sorted_box(store, client)
    # Delivered "now" (2026-03-10 09:30 UTC in the tests' clock): 5 and 6 take it.
    assert await sort(client, "SORT (DATE) UTF-8 ALL") == [3, 1, 4, 2, 5, 6]
    assert await sort(client, "SORT (REVERSE DATE) UTF-8 ALL") == [2, 5, 6, 1, 4, 3]
    assert await sort(client, "SORT (ARRIVAL) UTF-8 ALL") == [1, 2, 3, 4, 5, 6]
    assert await sort(client, "SORT (REVERSE ARRIVAL) UTF-8 ALL") == [1, 2, 3, 4, 5, 6]
    assert (await sort(client, "SORT (SIZE) UTF-8 ALL"))[-1] == 1
    assert await sort(client, "SORT (SUBJECT) UTF-8 ALL") == [2, 4, 1, 5, 3, 6]
    assert await sort(client, "SORT (SUBJECT REVERSE DATE) UTF-8 ALL") == [2, 4, 5, 1, 6, 3]
    assert await sort(client, "SORT (FROM) UTF-8 ALL") == [2, 5, 6, 4, 3, 1]
    assert await sort(client, "SORT (TO DATE) UTF-8 ALL") == [5, 2, 1, 3, 4, 6]
    assert await sort(client, "SORT (CC) UTF-8 ALL") == [2, 3, 5, 6, 4, 1]
    # DISPLAYFROM: the decoded display name, else the address.
    assert await sort(client, "SORT (DISPLAYFROM) UTF-8 ALL") == [2, 6, 5, 3, 1, 4]
    assert await sort(client, "SORT (DISPLAYTO) UTF-8 ALL") == [5, 1, 3, 4, 6, 2]
    # The search program selects; UID SORT answers UIDs.
    assert await sort(client, "SORT (SUBJECT) US-ASCII NOT SUBJECT apple") == [1, 5, 3, 6]
    await client.ok("x STORE 2 +FLAGS (\\Deleted)")
    await client.ok("x EXPUNGE")
    assert await sort(client, "UID SORT (DATE) UTF-8 ALL") == [3, 1, 4, 5, 6]
    assert await sort(client, "SORT (DATE) UTF-8 ALL") == [2, 1, 3, 4, 5]
    await client.close()


async def test_esort_and_searchres(server: ImapServer, store: MessageStore) -> None:
    client = await RawClient.connect(server.port)
    await sorted_box(store, client)
    lines = await client.ok("e1 UID SORT RETURN (MIN MAX COUNT ALL) (DATE) UTF-8 ALL")
    assert lines[0] == b'* ESEARCH (TAG "e1") UID MIN 3 MAX 6 COUNT 6 ALL 3,1,4,2,5:6\r\n'
    lines = await client.ok("e2 SORT RETURN () (REVERSE SUBJECT) UTF-8 ALL")
    assert lines[0] == b'* ESEARCH (TAG "e2") ALL 3,6,1,5,2,4\r\n'
    lines = await client.ok("e3 SORT RETURN (COUNT) (SUBJECT) UTF-8 SUBJECT nothing")
    assert lines[0] == b'* ESEARCH (TAG "e3") COUNT 0\r\n'
    lines = await client.ok("e4 SORT RETURN (SAVE) (SUBJECT) UTF-8 SUBJECT cherry")
    assert lines == [lines[-1]]
    lines = await client.ok("e5 SEARCH $")
    assert lines[0] == b"* SEARCH 3 6\r\n"
    assert await sort(client, "SORT (REVERSE DATE) UTF-8 $") == [6, 3]
    await client.close()


async def test_sort_errors(server: ImapServer, store: MessageStore) -> None:
    client = await RawClient.connect(server.port)
    await sorted_box(store, client)
    for number, command in enumerate(
        [
            "SORT (DATE) ALL",  # no charset
            "SORT (BOGUS) UTF-8 ALL",
            "SORT (REVERSE) UTF-8 ALL",
            "SORT (REVERSE REVERSE DATE) UTF-8 ALL",
            "SORT () UTF-8 ALL",
            "SORT DATE UTF-8 ALL",
            "SORT (DATE) UTF-8",
            "SORT RETURN (BOGUS) (DATE) UTF-8 ALL",
        ]
    ):
        lines = await client.command(f"b{number} {command}")
        assert lines[-1].startswith(f"b{number} BAD ".encode()), (command, lines)
    lines = await client.command("n1 SORT (DATE) ISO-8859-1 ALL")
    assert lines[-1].startswith(b"n1 NO [BADCHARSET (UTF-8 US-ASCII)]")
    await client.ok("u UNSELECT")
    lines = await client.command("n2 SORT (DATE) UTF-8 ALL")
    assert lines[-1].startswith(b"n2 BAD ")
    await client.close()


async def test_sort_with_imapclient_imaplib_and_aioimaplib(
    server: ImapServer, store: MessageStore
) -> None:
    for raw in SORTABLE:
        await put(store, ADDRESS, raw)

    def with_imapclient() -> tuple[list[int], list[int]]:
        with IMAPClient("127.0.0.1", port=server.port, ssl=False, timeout=60) as client:
            client.login("demo", PASSWORD)
            assert client.has_capability("SORT")
            client.select_folder("INBOX")
            by_subject = client.sort(["SUBJECT", "REVERSE DATE"])
            by_date = client.sort("REVERSE DATE", ["NOT", "SUBJECT", "cherry"])
            return by_subject, by_date

    def with_imaplib() -> list[bytes]:
        client = imaplib.IMAP4("127.0.0.1", server.port, timeout=60)
        client.login("demo", PASSWORD)
        client.select("INBOX")
        typ, data = client.uid("SORT", "(DISPLAYFROM)", "UTF-8", "ALL")
        assert typ == "OK"
        client.logout()
        return data

    by_subject, by_date = await in_thread(with_imapclient)
    assert by_subject == [2, 4, 5, 1, 6, 3]
    assert by_date == [2, 5, 1, 4]
    assert await in_thread(with_imaplib) == [b"2 6 5 3 1 4"]

    client = aioimaplib.IMAP4(host="127.0.0.1", port=server.port, timeout=60)
    await client.wait_hello_from_server()
    await client.login("demo", PASSWORD)
    await client.select("INBOX")
    protocol = client.protocol
    response = await protocol.execute(
        Command("SORT", protocol.new_tag(), "(REVERSE SIZE)", "UTF-8", "ALL", prefix="UID")
    )
    assert response.result == "OK"
    assert response.lines[0].split()[0] == b"1"
    await client.logout()


async def test_a_recreated_folder_sorts_by_its_own_dates_and_sizes(
    server: ImapServer, store: MessageStore
) -> None:
    # SQLite gives a deleted folder's id to the next folder: the store's cache of internal
    # dates and sizes must not answer for the old messages.
    client = await RawClient.connect(server.port)
    for round_, bodies in enumerate((["aaaa", "b", "cc"], ["d", "eeee", "ff"])):
        await client.ok(f"c{round_} CREATE Box")
        await client.ok(f"s{round_} SELECT Box")
        for day, body in zip((3, 1, 2) if round_ else (1, 2, 3), bodies, strict=True):
            raw = mail("x", body=body)
            await client.send(
                f'a APPEND Box "0{day}-Mar-2026 10:00:00 +0000" {{{len(raw)}+}}\r\n'.encode()
                + raw
                + b"\r\n"
            )
            assert b"a OK" in (await client.until_tagged(b"a"))[-1]
        await client.ok(f"n{round_} NOOP")
        arrival = await sort(client, "SORT (ARRIVAL) UTF-8 ALL")
        size = await sort(client, "SORT (SIZE) UTF-8 ALL")
        larger = (await client.ok(f"l{round_} SEARCH LARGER {len(mail('x', body='ccc'))}"))[0]
        await client.ok(f"u{round_} UNSELECT")
        await client.ok(f"d{round_} DELETE Box")
        if round_ == 0:
            assert (arrival, size, larger) == ([1, 2, 3], [2, 3, 1], b"* SEARCH 1\r\n")
        else:
            assert (arrival, size, larger) == ([2, 3, 1], [1, 3, 2], b"* SEARCH 2\r\n")
    await client.close()


def test_base_subject_of_crafted_subjects() -> None:
    # Hundreds of blobs and leaders are read once each; what follows them is found.
    assert base_subject(b"[a]" * 600 + b"Hello") == ("Hello", False)
    assert base_subject(b"[a] Re: " * 200 + b"Hello" + b" (fwd)" * 20) == ("Hello", True)
    assert base_subject(b"[fwd: " * 250 + b"x" + b"]" * 250) == ("x", True)
    # Past MAX_SUBJECT characters the rest does not count: only leaders were left here.
    assert base_subject(b"Re: " * 100_000 + b"Hello") == ("", True)

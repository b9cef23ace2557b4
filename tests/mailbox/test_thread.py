"""THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256): the algorithms step by step on
hand-made messages, then over the wire with imapclient, imaplib and aioimaplib."""

from __future__ import annotations

import imaplib

import aioimaplib
import pytest
from aioimaplib import Command
from imapclient import IMAPClient

from releves_mailer.mailbox.contracts import MessageRecord
from releves_mailer.mailbox.imap import sort as sort_module
from releves_mailer.mailbox.imap import thread as thread_module
from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.imap.thread import (
    MAX_REFERENCES,
    Message,
    format_threads,
    message_of,
    ordered_subject,
    references,
)
from releves_mailer.mailbox.store import MessageStore

from .conftest import DOMAIN, PASSWORD, RawClient, in_thread, put
from .mailmaker import mail

ADDRESS = f"demo@{DOMAIN}"


def message(
    number: int,
    subject: str,
    message_id: str | None = None,
    refs: tuple[str, ...] = (),
    *,
    reply: bool = False,
    date: int | None = None,
) -> Message:
    return Message(
        number,
        number,
        number * 60 if date is None else date,
        subject.upper().encode(),
        reply,
        message_id.encode() if message_id else None,
        [r.encode() for r in refs],
    )


def test_references_links_replies_and_keeps_dummies_of_siblings() -> None:
    messages = [
        message(1, "A", "1@x"),
        message(2, "A", "2@x", ("1@x",), reply=True),
        message(3, "A", "3@x", ("1@x", "2@x"), reply=True),
        message(4, "A", "4@x", ("1@x",), reply=True),
        message(5, "B", "5@x"),
        message(6, "C", "6@x", ("gone@x",), reply=True),
        message(7, "C", "7@x", ("gone@x",), reply=True),
        message(8, "B", "8@x", reply=True),  # no references: joins 5 by its subject
        message(9, "D", "1@x"),  # a duplicate Message-ID: a thread of its own
        message(10, "", None),
    ]
    assert format_threads(references(messages)) == b"(1 (2 3)(4))(5 8)((6)(7))(9)(10)"


def test_references_truncated_chain_and_missing_parent() -> None:
    # 3 references 1 then 2 but 2 is not in the result: a dummy that is pruned, 3 is
    # promoted under 1. 4 names only 3 in its truncated References.
    messages = [
        message(1, "topic", "1@x"),
        message(3, "topic", "3@x", ("1@x", "2@x"), reply=True),
        message(4, "topic", "4@x", ("3@x",), reply=True),
        message(5, "other", "5@x", ("2@x",), reply=True),
    ]
    assert format_threads(references(messages)) == b"(1 (3 4)(5))"


def test_references_never_loops_and_last_reference_wins() -> None:
    messages = [
        message(1, "x", "11@x", ("12@x",)),
        message(2, "y", "12@x", ("11@x",)),  # would make a loop: 12 stays the root
        message(3, "z", "13@x", ("11@x", "11@x")),
        message(4, "w", "14@x", ("14@x",)),  # refers to itself
    ]
    assert format_threads(references(messages)) == b"(2 1 3)(4)"


def test_references_merges_threads_by_subject() -> None:
    messages = [
        message(1, "same", "1@x", date=100),
        message(2, "same", "2@x", date=50),  # neither a reply: a dummy holds both
        message(3, "other", "3@x", date=10),
        message(4, "other", "4@x", ("9@x",), reply=True, date=20),  # under dummy 9@x
        message(5, "", "5@x", date=5),  # empty subjects are never merged
        message(6, "", "6@x", date=6),
    ]
    assert format_threads(references(messages)) == b"(5)(6)(3 4)((2)(1))"


def test_ordered_subject() -> None:
    messages = [
        message(1, "A"),
        message(2, "A", reply=True),
        message(3, "B", date=10),
        message(4, "A", reply=True, date=30),
        message(5, "B", reply=True, date=400),
        message(6, "C", date=1000),
    ]
    assert format_threads(ordered_subject(messages)) == b"(3 5)(4 (1)(2))(6)"


def box() -> list[bytes]:
    minute = "Tue, 10 Mar 2026 10:{:02d}:00 +0000".format
    return [
        mail("A", minute(1), message_id="<1@x>"),
        mail("Re: A", minute(2), message_id="<2@x>", references="<1@x>"),
        mail("Re: A", minute(3), message_id="<3@x>", references="<1@x>\r\n <2@x>"),
        mail("RE: [list] a", minute(4), message_id="<4@x>", in_reply_to="<1@x> <9@x>"),
        mail("B", minute(5), message_id="<5@x>"),
        mail("Re: C", minute(6), message_id="<6@x>", in_reply_to="<gone@x>"),
        mail("Re: C", minute(7), message_id="<7@x>", references="<gone@x>"),
        mail("Fwd: B", minute(8), message_id="<8@x>"),
        mail("D", minute(9), message_id="<1@x>"),
        mail("", minute(10)),
    ]


async def test_thread_over_the_wire(server: ImapServer, store: MessageStore) -> None:
    for raw in box():
        await put(store, ADDRESS, raw)
    client = await RawClient.connect(server.port)
    await client.ok("a SELECT INBOX")
    lines = await client.ok("b THREAD REFERENCES UTF-8 ALL")
    assert lines[0] == b"* THREAD (1 (2 3)(4))(5 8)((6)(7))(9)(10)\r\n"
    lines = await client.ok("c THREAD ORDEREDSUBJECT UTF-8 ALL")
    assert lines[0] == b"* THREAD (1 (2)(3)(4))(5 8)(6 7)(9)(10)\r\n"
    lines = await client.ok("d THREAD REFERENCES US-ASCII NOT SUBJECT b")
    assert lines[0] == b"* THREAD (1 (2 3)(4))((6)(7))(9)(10)\r\n"
    lines = await client.ok("e THREAD REFERENCES UTF-8 SUBJECT nothing")
    assert lines[0] == b"* THREAD\r\n"
    await client.ok("f STORE 1 +FLAGS (\\Deleted)")
    await client.ok("g EXPUNGE")
    # With 1 gone, 9 is the only <1@x> left: the replies to 1 now hang under it.
    lines = await client.ok("h UID THREAD REFERENCES UTF-8 ALL")
    assert lines[0] == b"* THREAD (5 8)((6)(7))(9 (2 3)(4))(10)\r\n"
    lines = await client.ok("i THREAD REFERENCES UTF-8 ALL")
    assert lines[0] == b"* THREAD (4 7)((5)(6))(8 (1 2)(3))(9)\r\n"
    for tag, command in [
        ("j", "THREAD BOGUS UTF-8 ALL"),
        ("k", "THREAD REFERENCES ALL"),
        ("l", "THREAD (REFERENCES) UTF-8 ALL"),
        ("m", "THREAD REFERENCES UTF-8 FOO"),
    ]:
        lines = await client.command(f"{tag} {command}")
        assert lines[-1].startswith(f"{tag} BAD ".encode()), (command, lines)
    lines = await client.command("n THREAD REFERENCES ISO-8859-15 ALL")
    assert lines[-1].startswith(b"n NO [BADCHARSET")
    await client.close()


async def test_thread_with_imapclient_imaplib_and_aioimaplib(
    server: ImapServer, store: MessageStore
) -> None:
    for raw in box():
        await put(store, ADDRESS, raw)

    def with_imapclient() -> tuple[object, object]:
        with IMAPClient("127.0.0.1", port=server.port, ssl=False, timeout=60) as client:
            client.login("demo", PASSWORD)
            assert client.has_capability("THREAD=REFERENCES")
            client.select_folder("INBOX")
            return client.thread("REFERENCES"), client.thread("ORDEREDSUBJECT", ["SUBJECT", "C"])

    def with_imaplib() -> list[bytes]:
        client = imaplib.IMAP4("127.0.0.1", server.port, timeout=60)
        client.login("demo", PASSWORD)
        client.select("INBOX")
        typ, data = client.uid("THREAD", "REFERENCES", "UTF-8", "SUBJECT", "A")
        assert typ == "OK"
        client.logout()
        return data

    threads, by_subject = await in_thread(with_imapclient)
    assert threads == ((1, (2, 3), (4,)), (5, 8), ((6,), (7,)), (9,), (10,))
    assert by_subject == ((6, 7),)
    assert await in_thread(with_imaplib) == [b"(1 (2 3)(4))"]

    client = aioimaplib.IMAP4(host="127.0.0.1", port=server.port, timeout=60)
    await client.wait_hello_from_server()
    await client.login("demo", PASSWORD)
    await client.select("INBOX")
    protocol = client.protocol
    response = await protocol.execute(
        Command("THREAD", protocol.new_tag(), "ORDEREDSUBJECT", "UTF-8", "ALL", prefix="UID")
    )
    assert response.result == "OK"
    assert response.lines[0] == b"(1 (2)(3)(4))(5 8)(6 7)(9)(10)"
    await client.logout()


def test_deep_threads_need_no_recursion() -> None:
    # 5,000 replies each to the one before, and a branch at every level of a second thread:
    # far deeper than Python's recursion limit.
    count = 5000
    chain = [message(1, "deep", "c1@x")]
    chain += [
        message(n, "deep", f"c{n}@x", (f"c{n - 1}@x",), reply=True) for n in range(2, count + 1)
    ]
    assert format_threads(references(chain)) == (
        b"(" + b" ".join(b"%d" % n for n in range(1, count + 1)) + b")"
    )
    branchy = [message(1, "tree", "t1@x")]
    for n in range(2, 2 * count, 2):
        parent = max(1, n - 2)
        branchy.append(message(n, "tree", f"t{n}@x", (f"t{parent}@x",), reply=True))
        branchy.append(message(n + 1, "tree", f"t{n + 1}@x", (f"t{parent}@x",), reply=True))
    text = format_threads(references(branchy))
    assert text.startswith(b"(1 (2 (4 (6 ") and text.count(b"(") == text.count(b")")
    assert text.count(b"(") == len(branchy)  # one per message: every reply has a sibling


async def test_large_results_are_threaded_and_sorted_in_a_worker(
    server: ImapServer, store: MessageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Below the threshold everything runs in the loop; with it at 0 the worker path runs.
    monkeypatch.setattr(thread_module, "_IN_LOOP", 0)
    monkeypatch.setattr(sort_module, "_IN_LOOP", 0)
    for raw in box():
        await put(store, ADDRESS, raw)
    client = await RawClient.connect(server.port)
    await client.ok("a SELECT INBOX")
    lines = await client.ok("b THREAD REFERENCES UTF-8 ALL")
    assert lines[0] == b"* THREAD (1 (2 3)(4))(5 8)((6)(7))(9)(10)\r\n"
    lines = await client.ok("c SORT (REVERSE DATE) UTF-8 ALL")
    assert lines[0] == b"* SORT 10 9 8 7 6 5 4 3 2 1\r\n"
    await client.close()


def test_only_the_last_references_count() -> None:
    ids = " ".join(f"<r{n}@x>" for n in range(MAX_REFERENCES + 50))
    header = f"Subject: x\r\nMessage-ID: <me@x>\r\nReferences: {ids}\r\n".encode()
    parsed = message_of(MessageRecord(1, header=header), 1, 1)
    assert len(parsed.references) == MAX_REFERENCES
    assert parsed.references[-1] == f"r{MAX_REFERENCES + 49}@x".encode()
    assert parsed.references[0] == b"r50@x"

"""FETCH (sections, partials, BODYSTRUCTURE, ENVELOPE), SEARCH, APPEND and \\Recent."""

from __future__ import annotations

import imaplib

import pytest

from releves_mailer.mailbox.contracts import FolderChanges
from releves_mailer.mailbox.imap import mime
from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.sink import MailDelivery
from releves_mailer.mailbox.store import MessageStore

from .conftest import DOMAIN, PASSWORD, RawClient, in_thread, put, sample_message

ADDRESS = f"demo@{DOMAIN}"

NESTED = (
    b'From: "Doe, John" <john@example.org>\r\n'
    b"To: undisclosed-recipients:;\r\n"
    b"Subject: =?utf-8?q?Relev=C3=A9?= nested\r\n"
    b"Date: Mon, 09 Mar 2026 23:30:00 -0200\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=outer\r\n"
    b"\r\n"
    b"preamble\r\n"
    b"--outer\r\n"
    b'Content-Type: multipart/alternative; boundary="inner"\r\n'
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"plain body\r\n"
    b"--inner\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>html body</p>\r\n"
    b"--inner--\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"From: inner@example.org\r\n"
    b"Subject: attached\r\n"
    b"\r\n"
    b"inner text\r\n"
    b"--outer\r\n"
    b'Content-Type: application/octet-stream; name="r.cfonb"\r\n'
    b'Content-Disposition: attachment; filename="r.cfonb"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"MDEyMzQ1Njc4OQ==\r\n"
    b"--outer--\r\n"
)


def test_bodystructure_of_nested_multiparts_and_message_rfc822() -> None:
    part = mime.parse_message(NESTED)
    assert mime.bodystructure(part, extended=False) == (
        b'((("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 10 1)'
        b'("text" "html" ("charset" "utf-8") NIL NIL "7bit" 16 1) "alternative")'
        b'("message" "rfc822" NIL NIL NIL "7bit" 56 '
        b'(NIL "attached" ((NIL NIL "inner" "example.org")) ((NIL NIL "inner" "example.org")) '
        b'((NIL NIL "inner" "example.org")) NIL NIL NIL NIL NIL) '
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 1) 4)'
        b'("application" "octet-stream" ("name" "r.cfonb") NIL NIL "base64" 16) "mixed")'
    )
    extended = mime.bodystructure(part)
    assert b'("attachment" ("filename" "r.cfonb"))' in extended
    assert b'"mixed" ("boundary" "outer") NIL NIL NIL)' in extended
    assert mime.envelope(part).startswith(
        b'("Mon, 09 Mar 2026 23:30:00 -0200" "=?utf-8?q?Relev=C3=A9?= nested" '
        b'(("Doe, John" NIL "john" "example.org"))'
    )
    assert b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL))' in mime.envelope(
        part
    ).replace(b") (", b")(")
    assert mime.section_bytes(part, [1, 2], "") == b"<p>html body</p>"
    assert mime.section_bytes(part, [2], "HEADER") == (
        b"From: inner@example.org\r\nSubject: attached\r\n\r\n"
    )
    assert mime.section_bytes(part, [2, 1], "") == b"inner text"
    assert mime.section_bytes(part, [3], "MIME").startswith(b"Content-Type: application")
    assert mime.section_bytes(part, [], "HEADER.FIELDS", [b"subject"]) == (
        b"Subject: =?utf-8?q?Relev=C3=A9?= nested\r\n\r\n"
    )
    assert mime.section_bytes(part, [9], "") == b""


async def test_fetch_sections_partials_and_seen(server: ImapServer, store: MessageStore) -> None:
    await put(store, ADDRESS, NESTED)
    client = await RawClient.connect(server.port)
    await client.ok("a SELECT INBOX")
    lines = await client.ok("b FETCH 1 (BODY.PEEK[1.1]<0.5> BODY.PEEK[3] RFC822.SIZE)")
    assert b"BODY[1.1]<0> {5}\r\nplain" in lines[0]
    assert b"BODY[3] {16}\r\nMDEyMzQ1Njc4OQ==" in lines[0]
    assert b"RFC822.SIZE %d" % len(NESTED) in lines[0]
    lines = await client.ok("c FETCH 1 (FLAGS)")
    assert b"\\Seen" not in lines[0]
    lines = await client.ok("d FETCH 1 (BODY[]<10000.5>)")
    assert b"BODY[]<10000> {0}" in lines[0] and b"\\Seen" in lines[0]
    lines = await client.ok("e FETCH 1 (BODYSTRUCTURE ENVELOPE BODY)")
    assert b"BODYSTRUCTURE (((" in lines[0]
    lines = await client.ok("f FETCH 1 (RFC822.HEADER RFC822.TEXT)")
    assert b"RFC822.TEXT {" in lines[0]
    lines = await client.ok("g FETCH 1 (BODY.PEEK[HEADER.FIELDS.NOT (FROM TO DATE SUBJECT)])")
    assert b"MIME-Version" in lines[0] and b"From:" not in lines[0]
    lines = await client.ok("h FETCH 1 FAST")
    assert b"INTERNALDATE" in lines[0]
    await client.close()


async def test_search_keys(server: ImapServer, store: MessageStore) -> None:
    subjects = ["alpha", "beta", "gamma", "delta", "epsilon"]
    for index, subject in enumerate(subjects):
        raw = sample_message(subject=subject, body=f"body number {index} caf\u00e9\r\n")
        await put(store, ADDRESS, raw, flags=["\\Seen"] if index % 2 else [])
    await put(store, ADDRESS, NESTED)
    client = await RawClient.connect(server.port)
    await client.ok("a SELECT INBOX")

    async def search(criteria: str) -> list[int]:
        lines = await client.ok(f"s {criteria}")
        return [int(n) for n in lines[0].split()[2:]]

    assert await search("SEARCH ALL") == [1, 2, 3, 4, 5, 6]
    assert await search("SEARCH OR SUBJECT alpha SUBJECT gamma") == [1, 3]
    assert await search("SEARCH NOT SEEN") == [1, 3, 5, 6]
    assert await search("SEARCH 2:* NOT SEEN") == [3, 5, 6]
    assert await search("UID SEARCH UID 4:*") == [4, 5, 6]
    assert await search("UID SEARCH UID *") == [6]
    assert await search("SEARCH UID 2,3,5 OR SEEN SUBJECT gamma") == [2, 3]
    assert await search("SEARCH (OR SUBJECT beta SUBJECT delta) UNSEEN") == []
    assert await search('SEARCH CHARSET UTF-8 BODY "café"') == [1, 2, 3, 4, 5]
    assert await search('SEARCH SUBJECT "relevé"') == [6]
    assert await search('SEARCH TEXT "html body"') == [6]
    assert await search('SEARCH FROM "doe, john"') == [6]
    assert await search("SEARCH HEADER Message-ID m1@example.org") == [1, 2, 3, 4, 5]
    assert await search("SEARCH SENTON 9-Mar-2026") == [6]
    assert await search("SEARCH SENTSINCE 10-Mar-2026") == [1, 2, 3, 4, 5]
    assert await search("SEARCH SINCE 1-Jan-2026 BEFORE 1-Jan-2027") == [1, 2, 3, 4, 5, 6]
    assert await search(f"SEARCH LARGER {len(NESTED) - 1}") == [6]
    assert await search("SEARCH RECENT NEW") == [1, 3, 5, 6]
    lines = await client.command("s SEARCH CHARSET KOI8-R ALL")
    assert b"[BADCHARSET" in lines[-1]
    await client.close()


async def test_recent_goes_to_the_first_session_only(
    server: ImapServer, store: MessageStore
) -> None:
    await put(store, ADDRESS, sample_message())
    one = await RawClient.connect(server.port)
    lines = await one.ok("a SELECT INBOX")
    assert b"* 1 RECENT\r\n" in lines
    two = await RawClient.connect(server.port)
    lines = await two.ok("a SELECT INBOX")
    assert b"* 0 RECENT\r\n" in lines
    await put(store, ADDRESS, sample_message())
    lines = await two.ok("b NOOP")
    assert b"* 2 EXISTS\r\n" in lines and b"* 1 RECENT\r\n" in lines
    lines = await one.ok("b NOOP")
    assert b"* 2 EXISTS\r\n" in lines and b"* 1 RECENT\r\n" in lines
    lines = await one.ok("c FETCH 1:2 FLAGS")
    assert b"\\Recent" in lines[0] and b"\\Recent" not in lines[1]
    await one.close()
    await two.close()


async def test_imaplib_append_with_flags_and_date_then_expunge(
    server: ImapServer, store: MessageStore
) -> None:
    def conversation() -> None:
        client = imaplib.IMAP4("127.0.0.1", server.port)
        client.login("demo", PASSWORD)
        client.create("Statements")
        typ, data = client.append(
            "Statements",
            "(\\Flagged $Statement)",
            '"01-Feb-2026 12:34:56 +0100"',
            sample_message(subject="appended"),
        )
        assert typ == "OK" and b"APPENDUID" in data[0]
        typ, data = client.append("Nope", None, None, sample_message())
        assert typ == "NO" and b"TRYCREATE" in data[0]
        client.select("Statements")
        typ, data = client.fetch("1", "(FLAGS INTERNALDATE)")
        assert b"\\Flagged" in data[0] and b"$Statement" in data[0]
        assert b'" 1-Feb-2026 11:34:56 +0000"' in data[0]
        client.store("1", "+FLAGS", "\\Deleted")
        typ, data = client.expunge()
        assert data == [b"1"]
        typ, data = client.status("Statements", "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)")
        assert b"MESSAGES 0" in data[0] and b"UIDNEXT 2" in data[0]
        client.close()
        client.delete("Statements")
        typ, data = client.list()
        assert not any(b"Statements" in line for line in data)
        client.logout()

    await in_thread(conversation)


async def test_fetch_sees_messages_delivered_since_the_last_command(
    server: ImapServer, store: MessageStore
) -> None:
    """FETCH reads its first batch before the view is brought up to date: a delivery in
    between must still be fetched, and a sequence number valid only after it accepted."""
    await put(store, ADDRESS, sample_message(subject="first"))
    client = await RawClient.connect(server.port)
    await client.ok("a SELECT INBOX")
    await put(store, ADDRESS, sample_message(subject="second"))
    lines = await client.ok("b FETCH 2 (FLAGS ENVELOPE)")
    assert b"* 2 EXISTS\r\n" in lines
    assert [line for line in lines if b"FETCH (" in line and b'"second"' in line]
    await put(store, ADDRESS, sample_message(subject="third"))
    lines = await client.ok("c UID FETCH 1:* (ENVELOPE)")
    fetched = [line for line in lines if b" FETCH (" in line]
    assert len(fetched) == 3
    for line, subject in zip(fetched, (b'"first"', b'"second"', b'"third"'), strict=True):
        assert subject in line
    lines = await client.command("d FETCH 4 (FLAGS)")
    assert lines[-1].startswith(b"d BAD")
    await client.close()


async def test_fetch_across_its_batches_sends_every_message_once_in_order(
    server: ImapServer, store: MessageStore
) -> None:
    """The first batch is short and sent at once, the others are long: every message is
    fetched once, in order, whatever batch it falls in."""
    count = 620  # a short first batch, a long one, and a partial last one
    await store.deliver_many(
        [
            MailDelivery(ADDRESS, sample_message(subject=f"n{index}"), f"<k{index}@t>")
            for index in range(count)
        ]
    )
    client = await RawClient.connect(server.port)
    await client.ok("a SELECT INBOX")
    for command in ("b FETCH 1:* (ENVELOPE)", "c UID FETCH 1:* (FLAGS)", "d FETCH 1:* FAST"):
        lines = await client.ok(command)
        numbers = [int(line.split()[1]) for line in lines if line.startswith(b"* ")]
        assert numbers == list(range(1, count + 1)), command
    await client.close()


async def test_an_expunge_by_another_session_waits_and_is_read_once(
    server: ImapServer, store: MessageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An expunge made by another session is not told during FETCH, STORE or SEARCH (RFC
    3501 section 7.4.1) but at the next NOOP; meanwhile the session's commands do not read
    every UID of the folder again, one command after the other."""
    for index in range(5):
        await put(store, ADDRESS, sample_message(subject=f"n{index}"))
    whole_reads = []
    changes = store.changes

    async def spy(folder_id: int, since_modseq: int) -> FolderChanges | None:
        found = await changes(folder_id, since_modseq)
        if found is not None and found.all_uids is not None:
            whole_reads.append(since_modseq)
        return found

    monkeypatch.setattr(store, "changes", spy)
    reader = await RawClient.connect(server.port)
    await reader.ok("a SELECT INBOX")
    other = await RawClient.connect(server.port)
    await other.ok("a SELECT INBOX")
    await other.ok("b STORE 2 +FLAGS (\\Deleted)")
    await other.ok("c EXPUNGE")
    await other.close()
    whole_reads.clear()  # the other session's own

    untagged = []
    for number, command in enumerate(
        ["STORE 1 +FLAGS.SILENT (\\Flagged)", "FETCH 1:5 (FLAGS)", "SEARCH ALL"] * 3
    ):
        untagged += [line for line in await reader.ok(f"x{number} {command}") if b"EXPUNGE" in line]
    assert untagged == []  # sequence numbers did not move under these commands
    assert len(whole_reads) == 1
    lines = await reader.ok("y NOOP")
    assert b"* 2 EXPUNGE\r\n" in lines
    lines = await reader.ok("z SEARCH ALL")
    assert lines[0] == b"* SEARCH 1 2 3 4\r\n"
    assert len(whole_reads) == 1
    await reader.close()


async def test_a_flag_changed_by_another_session_shows_in_the_next_fetch(
    server: ImapServer, store: MessageStore
) -> None:
    """The early read of the first batch stands after a flag change (the same messages),
    and the flags sent are the new ones."""
    await put(store, ADDRESS, sample_message(subject="first"))
    reader = await RawClient.connect(server.port)
    await reader.ok("a SELECT INBOX")
    other = await RawClient.connect(server.port)
    await other.ok("a SELECT INBOX")
    await other.ok("b STORE 1 +FLAGS (\\Flagged)")
    await other.close()
    lines = await reader.ok("b FETCH 1 (FLAGS ENVELOPE)")
    fetched = [line for line in lines if b" FETCH (" in line]
    assert fetched and all(b"\\Flagged" in line for line in fetched)
    assert any(b'"first"' in line for line in fetched)
    await reader.close()


async def test_a_session_does_not_read_back_its_own_stores(
    server: ImapServer, store: MessageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Store after store, the view stays current without reading the changes back; a
    change by another session in between is still read, and told."""
    for index in range(3):
        await put(store, ADDRESS, sample_message(subject=f"n{index}"))
    reads: list[int] = []
    changes = store.changes

    async def spy(folder_id: int, since_modseq: int) -> FolderChanges | None:
        reads.append(since_modseq)
        return await changes(folder_id, since_modseq)

    monkeypatch.setattr(store, "changes", spy)
    client = await RawClient.connect(server.port)
    await client.ok("a ENABLE CONDSTORE")
    await client.ok("b SELECT INBOX")
    modseqs = []
    for number, flag in enumerate(["\\Seen", "\\Flagged", "$Label1", "\\Answered"]):
        lines = await client.ok(f"s{number} STORE {number % 3 + 1} +FLAGS.SILENT ({flag})")
        found = [line for line in lines if b" FETCH (" in line]
        modseqs += [int(line.split(b"MODSEQ (")[1].split(b")")[0]) for line in found]
    assert reads == []
    assert modseqs == sorted(set(modseqs)) and len(modseqs) == 4

    other = await RawClient.connect(server.port)
    await other.ok("a SELECT INBOX")
    await other.ok("b STORE 2 +FLAGS (\\Deleted)")
    await other.close()
    lines = await client.ok("t STORE 1 +FLAGS.SILENT (\\Draft)")
    assert len(reads) == 1
    lines = await client.ok("u FETCH 1:3 (FLAGS)")
    flags = {int(line.split()[1]): line for line in lines if b" FETCH (" in line}
    assert b"\\Deleted" in flags[2] and b"\\Draft" in flags[1] and b"$Label1" in flags[3]
    await client.close()

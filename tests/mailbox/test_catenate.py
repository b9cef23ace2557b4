"""CATENATE (RFC 4469, without URLAUTH): messages put together from text and URL parts."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import aioimaplib
from aioimaplib.aioimaplib import Command
from imapclient import IMAPClient

from releves_mailer.mailbox.imap import mime
from releves_mailer.mailbox.imap.catenate import MAX_CATENATE_PARTS
from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.store import MessageStore

from .conftest import DOMAIN, PASSWORD, RawClient, in_thread, put, sample_message

ADDRESS = f"demo@{DOMAIN}"

MULTIPART = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: demo@example.test\r\n"
    b"Subject: Statement\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XX"\r\n'
    b"\r\n"
    b"--XX\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"The letter.\r\n"
    b"--XX\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAECAw==\r\n"
    b"--XX--\r\n"
)


def _text(data: bytes) -> bytes:
    return b"TEXT {%d+}\r\n" % len(data) + data


async def _uidvalidity(client: RawClient, box: str = "INBOX") -> int:
    lines = await client.ok(f"v STATUS {box} (UIDVALIDITY)")
    found = re.search(rb"UIDVALIDITY (\d+)", b"".join(lines))
    assert found is not None
    return int(found.group(1))


async def _fetch_all(client: RawClient, box: str, uid: int) -> bytes:
    await client.ok(f"f1 EXAMINE {box}")
    lines = await client.ok(f"f2 UID FETCH {uid} BODY.PEEK[]")
    data = b"".join(lines)
    start = data.index(b"}\r\n") + 3
    size = int(data[data.index(b"{") + 1 : start - 3])
    return data[start : start + size]


async def test_capabilities_after_login(server: ImapServer) -> None:
    client = await RawClient.connect(server.port)
    lines = await client.ok("c CAPABILITY")
    words = lines[0].split()
    assert b"MULTIAPPEND" in words
    assert b"CATENATE" in words
    assert b"MULTIAPPEND" not in client.greeting
    await client.close()


async def test_catenate_joins_text_and_sections_of_own_messages(
    server: ImapServer, store: MessageStore
) -> None:
    await put(store, ADDRESS, MULTIPART)
    client = await RawClient.connect(server.port)
    await client.ok("a0 CREATE Drafts")
    validity = await _uidvalidity(client)
    header = b"From: demo@example.test\r\nSubject: Forward\r\n" + (
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="YY"\r\n\r\n--YY\r\n'
    )
    command = (
        b"a1 APPEND Drafts (\\Draft) CATENATE ("
        + _text(header)
        + b' URL "/INBOX;UIDVALIDITY=%d/;UID=1/;SECTION=1.MIME"' % validity
        + b" URL /INBOX/;UID=1/;SECTION=1"
        + b" "
        + _text(b"\r\n--YY\r\n")
        + b' URL "imap://demo@localhost/INBOX/;UID=1/;SECTION=2.MIME"'
        + b' URL "/INBOX/;UID=1/;SECTION=2/;PARTIAL=0.4"'
        + b" "
        + _text(b"Cw==\r\n--YY--\r\n")
        + b")"
    )
    lines = await client.command(command)
    assert re.match(rb"a1 OK \[APPENDUID \d+ 1\]", lines[-1]), lines
    expected = (
        header
        + b"Content-Type: text/plain\r\n\r\n"
        + b"The letter."
        + b"\r\n--YY\r\n"
        + b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + b"AAEC"
        + b"Cw==\r\n--YY--\r\n"
    )
    assert await _fetch_all(client, "Drafts", 1) == expected
    # The stored message is analysed like any other: two parts.
    parsed = mime.parse_message(expected)
    assert len(parsed.children) == 2
    await client.close()


async def test_catenate_whole_message_relative_to_the_selected_mailbox(
    server: ImapServer, store: MessageStore
) -> None:
    await put(store, ADDRESS, MULTIPART)
    client = await RawClient.connect(server.port)
    await client.ok("a0 SELECT INBOX")
    lines = await client.command(b'a1 APPEND INBOX CATENATE (URL ";UID=1" ' + _text(b"P.S.") + b")")
    assert re.match(rb"a1 OK \[APPENDUID \d+ 2\]", lines[-1]), lines
    assert any(line == b"* 2 EXISTS\r\n" for line in lines), lines
    assert await _fetch_all(client, "INBOX", 2) == MULTIPART + b"P.S."
    await client.close()


async def test_multiappend_of_catenated_messages(server: ImapServer, store: MessageStore) -> None:
    await put(store, ADDRESS, sample_message(subject="base"))
    client = await RawClient.connect(server.port)
    command = (
        b'a1 APPEND INBOX CATENATE (URL "/INBOX/;UID=1/;SECTION=HEADER" '
        + _text(b"one\r\n")
        + b') (\\Seen) CATENATE (URL "/INBOX/;UID=1/;SECTION=HEADER" '
        + _text(b"two\r\n")
        + b")"
    )
    lines = await client.command(command)
    assert re.match(rb"a1 OK \[APPENDUID \d+ 2:3\]", lines[-1]), lines
    header = sample_message(subject="base").split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    assert await _fetch_all(client, "INBOX", 2) == header + b"one\r\n"
    assert await _fetch_all(client, "INBOX", 3) == header + b"two\r\n"
    await client.close()


async def test_bad_urls_store_nothing(server: ImapServer, store: MessageStore) -> None:
    await put(store, ADDRESS, sample_message())
    await put(store, f"other@{DOMAIN}", sample_message(subject="not yours"))
    client = await RawClient.connect(server.port)
    validity = await _uidvalidity(client)
    bad = [
        f"/INBOX;UIDVALIDITY={validity + 1}/;UID=1",
        "/INBOX/;UID=9",
        "/Nowhere/;UID=1",
        "imap://other@localhost/INBOX/;UID=1",
        "/INBOX/;UID=1;URLAUTH=anonymous:internal:0123",
        "/INBOX/;UID=1/;SECTION=7",
        "/INBOX/;UID=1/;SECTION=FOO",
        "http://example.org/",
        ";UID=1",  # relative, but no mailbox selected
    ]
    for index, url in enumerate(bad):
        lines = await client.command(
            f'b{index} APPEND INBOX CATENATE ({_text(b"x").decode()} URL "{url}")'
        )
        assert lines[-1].startswith(f"b{index} NO [BADURL ".encode()), (url, lines)
    lines = await client.ok("s STATUS INBOX (MESSAGES)")
    assert b"MESSAGES 1" in b"".join(lines)
    await client.close()


async def test_catenate_limits(server_factory: Callable[..., Any], store: MessageStore) -> None:
    server: ImapServer = await server_factory(max_literal_size=20_000)
    await put(store, ADDRESS, sample_message(body="z" * 12_000))
    client = await RawClient.connect(server.port)
    # Two URL parts of 12 kB each: more than the 20 kB a message may have.
    url = ' URL "/INBOX/;UID=1"'
    lines = await client.command("a1 APPEND INBOX CATENATE (" + url[1:] + url + ")")
    assert lines[-1].startswith(b"a1 NO [TOOBIG]"), lines
    parts = " ".join(['URL "/INBOX/;UID=1/;SECTION=HEADER"'] * (MAX_CATENATE_PARTS + 1))
    lines = await client.command(f"a2 APPEND INBOX CATENATE ({parts})")
    assert lines[-1].startswith(b"a2 NO [LIMIT]"), lines
    lines = await client.command("a3 APPEND INBOX CATENATE ()")
    assert lines[-1].startswith(b"a3 BAD"), lines
    lines = await client.ok("s STATUS INBOX (MESSAGES)")
    assert b"MESSAGES 1" in b"".join(lines)
    await client.close()


async def test_aioimaplib_catenate_of_a_url(server: ImapServer, store: MessageStore) -> None:
    await put(store, ADDRESS, MULTIPART)
    client = aioimaplib.IMAP4(host="127.0.0.1", port=server.port, timeout=60)
    await client.wait_hello_from_server()
    assert (await client.login("demo", PASSWORD)).result == "OK"
    assert (await client.create("Copies")).result == "OK"
    protocol = client.protocol
    response = await protocol.execute(
        Command(
            "APPEND",
            protocol.new_tag(),
            "Copies",
            '(\\Seen) CATENATE (URL "/INBOX/;UID=1/;SECTION=1")',
            loop=protocol.loop,
        )
    )
    assert response.result == "OK", response
    assert b"APPENDUID" in b" ".join(line for line in response.lines if isinstance(line, bytes))
    assert (await client.select("Copies")).result == "OK"
    fetched = await client.fetch("1", "(FLAGS BODY.PEEK[])")
    await client.logout()
    assert b"The letter." in fetched.lines[1]
    assert b"\\Seen" in fetched.lines[0]


async def test_imapclient_catenate_of_text_and_a_url(
    server: ImapServer, store: MessageStore
) -> None:
    """imapclient has no CATENATE of its own: its raw command sends the 8-bit TEXT part as a
    literal, followed by a URL part."""
    await put(store, ADDRESS, MULTIPART)
    text = "Relevé transféré :\r\n".encode()

    def run() -> tuple[str, list[bytes], dict[int, dict[bytes, object]]]:
        with IMAPClient("127.0.0.1", port=server.port, ssl=False) as client:
            client.login("demo", PASSWORD)
            assert b"CATENATE" in client.capabilities()
            client.create_folder("Copies")
            status, data = client._raw_command(
                b"APPEND",
                [
                    b"Copies",
                    b"(\\Seen)",
                    b"CATENATE (TEXT",
                    text,
                    b'URL "/INBOX/;UID=1/;SECTION=1")',
                ],
                uid=False,
            )
            client.select_folder("Copies")
            return status, data, client.fetch([1], ["FLAGS", "BODY.PEEK[]"])

    status, data, fetched = await in_thread(run)
    assert status == "OK", data
    assert b"APPENDUID" in b" ".join(data), data
    assert fetched[1][b"BODY[]"] == text + b"The letter."
    assert b"\\Seen" in fetched[1][b"FLAGS"]  # type: ignore[operator]

"""UTF8=ACCEPT (RFC 6855): UTF-8 mailbox names and UTF8 (literal8) APPEND once enabled."""

from __future__ import annotations

import aioimaplib
import pytest
from imapclient import IMAPClient

from releves_mailer.mailbox.imap import utf7
from releves_mailer.mailbox.imap.server import ImapServer

from .conftest import PASSWORD, RawClient, in_thread


@pytest.mark.parametrize(
    ("name", "wire"),
    [("Café", "Caf&AOk-"), ("a&b", "a&-b"), ("日本語/Été", "&ZeVnLIqe-/&AMk-t&AOk-"), ("x", "x")],
)
def test_modified_utf7(name: str, wire: str) -> None:
    assert utf7.encode(name) == wire
    assert utf7.decode(wire) == name


def test_invalid_modified_utf7_is_kept() -> None:
    assert utf7.decode("a&zz") == "a&zz"
    assert utf7.decode("a&!!-") == "a&!!-"


async def test_utf8_names_are_stored_as_modified_utf7(server: ImapServer) -> None:
    modern = await RawClient.connect(server.port)
    lines = await modern.ok("e ENABLE UTF8=ACCEPT")
    assert lines[0] == b"* ENABLED UTF8=ACCEPT\r\n"
    await modern.ok('c CREATE "Relev\xc3\xa9s/2026"'.encode("latin-1"))
    lines = await modern.ok('l LIST "" "Relev\xc3\xa9s/*"'.encode("latin-1"))
    assert lines[0] == b'* LIST (\\HasNoChildren) "/" {13}\r\nRelev\xc3\xa9s/2026\r\n'
    lines = await modern.ok('s STATUS "Relev\xc3\xa9s/2026" (MESSAGES)'.encode("latin-1"))
    assert lines[0] == b"* STATUS {13}\r\nRelev\xc3\xa9s/2026 (MESSAGES 0)\r\n"
    message = b"Subject: =?utf-8?q?x?= \xc3\xa9t\xc3\xa9\r\n\r\nCorps \xc3\xa9\r\n"
    lines = await modern.command(
        b'a APPEND "Relev\xc3\xa9s/2026" UTF8 (~{%d+}\r\n' % len(message) + message + b")"
    )
    assert lines[-1].startswith(b"a OK [APPENDUID "), lines
    await modern.ok('x SELECT "Relev\xc3\xa9s/2026"'.encode("latin-1"))
    lines = await modern.ok("y FETCH 1 BODY.PEEK[]")
    assert message in b"".join(lines)
    # A client that did not enable UTF8=ACCEPT sees modified UTF-7 and may not send UTF8.
    classic = await RawClient.connect(server.port)
    lines = await classic.ok('l LIST "" "*"')
    assert b'* LIST (\\HasNoChildren) "/" Relev&AOk-s/2026\r\n' in lines
    lines = await classic.command(b"a APPEND INBOX UTF8 (~{5+}\r\nx\r\n\r\n)")
    assert lines[-1].startswith(b"a BAD"), lines
    lines = await modern.command(b"b APPEND INBOX UTF8 ({5+}\r\nx\r\n\r\n)")
    assert lines[-1].startswith(b"b BAD"), lines  # a literal8 only
    words = (await classic.ok("c CAPABILITY"))[0].split()
    assert b"UTF8=ACCEPT" in words
    await modern.close()
    await classic.close()


async def test_catenate_url_with_a_utf8_mailbox_name(server: ImapServer) -> None:
    client = await RawClient.connect(server.port)
    await client.ok("c CREATE Caf&AOk-")
    await client.ok(b"a APPEND Caf&AOk- {16+}\r\nSubject: s\r\n\r\nhi")
    lines = await client.ok('b APPEND INBOX CATENATE (URL "/Caf%C3%A9/;UID=1")')
    assert lines[-1].startswith(b"b OK [APPENDUID "), lines
    await client.close()


async def test_imapclient_sees_names_created_in_utf8(server: ImapServer) -> None:
    modern = await RawClient.connect(server.port)
    await modern.ok("e ENABLE UTF8=ACCEPT")
    await modern.ok('c CREATE "\xc3\x89t\xc3\xa9"'.encode("latin-1"))
    await modern.close()

    def run() -> list[str]:
        with IMAPClient("127.0.0.1", port=server.port, ssl=False) as client:
            client.login("demo", PASSWORD)
            client.create_folder("Hiver ❄")
            return sorted(name for _, _, name in client.list_folders())

    names = await in_thread(run)
    assert names == ["Hiver ❄", "INBOX", "Été"]
    modern = await RawClient.connect(server.port)
    await modern.ok("e ENABLE UTF8=ACCEPT")
    lines = await modern.ok('l LIST "" "Hiver*"')
    assert "Hiver ❄".encode() in b"".join(lines)
    await modern.close()


async def test_aioimaplib_enable_utf8(server: ImapServer) -> None:
    client = aioimaplib.IMAP4(host="127.0.0.1", port=server.port, timeout=60)
    await client.wait_hello_from_server()
    assert (await client.login("demo", PASSWORD)).result == "OK"
    response = await client.enable("UTF8=ACCEPT")
    assert response.result == "OK"
    assert response.lines[0] == b"ENABLED UTF8=ACCEPT"
    assert (await client.create('"Déjà"')).result == "OK"
    listed = await client.list('""', '"D*"')
    await client.logout()
    assert listed.result == "OK"
    assert "Déjà".encode() in b"".join(bytes(line) for line in listed.lines)


async def test_utf8_patterns_match_whole_characters(server: ImapServer) -> None:
    client = await RawClient.connect(server.port)
    await client.ok("e ENABLE UTF8=ACCEPT")
    await client.ok('c CREATE "日本/東京"'.encode())
    lines = await client.ok('l LIST "" "日*"'.encode())
    listed = b"".join(lines)
    assert "日本/東京".encode() in listed and '"/" {6}\r\n日本'.encode() in listed
    lines = await client.ok('l LIST "日本/" "%"'.encode())
    assert b"".join(lines).count(b"* LIST") == 1
    assert "東京".encode() in b"".join(lines)
    await client.close()

"""BINARY (RFC 3516): FETCH BINARY[section], BINARY.PEEK, BINARY.SIZE and APPEND of literal8."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import aioimaplib
from imapclient import IMAPClient

from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.store import MessageStore

from .conftest import DOMAIN, PASSWORD, RawClient, in_thread, put

ADDRESS = f"demo@{DOMAIN}"
PAYLOAD = bytes(range(256)) * 4


def encoded_message(payload: bytes = PAYLOAD) -> bytes:
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    return (
        b"From: Alice <alice@example.org>\r\n"
        b"Subject: Binary\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="XX"\r\n'
        b"\r\n"
        b"--XX\r\n"
        b"Content-Type: text/plain\r\n"
        b"Content-Transfer-Encoding: 7bit\r\n"
        b"\r\n"
        b"Plain text.\r\n"
        b"--XX\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n" + encoded + b"--XX\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: Quoted-Printable\r\n"
        b"\r\n"
        b"caf=C3=A9 =\r\n"
        b"suite\r\n"
        b"--XX\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: x-uuencode\r\n"
        b"\r\n"
        b"begin 644 x\r\n"
        b"--XX--\r\n"
    )


def _literal_after(data: bytes, label: bytes) -> bytes:
    """The octets of the literal that follows ``label`` in a response."""
    start = data.index(label) + len(label) + 1
    if data[start : start + 1] == b"~":
        start += 1
    end = data.index(b"}\r\n", start)
    size = int(data[start + 1 : end])
    return data[end + 3 : end + 3 + size]


async def test_binary_decodes_base64_and_quoted_printable(
    server: ImapServer, store: MessageStore
) -> None:
    await put(store, ADDRESS, encoded_message())
    client = await RawClient.connect(server.port)
    await client.ok("a SELECT INBOX")
    lines = await client.ok("b FETCH 1 (BINARY.PEEK[2] BINARY.SIZE[2] BINARY.SIZE[3] FLAGS)")
    data = b"".join(lines)
    # The payload holds NUL: a literal8.
    assert b"BINARY[2] ~{1024}\r\n" in data
    assert _literal_after(data, b"BINARY[2]") == PAYLOAD
    assert b"BINARY.SIZE[2] 1024" in data
    assert b"BINARY.SIZE[3] 11" in data
    assert b"\\Seen" not in data
    lines = await client.ok("c FETCH 1 (BINARY[3] BINARY[1]<0.5> BINARY[2]<1.3>)")
    data = b"".join(lines)
    assert b"BINARY[3] {11}\r\n" in data
    assert _literal_after(data, b"BINARY[3]") == "café suite".encode()
    assert _literal_after(data, b"BINARY[1]<0>") == b"Plain"
    assert _literal_after(data, b"BINARY[2]<1>") == b"\x01\x02\x03"
    assert b"\\Seen" in data  # BINARY, not PEEK, sets \Seen
    lines = await client.ok("d UID FETCH 1 (BINARY.PEEK[] BINARY.PEEK[9])")
    data = b"".join(lines)
    assert _literal_after(data, b"BINARY[]") == encoded_message()
    assert b"BINARY[9] {0}\r\n" in data
    await client.close()


async def test_unknown_encoding_and_bad_syntax(server: ImapServer, store: MessageStore) -> None:
    await put(store, ADDRESS, encoded_message())
    client = await RawClient.connect(server.port)
    await client.ok("a SELECT INBOX")
    lines = await client.command("b FETCH 1 BINARY.PEEK[4]")
    assert lines[-1].startswith(b"b NO [UNKNOWN-CTE]"), lines
    for index, command in enumerate(
        ("FETCH 1 BINARY.PEEK[1.TEXT]", "FETCH 1 BINARY.SIZE[1]<0.1>", "FETCH 1 BINARY.PEEK")
    ):
        lines = await client.command(f"x{index} {command}")
        assert lines[-1].startswith(f"x{index} BAD".encode()), lines
    await client.close()


async def test_binary_of_a_message_kept_in_its_file(
    server_factory: Callable[..., Any], store: MessageStore
) -> None:
    server: ImapServer = await server_factory(spool_threshold=4096)
    payload = bytes(range(256)) * 64
    await put(store, ADDRESS, encoded_message(payload))
    client = await RawClient.connect(server.port)
    await client.ok("a EXAMINE INBOX")
    lines = await client.ok("b FETCH 1 (BINARY.SIZE[2] BINARY.PEEK[2] BINARY.PEEK[3])")
    data = b"".join(lines)
    assert b"BINARY.SIZE[2] %d" % len(payload) in data
    assert _literal_after(data, b"BINARY[2]") == payload
    assert _literal_after(data, b"BINARY[3]") == "café suite".encode()
    await client.close()


async def test_append_literal8(server: ImapServer) -> None:
    client = await RawClient.connect(server.port)
    message = b"Subject: raw\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00\x01\xff end\r\n"
    lines = await client.command(b"a APPEND INBOX ~{%d+}\r\n" % len(message) + message)
    assert lines[-1].startswith(b"a OK [APPENDUID "), lines
    await client.ok("b SELECT INBOX")
    lines = await client.ok("c FETCH 1 (BINARY.PEEK[1] BODY.PEEK[])")
    data = b"".join(lines)
    assert _literal_after(data, b"BINARY[1]") == b"\x00\x01\xff end\r\n"
    # Stored with the part in base64: BODY[] is a plain literal without NUL.
    stored = _literal_after(data, b"BODY[]")
    assert stored.startswith(b"Subject: raw\r\nContent-Transfer-Encoding: base64\r\n\r\n")
    assert b"\x00" not in stored
    assert b"binary" not in stored
    # A literal8 is for messages only.
    lines = await client.command(b"d SELECT ~{5+}\r\nINBOX")
    assert lines[-1].startswith(b"d BAD"), lines
    words = (await client.ok("e CAPABILITY"))[0].split()
    assert b"BINARY" in words
    await client.close()


async def test_quoted_printable_transport_padding_and_soft_breaks(
    server: ImapServer, store: MessageStore
) -> None:
    body = b"hello  \r\nbar=\r\n\r\nfoo\t= \r\n=62\r\nfoo =\t\r\nbar\r\n"
    message = b"Subject: qp\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + body
    await put(store, ADDRESS, message)
    client = await RawClient.connect(server.port)
    await client.ok("a EXAMINE INBOX")
    lines = await client.ok("b FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1])")
    data = b"".join(lines)
    assert _literal_after(data, b"BINARY[1]") == b"hello\r\nbar\r\nfoo\tb\r\nfoo bar\r\n"
    assert b"BINARY.SIZE[1] 28" in data
    await client.close()


async def test_multipart_with_nul_appended_as_literal8(server: ImapServer) -> None:
    payload = b"\x00\x01\x02 binary\r\n\x00"
    message = (
        b'Subject: m\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B"\r\n'
        b"\r\n--B\r\nContent-Type: text/plain\r\n\r\nhi\r\n--B\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding:\r\n binary\r\n"
        b"\r\n" + payload + b"\r\n--B--\r\n"
    )
    client = await RawClient.connect(server.port)
    lines = await client.command(b"a APPEND INBOX ~{%d+}\r\n" % len(message) + message)
    assert lines[-1].startswith(b"a OK"), lines
    await client.ok("b EXAMINE INBOX")
    lines = await client.ok("c FETCH 1 (BINARY.PEEK[1] BINARY.PEEK[2] BODY.PEEK[2.MIME])")
    data = b"".join(lines)
    assert _literal_after(data, b"BINARY[1]") == b"hi"
    assert _literal_after(data, b"BINARY[2]") == payload
    mime_header = _literal_after(data, b"BODY[2.MIME]")
    assert mime_header == (
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    )
    await client.close()


async def test_imapclient_fetch_binary(server: ImapServer, store: MessageStore) -> None:
    await put(store, ADDRESS, encoded_message())

    def run() -> dict[bytes, Any]:
        with IMAPClient("127.0.0.1", port=server.port, ssl=False) as client:
            client.login("demo", PASSWORD)
            client.select_folder("INBOX", readonly=True)
            result: dict[bytes, Any] = client.fetch([1], ["BINARY.PEEK[3]", "BINARY.SIZE[2]"])[1]
            return result

    fetched = await in_thread(run)
    assert fetched[b"BINARY[3]"] == "café suite".encode()
    assert fetched[b"BINARY.SIZE[2]"] == 1024


async def test_aioimaplib_fetch_binary(server: ImapServer, store: MessageStore) -> None:
    await put(store, ADDRESS, encoded_message(b"payload without NUL"))
    client = aioimaplib.IMAP4(host="127.0.0.1", port=server.port, timeout=60)
    await client.wait_hello_from_server()
    assert (await client.login("demo", PASSWORD)).result == "OK"
    assert (await client.select("INBOX")).result == "OK"
    response = await client.fetch("1", "(BINARY.PEEK[2])")
    await client.logout()
    assert response.result == "OK"
    assert response.lines[0] == b"1 FETCH (BINARY[2] {19}"
    assert response.lines[1] == b"payload without NUL"

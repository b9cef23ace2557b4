"""Issue 13 point 11: a large APPEND goes to a temporary file, a large FETCH is streamed.

The limits are configurable, so the test works with a few MB: literals above 64 KiB are
spooled and messages above 64 KiB are sent from their file in pieces.
"""

from __future__ import annotations

import asyncio
import base64
import imaplib
import os
import random
import re
import time
from pathlib import Path

import pytest

from releves_mailer.mailbox.imap import mime
from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.store import MessageStore
from tests.mailbox.conftest import (  # noqa: F401  (fixtures)
    PASSWORD,
    RawClient,
    ca,
    in_thread,
    sample_message,
    server_factory,
    server_ssl,
    store,
)

THRESHOLD = 64 * 1024


def large_message(size: int) -> tuple[bytes, bytes, bytes]:
    """A multipart mail of about ``size`` octets: (whole, text part body, attachment body)."""
    payload = random.Random(7).randbytes(size * 3 // 4)
    attachment = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    text = b"Bonjour,\r\nveuillez trouver le releve ci-joint.\r\n"
    raw = (
        b"From: Portail <portail@example.test>\r\n"
        b"To: demo@example.test\r\n"
        b"Subject: Gros releve\r\n"
        b"Date: Tue, 10 Mar 2026 10:00:00 +0100\r\n"
        b"Message-ID: <big@example.test>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="=_b"\r\n'
        b"\r\n"
        b"--=_b\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"\r\n" + text + b"--=_b\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n" + attachment + b"--=_b--\r\n"
    )
    return raw, text, attachment


def open_spool_sizes(blob_dir: Path) -> list[int]:
    """Sizes of the files this process holds open under ``blob_dir`` (spooled literals)."""
    sizes = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(blob_dir)):
                sizes.append(os.stat(f"/proc/self/fd/{fd}").st_size)
        except OSError:
            continue
    return sizes


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to see the spool")
async def test_large_append_is_spooled_and_fetched_back_identical(
    server_factory,  # noqa: F811
    store: MessageStore,  # noqa: F811
) -> None:
    server: ImapServer = await server_factory(
        spool_threshold=THRESHOLD, max_literal_size=8 * 1024 * 1024
    )
    raw, text, attachment = large_message(4 * 1024 * 1024)
    client = await RawClient.connect(server.port)
    try:
        await client.send(b"a APPEND INBOX (\\Seen) {%d}\r\n" % len(raw))
        assert (await client.line()).startswith(b"+ ")
        half = len(raw) // 2
        await client.send(raw[:half])
        # Half the message sent: the server holds it in a file beside the messages.
        # A minute of patience: a hang guard, not a speed bound.
        deadline = time.monotonic() + 60
        while not any(size >= 1024 * 1024 for size in open_spool_sizes(store.blob_dir)):
            assert time.monotonic() < deadline, "no spool file grew under the message store"
            await asyncio.sleep(0.05)
        await client.send(raw[half:] + b"\r\n")
        lines = await client.until_tagged(b"a")
        assert lines[-1].startswith(b"a OK [APPENDUID "), lines
        uid = int(lines[-1].split(b"]")[0].split()[-1])
        # The spool file is gone with the command.
        assert open_spool_sizes(store.blob_dir) == []
    finally:
        await client.close()

    def fetch_back() -> dict[str, bytes]:
        imap = imaplib.IMAP4("127.0.0.1", server.port)
        try:
            imap.login("demo", PASSWORD)
            imap.select("INBOX")
            out: dict[str, bytes] = {}
            for item in (
                "BODY.PEEK[]",
                "BODY.PEEK[TEXT]",
                "BODY.PEEK[1]",
                "BODY.PEEK[2]",
                "BODY.PEEK[]<100.200000>",
                "RFC822",
            ):
                status, data = imap.uid("FETCH", str(uid), f"({item})")
                assert status == "OK", data
                first = data[0]
                assert isinstance(first, tuple), data
                out[item] = first[1]
            status, data = imap.uid("FETCH", str(uid), "(RFC822.SIZE)")
            out["size"] = data[0] if isinstance(data[0], bytes) else b""
            return out
        finally:
            imap.logout()

    fetched = await in_thread(fetch_back, 60)
    assert fetched["BODY.PEEK[]"] == raw
    assert fetched["RFC822"] == raw
    body_start = raw.index(b"\r\n\r\n") + 4
    assert fetched["BODY.PEEK[TEXT]"] == raw[body_start:]
    assert fetched["BODY.PEEK[1]"] == text.removesuffix(b"\r\n")
    assert fetched["BODY.PEEK[2]"] == attachment.removesuffix(b"\r\n")
    assert fetched["BODY.PEEK[]<100.200000>"] == raw[100:200100]
    assert re.search(rb"RFC822\.SIZE %d\b" % len(raw), fetched["size"])
    # The stored file is the message itself.
    files = [path for path in store.blob_dir.rglob("*") if path.is_file()]
    assert [path.read_bytes() == raw for path in files] == [True]


async def test_large_and_small_messages_fetched_together(server_factory) -> None:  # noqa: F811
    """Small messages read ahead, large ones streamed, in one FETCH and in order."""
    server: ImapServer = await server_factory(
        spool_threshold=THRESHOLD, max_literal_size=8 * 1024 * 1024
    )
    big, _, _ = large_message(300 * 1024)
    messages = [sample_message(subject="one"), big, sample_message(subject="three"), big[:-9]]

    def conversation() -> list[bytes]:
        imap = imaplib.IMAP4("127.0.0.1", server.port)
        try:
            imap.login("demo", PASSWORD)
            for message in messages:
                status, _ = imap.append("INBOX", None, None, message)
                assert status == "OK"
            imap.select("INBOX")
            status, data = imap.fetch("1:*", "(UID BODY.PEEK[] RFC822.SIZE)")
            assert status == "OK"
            return [item[1] for item in data if isinstance(item, tuple)]
        finally:
            imap.logout()

    assert await in_thread(conversation, 60) == messages


async def test_append_over_the_limit_is_refused(server_factory) -> None:  # noqa: F811
    server: ImapServer = await server_factory(spool_threshold=THRESHOLD, max_literal_size=1 << 20)
    client = await RawClient.connect(server.port)
    lines = await client.command(b"a APPEND INBOX {2000000}")
    assert lines[-1].startswith(b"a NO [TOOBIG]")
    await client.ok("b NOOP")
    await client.close()


def test_analysis_in_windows_matches_the_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """The MIME scan of a large message goes by windows (the GIL is let go between them):
    tiny windows give the same structure as one window over the whole message."""
    raw, _, _ = large_message(20_000)
    whole = mime.bodystructures(mime.parse_message(raw))
    lines = mime.parse_message(raw).children[0].body_line_count
    monkeypatch.setattr(mime, "_WINDOW", 7)
    assert mime.bodystructures(mime.parse_message(raw)) == whole
    assert mime.parse_message(raw).children[0].body_line_count == lines == 2

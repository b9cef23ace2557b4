"""Issue 13.4: connection caps, and a daemon out of descriptors that still serves.

The real daemon runs in a child process whose open-file limit is lowered to 256 (see
``capped_daemon.py``), with the default caps. From 127.0.0.2, an attacker opens 150 idle
sockets to each of IMAP, SMTP and HTTP: 450, far beyond the limit. The sockets over the
caps get a short refusal (``* BYE``, ``421``, ``503``) at once; meanwhile a legitimate
client from 127.0.0.1 logs in over IMAP, sends a mail over SMTP and loads a page over HTTP.
Then the child exhausts its descriptors on purpose: a client connecting meanwhile waits in
the listen queue, and is served as soon as descriptors are free again. The log holds one
line about it, not a traceback per attempt.
"""

from __future__ import annotations

import asyncio
import imaplib
import smtplib
import ssl
import sys
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from releves_mailer.config import HttpSection, ImapSection, SmtpSection
from tests.factories import PASSWORD
from tests.security.capped_daemon import DOMAIN, Child, capped_daemon
from tests.waiting import polls

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_NOFILE, 127.0.0.2")

LIMIT = 256
IDLE_PER_SERVICE = 150
ATTACKER = "127.0.0.2"
LATE_CLIENT = "127.0.0.3"
#: What the daemon logs when accept() fails for want of descriptors.
SHORTAGE = "cannot accept connections"


@pytest.fixture
async def child(tmp_path: Path) -> AsyncIterator[Child]:
    async with capped_daemon(tmp_path / "data", LIMIT) as running:
        yield running


async def flood(
    port: int, refusal: bytes, refusals_expected: int, held: list[asyncio.StreamWriter]
) -> list[bytes]:
    """Open ``IDLE_PER_SERVICE`` sockets from the attacker's address, all at once, and return
    what the server said first on each (``b""``: nothing). Waits until every socket has
    spoken or ``refusals_expected`` refusals came: an admitted HTTP socket hears nothing
    before it sends a request, so the wait ends on what was observed, not on a delay. The
    minute of patience is a hang guard. The sockets go to ``held``, open."""
    connections = await asyncio.gather(
        *(
            asyncio.open_connection("127.0.0.1", port, local_addr=(ATTACKER, 0))
            for _ in range(IDLE_PER_SERVICE)
        )
    )
    held.extend(writer for _, writer in connections)
    reads = {
        asyncio.create_task(reader.read(200)): index
        for index, (reader, _) in enumerate(connections)
    }
    said = [b""] * len(connections)
    pending = set(reads)
    while pending and sum(words.startswith(refusal) for words in said) < refusals_expected:
        done, pending = await asyncio.wait(pending, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if not done:
            break
        for task in done:
            said[reads[task]] = task.result()
    for task in pending:
        task.cancel()
    return said


async def logged(child: Child, text: str) -> None:
    """Wait until the daemon's log holds ``text`` (a minute at most: a hang guard)."""
    async for _ in polls(f"not logged: {text}"):
        if text in child.log.read_text(encoding="utf-8"):
            break


def imap_session(port: int) -> list[bytes]:
    with imaplib.IMAP4("127.0.0.1", port, timeout=30) as client:
        client.login("cabinet", PASSWORD)
        status, data = client.select("INBOX")
        assert status == "OK"
        client.logout()
        return [bytes(item) for item in data if isinstance(item, bytes)]


def smtp_send(port: int) -> None:
    message = EmailMessage()
    message["From"] = f"cabinet@{DOMAIN}"
    message["To"] = f"cabinet@{DOMAIN}"
    message["Subject"] = "Toujours servi"
    message.set_content("Bonjour")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the daemon's self-signed certificate
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.starttls(context=context)
        client.login("cabinet", PASSWORD)
        client.send_message(message)


async def test_idle_floods_are_capped_and_legitimate_clients_still_served(child: Child) -> None:
    caps = {
        "imap": ImapSection().max_connections_per_address,
        "smtp": SmtpSection().max_connections_per_address,
        "http": HttpSection().max_connections_per_address,
    }
    refusals = {"imap": b"* BYE", "smtp": b"421 ", "http": b"HTTP/1.1 503"}
    held: list[asyncio.StreamWriter] = []
    try:
        for service, cap in caps.items():
            said = await flood(
                child.ports[service], refusals[service], IDLE_PER_SERVICE - cap, held
            )
            refused = [words for words in said if words.startswith(refusals[service])]
            admitted = len(said) - len(refused)
            assert admitted <= cap, service
            assert len(refused) >= IDLE_PER_SERVICE - cap, service
            if service == "http":
                assert b"Trop de connexions" in refused[0]
            else:
                # IMAP and SMTP greet an admitted client: every socket heard something.
                assert all(said), f"{service}: a socket got nothing"

        # The attacker still holds every socket it could: a legitimate client is served.
        data = await asyncio.wait_for(asyncio.to_thread(imap_session, child.ports["imap"]), 60)
        assert data  # the message count of INBOX
        await asyncio.wait_for(asyncio.to_thread(smtp_send, child.ports["smtp"]), 60)
        async with httpx.AsyncClient(timeout=30) as client:
            page = await client.get(f"http://127.0.0.1:{child.ports['http']}/static/releves.css")
        assert page.status_code == 200

        # Out of descriptors altogether: a new client waits, then is served.
        assert SHORTAGE not in child.log.read_text(encoding="utf-8")
        hogged = await child.say(f"hog {ATTACKER}")
        assert hogged.startswith("hogged ")
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", child.ports["imap"], local_addr=(LATE_CLIENT, 0)
        )
        held.append(writer)
        greeting = asyncio.create_task(reader.readline())
        # The daemon tried to accept it and could not (it said so), however long a loaded
        # machine took to get there; the client was not served.
        await logged(child, SHORTAGE)
        assert not greeting.done()
        assert await child.say("free") == "freed"
        line = await asyncio.wait_for(greeting, 60)
        assert line.startswith(b"* OK"), line
    finally:
        for writer in held:
            writer.close()
    await child.say("stop")
    assert await asyncio.wait_for(child.process.wait(), 60) == 0

    log = child.log.read_text(encoding="utf-8")
    assert "out of system resource" not in log  # asyncio's own accept loop is not used
    assert "Traceback" not in log
    # One line for the descriptor shortage (the pauses are logged once a minute)...
    assert log.count(SHORTAGE) == 1, log[-3000:]
    # ...and at most one per listener about the refusals.
    assert 1 <= log.count("refused a connection") <= 4, log[-3000:]

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
import contextlib
import imaplib
import os
import smtplib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from releves_mailer.bootstrap import initialise_data_dir
from releves_mailer.clock import SystemClock
from releves_mailer.config import Config, HttpSection, ImapSection, SmtpSection
from releves_mailer.db import Database
from releves_mailer.portfolio.accounts import create_account
from tests.factories import CABINET, PASSWORD

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_NOFILE, 127.0.0.2")

LIMIT = 256
IDLE_PER_SERVICE = 150
ATTACKER = "127.0.0.2"
LATE_CLIENT = "127.0.0.3"
DOMAIN = "releves.localhost"


@dataclass
class Child:
    process: asyncio.subprocess.Process
    ports: dict[str, int]
    log: Path

    async def say(self, command: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()
        if command == "stop":
            return ""
        line = await asyncio.wait_for(self.process.stdout.readline(), 60)
        return line.decode().strip()


async def prepare(directory: Path) -> Config:
    """A data directory with one account, ``cabinet``, password ``PASSWORD``."""
    config = await initialise_data_dir(directory, DOMAIN, SystemClock())
    database = Database(config.database_url)
    try:
        async with database.session() as session:
            await create_account(session, SystemClock(), CABINET, PASSWORD)
    finally:
        await database.dispose()
    return config


@pytest.fixture
async def child(tmp_path: Path) -> AsyncIterator[Child]:
    config = await prepare(tmp_path / "data")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELEVES_MAILER")}
    env["RELEVES_MAILER__LOGGING__FILE"] = "daemon.log"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.security.capped_daemon",
        str(config.source),
        str(LIMIT),
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 300)).decode().split()
        assert line and line[0] == "ready", line
        ports = {name: int(port) for name, port in (item.split("=") for item in line[1:])}
        yield Child(process, ports, config.data_dir / "daemon.log")
    finally:
        if process.returncode is None:
            with contextlib.suppress(ConnectionError):
                await Child(process, {}, Path()).say("stop")
            try:
                await asyncio.wait_for(process.wait(), 60)
            except TimeoutError:
                process.kill()
                await process.wait()


async def first_bytes(port: int, source: str, seconds: float) -> tuple[bytes, asyncio.StreamWriter]:
    """Connect from ``source``; what the server says first (``b""`` if nothing in time)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        said = await asyncio.wait_for(reader.read(200), seconds)
    except TimeoutError:
        said = b""
    return said, writer


def imap_session(port: int) -> list[bytes]:
    with imaplib.IMAP4("127.0.0.1", port, timeout=30) as client:
        client.login("cabinet", PASSWORD)
        status, data = client.select("INBOX")
        assert status == "OK"
        client.logout()
        return [bytes(item) for item in data if isinstance(item, bytes)]


def smtp_send(port: int) -> None:
    message = EmailMessage()
    message["From"] = "client@ailleurs.example"
    message["To"] = f"cabinet@{DOMAIN}"
    message["Subject"] = "Toujours servi"
    message.set_content("Bonjour")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
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
            # IMAP and SMTP greet an admitted client; HTTP waits for its request: give it a
            # moment to show that nothing comes.
            wait = 10 if service != "http" else 2
            results = await asyncio.gather(
                *(
                    first_bytes(child.ports[service], ATTACKER, wait)
                    for _ in range(IDLE_PER_SERVICE)
                )
            )
            held += [writer for _, writer in results]
            refused = [said for said, _ in results if said.startswith(refusals[service])]
            admitted = len(results) - len(refused)
            assert admitted <= cap, service
            assert len(refused) >= IDLE_PER_SERVICE - cap, service
            if service == "http":
                assert b"Trop de connexions" in refused[0]
            else:
                assert all(said for said, _ in results), f"{service}: a socket got nothing"

        # The attacker still holds every socket it could: a legitimate client is served.
        data = await asyncio.wait_for(asyncio.to_thread(imap_session, child.ports["imap"]), 60)
        assert data  # the message count of INBOX
        await asyncio.wait_for(asyncio.to_thread(smtp_send, child.ports["smtp"]), 60)
        async with httpx.AsyncClient(timeout=30) as client:
            page = await client.get(f"http://127.0.0.1:{child.ports['http']}/static/releves.css")
        assert page.status_code == 200

        # Out of descriptors altogether: a new client waits, then is served.
        hogged = await child.say("hog")
        assert hogged.startswith("hogged ")
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", child.ports["imap"], local_addr=(LATE_CLIENT, 0)
        )
        held.append(writer)
        with pytest.raises(TimeoutError):
            # Several accept() attempts fail meanwhile (one every half second).
            await asyncio.wait_for(reader.readline(), 3)
        assert await child.say("free") == "freed"
        greeting = await asyncio.wait_for(reader.readline(), 10)
        assert greeting.startswith(b"* OK"), greeting
    finally:
        for writer in held:
            writer.close()
    await child.say("stop")
    assert await asyncio.wait_for(child.process.wait(), 60) == 0

    log = child.log.read_text(encoding="utf-8")
    assert "out of system resource" not in log  # asyncio's own accept loop is not used
    assert "Traceback" not in log
    # One line for the descriptor shortage (the pauses are logged once a minute)...
    assert log.count("cannot accept connections") == 1, log[-3000:]
    # ...and at most one per listener about the refusals.
    assert 1 <= log.count("refused a connection") <= 4, log[-3000:]

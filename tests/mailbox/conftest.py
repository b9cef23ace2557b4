"""Fixtures of the mailbox tests: a real IMAP server on 127.0.0.1 port 0 over a real store."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trustme

from releves_mailer.clock import ManualClock
from releves_mailer.config import ImapSection
from releves_mailer.db import Database
from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.store import MessageStore

DOMAIN = "example.test"
PASSWORD = "s3cret pass"
T = TypeVar("T")


class StaticAuthenticator:
    """Known users, one password: ``demo`` (and its dedicated box) and ``other``."""

    def __init__(self) -> None:
        self.users = {"demo", "other"}

    async def authenticate(self, username: str, password: str) -> str | None:
        name = username.strip().lower()
        local, _, domain = name.partition("@")
        if domain and domain != DOMAIN:
            return None
        base = local.removeprefix("releves.")
        if base not in self.users or password != PASSWORD:
            return None
        return f"{local}@{DOMAIN}"

    async def is_local_address(self, address: str) -> bool:
        local, _, domain = address.lower().partition("@")
        return domain == DOMAIN and local.removeprefix("releves.") in self.users


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_ssl(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="session")
def client_ssl(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
def store(database: Database, tmp_path: Path, clock: ManualClock) -> MessageStore:
    return MessageStore(database, tmp_path / "messages", clock)


def imap_section(**overrides: Any) -> ImapSection:
    values: dict[str, Any] = {"listen": "127.0.0.1", "port": 0, "tls_port": 0}
    values.update(overrides)
    return ImapSection(**values)


@pytest.fixture
async def server_factory(
    store: MessageStore, server_ssl: ssl.SSLContext, clock: ManualClock
) -> AsyncIterator[Callable[..., Any]]:
    started: list[ImapServer] = []

    async def make(**overrides: Any) -> ImapServer:
        tls = overrides.pop("ssl_context", server_ssl)
        options = {
            k: overrides.pop(k) for k in ("failure_delay", "poll_interval") if k in overrides
        }
        options.setdefault("failure_delay", 0.0)
        options.setdefault("poll_interval", 0.3)
        server = ImapServer(
            imap_section(**overrides), store, StaticAuthenticator(), tls, clock, **options
        )
        await server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        await server.stop()


@pytest.fixture
async def server(server_factory: Callable[..., Any]) -> ImapServer:
    result: ImapServer = await server_factory()
    return result


async def in_thread(function: Callable[[], T], limit: float = 30) -> T:
    """Run a blocking client conversation off the loop that serves it."""
    return await asyncio.wait_for(asyncio.to_thread(function), limit)


def sample_message(
    subject: str = "Hello", body: str = "Body text\r\n", sender: str = "alice@example.org"
) -> bytes:
    return (
        f"From: Alice <{sender}>\r\n"
        f"To: demo@{DOMAIN}\r\n"
        f"Subject: {subject}\r\n"
        "Date: Tue, 10 Mar 2026 10:00:00 +0100\r\n"
        "Message-ID: <m1@example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"{body}"
    ).encode()

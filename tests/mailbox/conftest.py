"""Fixtures of the mailbox tests: a real IMAP server on 127.0.0.1 port 0 over a real store."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trustme

from releves_mailer.clock import ManualClock
from releves_mailer.config import AuthSection, ImapSection
from releves_mailer.db import Database
from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.store import MessageStore
from releves_mailer.portfolio.auth import PasswordGuard
from releves_mailer.portfolio.logins import LocalBox
from tests.waiting import WAIT

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

    async def local_box(self, address: str) -> LocalBox | None:
        local, _, domain = address.lower().partition("@")
        base = local.removeprefix("releves.")
        if domain != DOMAIN or base not in self.users:
            return None
        return LocalBox(f"{local}@{DOMAIN}", sorted(self.users).index(base), base != local)

    async def credential_stamps(self, addresses: Collection[str]) -> dict[str, bytes]:
        """One unchanging password: a user removed from ``users`` loses its sessions."""
        stamps = {}
        for address in addresses:
            local, _, domain = address.partition("@")
            if domain == DOMAIN and local.removeprefix("releves.") in self.users:
                stamps[address] = b"static"
        return stamps


def quick_guard(clock: ManualClock, **limits: Any) -> PasswordGuard:
    """The login guard with its default limits but no delay (tests of other things)."""
    limits.setdefault("delay_after_failures", 1000)
    return PasswordGuard(clock, AuthSection(**limits), DOMAIN)


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
async def store(
    database: Database, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[MessageStore]:
    message_store = MessageStore(database, tmp_path / "messages", clock)
    yield message_store
    await message_store.close()


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
        options = {k: overrides.pop(k) for k in ("guard", "poll_interval") if k in overrides}
        options.setdefault("guard", quick_guard(clock))
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


async def in_thread(function: Callable[[], T], limit: float = WAIT) -> T:
    """Run a blocking client conversation off the loop that serves it."""
    return await asyncio.wait_for(asyncio.to_thread(function), limit)


_KEYS = itertools.count(1)


def new_key() -> str:
    """A Message-ID never delivered before in this test run (an idempotency key)."""
    return f"<key-{next(_KEYS)}@test>"


async def put(store: MessageStore, address: str, raw: bytes, **options: Any) -> int:
    """Deliver ``raw`` under a fresh idempotency key; its UID."""
    receipt = await store.deliver(address, raw, new_key(), **options)
    assert receipt.stored and receipt.uid is not None
    return receipt.uid


def crash_after(function: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """``function``, then a crash: the transaction it ran in is rolled back."""

    async def crashing(*args: Any, **kwargs: Any) -> T:
        await function(*args, **kwargs)
        raise RuntimeError("crash before commit")

    return crashing


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


class RawClient:
    """A byte-level IMAP client for transcripts the libraries cannot produce."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.greeting = b""

    @classmethod
    async def connect(cls, port: int, login: bool = True, first: bytes = b"") -> RawClient:
        """A connection, its greeting read; with ``login``, logged in as ``demo``.

        ``first`` (then the LOGIN) is sent before the greeting is read: the server finds it
        waiting as soon as it has greeted, so a short pre-login idle timeout cannot run out
        while this side, on a loaded machine, is slow to read the greeting and answer it."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        sent = first + (f'a0 LOGIN demo "{PASSWORD}"\r\n'.encode() if login else b"")
        if sent:
            await client.send(sent)
        client.greeting = await client.line()
        if login:
            lines = await client.until_tagged(b"a0")
            assert b" OK " in lines[-1], lines
        return client

    async def line(self) -> bytes:
        return await asyncio.wait_for(self.reader.readuntil(b"\n"), WAIT)

    async def until_closed(self) -> list[bytes]:
        """Every line the server still sends, up to its closing the connection (EOF)."""
        lines: list[bytes] = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), WAIT)
            if not line:
                return lines
            lines.append(line)

    async def send(self, data: bytes | str) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)
        await self.writer.drain()

    async def until_tagged(self, tag: bytes) -> list[bytes]:
        """Lines (literals inline) up to and including the tagged one."""
        lines: list[bytes] = []
        while True:
            line = await self.line()
            while line.endswith(b"}\r\n") and b"{" in line:
                size = int(line[line.rindex(b"{") + 1 : -3])
                line += await asyncio.wait_for(self.reader.readexactly(size), WAIT)
                line += await self.line()
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    async def command(self, text: bytes | str) -> list[bytes]:
        data = text.encode() if isinstance(text, str) else text
        await self.send(data + b"\r\n")
        return await self.until_tagged(data.split(b" ", 1)[0])

    async def ok(self, text: bytes | str) -> list[bytes]:
        lines = await self.command(text)
        assert b" OK " in lines[-1], lines
        return lines

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()

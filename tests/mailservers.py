"""The real SMTP and IMAP servers on port 0 over a real store, sharing one login guard.

Used by the SMTP tests of the daemon and the hostile-client tests: ``mail_servers()`` starts
them (optionally a second IMAP listener on ``::1``, a second client address for the guard),
``smtp_client()`` gives an aiosmtplib client past STARTTLS, logged in when asked, and
``inbox_subjects()`` reads a box back over imaplib.
"""

from __future__ import annotations

import contextlib
import imaplib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.header import decode_header, make_header
from pathlib import Path

import aiosmtplib
import trustme

from releves_mailer.clock import ManualClock
from releves_mailer.config import AuthSection, ImapSection, SmtpSection
from releves_mailer.db import Database
from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.smtp import InboundHandler, SmtpServer, sink_deliverer
from releves_mailer.mailbox.store import MessageStore
from releves_mailer.portfolio.auth import PasswordGuard, PortfolioAuthenticator
from releves_mailer.portfolio.logins import Authenticator
from tests.factories import PASSWORD

DOMAIN = "releves.example"


@dataclass
class MailServers:
    smtp: SmtpServer
    imap: ImapServer
    #: The same IMAP service listening on ``::1`` (``None`` unless asked for).
    imap6: ImapServer | None
    store: MessageStore
    guard: PasswordGuard
    ca: trustme.CA

    @property
    def smtp_port(self) -> int:
        assert self.smtp.port is not None
        return self.smtp.port

    @property
    def imap_port(self) -> int:
        assert self.imap.port is not None
        return self.imap.port

    def client_tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


@contextlib.asynccontextmanager
async def mail_servers(
    database: Database,
    clock: ManualClock,
    folder: Path,
    *,
    smtp: SmtpSection | None = None,
    guard: PasswordGuard | None = None,
    authenticator: Authenticator | None = None,
    ipv6: bool = False,
    credentials_check_seconds: int = 30,
) -> AsyncIterator[MailServers]:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "::1", "localhost").configure_cert(context)
    store = MessageStore(database, folder / "messages", clock)
    auth = authenticator or PortfolioAuthenticator(database, DOMAIN)
    guard = guard or PasswordGuard(clock, AuthSection(delay_after_failures=1000), DOMAIN)

    section = smtp or SmtpSection(listen="127.0.0.1", port=0, max_message_size=200_000)
    handler = InboundHandler(
        auth,
        sink_deliverer(store, DOMAIN),
        clock,
        DOMAIN,
        guard=guard,
        usage=store.usage,
        config=section,
    )
    servers = [SmtpServer(section, handler, context, DOMAIN)]
    imaps = [
        ImapServer(
            ImapSection(
                listen=host,
                port=0,
                tls_port=0,
                credentials_check_seconds=credentials_check_seconds,
            ),
            store,
            auth,
            context,
            clock,
            guard=guard,
        )
        for host in (["127.0.0.1", "::1"] if ipv6 else ["127.0.0.1"])
    ]
    started: list[SmtpServer | ImapServer] = []
    try:
        for server in [*servers, *imaps]:
            await server.start()
            started.append(server)
        yield MailServers(servers[0], imaps[0], imaps[1] if ipv6 else None, store, guard, ca)
    finally:
        for server in reversed(started):
            await server.stop()
        await store.close()


@contextlib.asynccontextmanager
async def smtp_client(
    servers: MailServers, login: str | None = None, password: str | None = None
) -> AsyncIterator[aiosmtplib.SMTP]:
    """A client past EHLO and STARTTLS; logged in as ``login`` when given."""
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=servers.smtp_port,
        tls_context=servers.client_tls(),
        start_tls=False,
        timeout=30,
    )
    await client.connect()
    try:
        await client.starttls()
        await client.ehlo()
        if login is not None:
            assert password is not None
            await client.login(login, password)
        yield client
    finally:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await client.quit()


def inbox_subjects(port: int, login: str) -> list[str]:
    """The decoded subjects in the INBOX of ``login`` (password ``PASSWORD``), over imaplib."""
    client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    try:
        client.login(login, PASSWORD)
        _, count = client.select("INBOX")
        if count == [b"0"]:
            return []
        _, data = client.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        headers = [part[1].decode() for part in data if isinstance(part, tuple)]
        return [
            str(make_header(decode_header(h.removeprefix("Subject:").strip()))) for h in headers
        ]
    finally:
        client.logout()

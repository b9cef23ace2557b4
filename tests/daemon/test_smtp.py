"""The inbound SMTP server: local boxes only, AUTH, size limit, delivery visible over IMAP."""

from __future__ import annotations

import asyncio
import imaplib
import ssl
from collections.abc import AsyncIterator, Sequence
from email.header import decode_header, make_header
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
import trustme
from aiosmtpd.smtp import Envelope, Session

from releves_mailer.clock import ManualClock
from releves_mailer.config import ImapSection, SmtpSection
from releves_mailer.db import Database
from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.smtp import InboundHandler, SmtpServer
from releves_mailer.mailbox.store import MessageStore
from releves_mailer.portfolio.auth import PortfolioAuthenticator
from tests.factories import PASSWORD

DOMAIN = "releves.example"
pytestmark = pytest.mark.usefixtures("family")


class Servers:
    def __init__(self, smtp: SmtpServer, imap: ImapServer, ca: trustme.CA) -> None:
        self.smtp = smtp
        self.imap = imap
        self.ca = ca


@pytest.fixture
async def servers(database: Database, clock: ManualClock, tmp_path: Path) -> AsyncIterator[Servers]:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    store = MessageStore(database, tmp_path / "messages", clock)
    auth = PortfolioAuthenticator(database, DOMAIN)

    async def deliver(addresses: Sequence[str], raw: bytes) -> None:
        async with database.session() as session:
            for address in addresses:
                await store.deliver(session, address, raw)

    smtp = SmtpServer(
        SmtpSection(listen="127.0.0.1", port=0, max_message_size=200_000),
        InboundHandler(auth, deliver, clock, DOMAIN),
        context,
        DOMAIN,
    )
    imap = ImapServer(
        ImapSection(listen="127.0.0.1", port=0, tls_port=0),
        store,
        auth,
        context,
        clock,
        failure_delay=0,
    )
    await smtp.start()
    await imap.start()
    yield Servers(smtp, imap, ca)
    await imap.stop()
    await smtp.stop()
    await store.close()


def message(to: str, body: str = "Bonjour") -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "expediteur@ailleurs.example"
    mail["To"] = to
    mail["Subject"] = "Essai de dépôt"
    mail.set_content(body)
    return mail


def imap_subjects(port: int, login: str) -> list[str]:
    client = imaplib.IMAP4("127.0.0.1", port)
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


async def test_local_mail_is_delivered_and_readable_over_imap(servers: Servers) -> None:
    assert servers.smtp.port is not None and servers.imap.port is not None
    errors, _ = await aiosmtplib.send(
        message(f"cabinet@{DOMAIN}"), hostname="127.0.0.1", port=servers.smtp.port, start_tls=False
    )
    assert errors == {}
    subjects = await asyncio.to_thread(imap_subjects, servers.imap.port, "cabinet")
    assert subjects == ["Essai de dépôt"]
    # The dedicated box is a box of its own.
    await aiosmtplib.send(
        message(f"releves.agence@{DOMAIN}"),
        hostname="127.0.0.1",
        port=servers.smtp.port,
        start_tls=False,
    )
    assert (
        len(await asyncio.to_thread(imap_subjects, servers.imap.port, f"releves.agence@{DOMAIN}"))
        == 1
    )
    assert await asyncio.to_thread(imap_subjects, servers.imap.port, "agence") == []


async def test_outside_and_unknown_recipients_are_refused(servers: Servers) -> None:
    assert servers.smtp.port is not None
    for recipient in ("quelquun@ailleurs.example", f"inconnu@{DOMAIN}"):
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as caught:
            await aiosmtplib.send(
                message(recipient), hostname="127.0.0.1", port=servers.smtp.port, start_tls=False
            )
        assert caught.value.recipients[0].code == 550


async def test_size_limit(servers: Servers) -> None:
    assert servers.smtp.port is not None
    with pytest.raises(aiosmtplib.SMTPResponseException) as caught:
        await aiosmtplib.send(
            message(f"cabinet@{DOMAIN}", "x" * 300_000),
            hostname="127.0.0.1",
            port=servers.smtp.port,
            start_tls=False,
        )
    assert caught.value.code == 552


async def test_auth_after_starttls(servers: Servers) -> None:
    assert servers.smtp.port is not None
    client_context = ssl.create_default_context()
    servers.ca.configure_trust(client_context)
    async with aiosmtplib.SMTP(
        hostname="127.0.0.1", port=servers.smtp.port, tls_context=client_context, start_tls=False
    ) as client:
        await client.ehlo()
        assert "auth" not in client.esmtp_extensions  # never in clear
        await client.starttls()
        await client.ehlo()
        assert "plain" in client.server_auth_methods
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await client.login("cabinet", "mauvais mot de passe")
        await client.login("cabinet", PASSWORD)
        await client.send_message(message(f"agence@{DOMAIN}"))


async def test_remote_clients_must_authenticate(database: Database, clock: ManualClock) -> None:
    delivered: list[Sequence[str]] = []

    async def deliver(addresses: Sequence[str], raw: bytes) -> None:
        delivered.append(addresses)

    handler = InboundHandler(PortfolioAuthenticator(database, DOMAIN), deliver, clock, DOMAIN)
    session = Session(asyncio.get_running_loop())
    session.peer = ("192.0.2.10", 40000)
    envelope = Envelope()
    status = await handler.handle_RCPT(None, session, envelope, f"cabinet@{DOMAIN}", [])  # type: ignore[arg-type]
    assert status.startswith("530")
    session.authenticated = True
    status = await handler.handle_RCPT(None, session, envelope, f"cabinet@{DOMAIN}", [])  # type: ignore[arg-type]
    assert status.startswith("250") and envelope.rcpt_tos == [f"cabinet@{DOMAIN}"]
    assert delivered == []

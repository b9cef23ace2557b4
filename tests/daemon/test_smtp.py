"""The inbound SMTP server: local boxes only, AUTH, size limit, delivery visible over IMAP.

The forgery rules (no mail to the dedicated boxes, own family and own sender only, trusted
networks, quota) are in ``tests/security/test_smtp_forgery.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

from releves_mailer.clock import ManualClock
from releves_mailer.db import Database
from tests.factories import PASSWORD
from tests.mailservers import DOMAIN, MailServers, inbox_subjects, mail_servers, smtp_client

pytestmark = pytest.mark.usefixtures("family")


@pytest.fixture
async def servers(
    database: Database, clock: ManualClock, tmp_path: Path
) -> AsyncIterator[MailServers]:
    async with mail_servers(database, clock, tmp_path) as started:
        yield started


def message(to: str, body: str = "Bonjour", sender: str = f"cabinet@{DOMAIN}") -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = to
    mail["Subject"] = "Essai de dépôt"
    mail.set_content(body)
    return mail


async def test_local_mail_is_delivered_and_readable_over_imap(servers: MailServers) -> None:
    async with smtp_client(servers, "cabinet", PASSWORD) as client:
        errors, _ = await client.send_message(message(f"agence@{DOMAIN}"))
        assert errors == {}
        await client.send_message(message(f"cabinet@{DOMAIN}"))
    subjects = await asyncio.to_thread(inbox_subjects, servers.imap_port, "agence")
    assert subjects == ["Essai de dépôt"]
    assert len(await asyncio.to_thread(inbox_subjects, servers.imap_port, "cabinet")) == 1
    # The account's own box and its dedicated box are two boxes.
    assert (
        await asyncio.to_thread(inbox_subjects, servers.imap_port, f"releves.agence@{DOMAIN}") == []
    )


async def test_outside_and_unknown_recipients_are_refused(servers: MailServers) -> None:
    async with smtp_client(servers, "cabinet", PASSWORD) as client:
        for recipient in ("quelquun@ailleurs.example", f"inconnu@{DOMAIN}"):
            with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as caught:
                await client.send_message(message(recipient))
            assert caught.value.recipients[0].code == 550


async def test_size_limit(servers: MailServers) -> None:
    async with smtp_client(servers, "cabinet", PASSWORD) as client:
        with pytest.raises(aiosmtplib.SMTPResponseException) as caught:
            await client.send_message(message(f"agence@{DOMAIN}", "x" * 300_000))
    assert caught.value.code == 552


async def test_auth_after_starttls(servers: MailServers) -> None:
    async with aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=servers.smtp_port,
        tls_context=servers.client_tls(),
        start_tls=False,
    ) as client:
        await client.ehlo()
        assert "auth" not in client.esmtp_extensions  # never in clear
        await client.starttls()
        await client.ehlo()
        assert "plain" in client.server_auth_methods
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as caught:
            await client.login("cabinet", "mauvais mot de passe")
        assert caught.value.code == 535
        await client.login("cabinet", PASSWORD)
        await client.send_message(message(f"agence@{DOMAIN}"))


async def test_auth_login_and_malformed_plain(servers: MailServers) -> None:
    async with smtp_client(servers) as client:
        # AUTH PLAIN with an authorization identity of another user: refused by the parser.
        response = await client.execute_command(b"AUTH", b"PLAIN", b"YWdlbmNlAGNhYmluZXQAeA==")
        assert response.code == 501
        response = await client.execute_command(b"AUTH", b"PLAIN", b"not base64!")
        assert response.code == 501
        await client.auth_login("cabinet", PASSWORD)
        await client.send_message(message(f"agence@{DOMAIN}"))

"""The mail path end to end: the real SMTP server files attachments sent to edi.<login>@,
an unreadable one gets a French reply in the account's default box (read over IMAP)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email
import email.policy
import imaplib
import ssl
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
import trustme
from sqlalchemy import select

from releves_mailer.clock import ManualClock
from releves_mailer.config import AuthSection, ImapSection, SmtpSection
from releves_mailer.db import Database
from releves_mailer.db.models import EdiDeposit, PortalAccount
from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.smtp import InboundHandler, SmtpServer, sink_deliverer
from releves_mailer.mailbox.store import MessageStore
from releves_mailer.portfolio.accounts import AccountInput, create_account
from releves_mailer.portfolio.auth import PasswordGuard, PortfolioAuthenticator
from releves_mailer.services.edi import EdiService
from releves_mailer.services.edi_mail import EdiMailbox
from tests.edi.interchanges import Decl, company, interchange
from tests.factories import PASSWORD, make_nic, make_siren

DOMAIN = "releves.example"
Family = tuple[PortalAccount, PortalAccount]


@contextlib.asynccontextmanager
async def servers(
    database: Database, clock: ManualClock, folder: Path
) -> AsyncIterator[tuple[int, int, ssl.SSLContext, EdiService]]:
    """(SMTP port, IMAP port, client TLS context, EDI service) of real servers on port 0."""
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    store = MessageStore(database, folder / "messages", clock)
    auth = PortfolioAuthenticator(database, DOMAIN)
    guard = PasswordGuard(clock, AuthSection(delay_after_failures=1000), DOMAIN)
    service = EdiService(database, clock)
    section = SmtpSection(listen="127.0.0.1", port=0, max_message_size=2_000_000)
    handler = InboundHandler(
        auth,
        sink_deliverer(store, DOMAIN),
        clock,
        DOMAIN,
        guard=guard,
        usage=store.usage,
        config=section,
        deposits=EdiMailbox(service, store, DOMAIN, clock),
    )
    smtp = SmtpServer(section, handler, server_tls, DOMAIN)
    imap = ImapServer(
        ImapSection(listen="127.0.0.1", port=0, tls_port=0),
        store,
        auth,
        server_tls,
        clock,
        guard=guard,
    )
    await smtp.start()
    await imap.start()
    try:
        assert smtp.port is not None and imap.port is not None
        yield smtp.port, imap.port, client_tls, service
    finally:
        await imap.stop()
        await smtp.stop()
        await store.close()


def _mail(sender: str, to: str, attachments: list[tuple[str, bytes]]) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = "Dépôts du mois"
    message.set_content("Ci-joint nos dépôts EDI.")
    for name, data in attachments:
        message.add_attachment(data, maintype="application", subtype="edifact", filename=name)
    return message


async def _send(port: int, tls: ssl.SSLContext, login: str | None, message: EmailMessage) -> None:
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1", port=port, tls_context=tls, start_tls=False, timeout=30
    )
    await client.connect()
    try:
        await client.starttls()
        if login is not None:
            await client.login(login, PASSWORD)
        await client.send_message(message)
    finally:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await client.quit()


def _inbox(port: int, login: str) -> list[EmailMessage]:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    try:
        client.login(login, PASSWORD)
        _, count = client.select("INBOX")
        if count == [b"0"]:
            return []
        _, data = client.fetch("1:*", "(BODY.PEEK[])")
        return [
            email.message_from_bytes(part[1], policy=email.policy.default)  # type: ignore[misc]
            for part in data
            if isinstance(part, tuple)
        ]
    finally:
        client.logout()


async def _deposits(database: Database) -> list[str]:
    async with database.session() as session:
        return list(await session.scalars(select(EdiDeposit.file_name).order_by(EdiDeposit.id)))


async def test_attachments_filed_and_bad_one_answered_in_french(
    database: Database, clock: ManualClock, family: Family, tmp_path: Path
) -> None:
    primary, _ = family
    siren, nic = company(1, with_nic=True)
    good = interchange([Decl(siren=siren, nic=nic, name="ALPHA", deposited_on=dt.date(2026, 3, 1))])
    bad = good.replace(b"UN:TVA'", b"UN:ABC'")
    async with servers(database, clock, tmp_path) as (smtp, imap, tls, service):
        message = _mail(
            f"cabinet@{DOMAIN}", f"edi.cabinet@{DOMAIN}", [("bon.edi", good), ("faux.edi", bad)]
        )
        await _send(smtp, tls, "cabinet", message)
        assert await _deposits(database) == ["bon.edi"]
        (reply,) = await asyncio.to_thread(_inbox, imap, "cabinet")
        assert reply["Subject"] == "Dépôt EDI refusé : Dépôts du mois"
        assert reply["From"] == f"portail@{DOMAIN}"
        body = reply.get_content()
        assert "faux.edi : segment n° 2 : téléprocédure inconnue « ABC »" in body
        assert "1 autre(s) fichier(s) de ce message ont été enregistrés" in body

        # The same file again, by the secondary account of the family: kept once, no reply.
        await _send(
            smtp,
            tls,
            "agence",
            _mail(f"agence@{DOMAIN}", f"edi.cabinet@{DOMAIN}", [("copie.edi", good)]),
        )
        assert await _deposits(database) == ["bon.edi"]
        assert len(await asyncio.to_thread(_inbox, imap, "cabinet")) == 1

        # No attachment at all: a reply says so.
        await _send(smtp, tls, "cabinet", _mail(f"cabinet@{DOMAIN}", f"edi.cabinet@{DOMAIN}", []))
        replies = await asyncio.to_thread(_inbox, imap, "cabinet")
        assert len(replies) == 2
        assert "aucune pièce jointe" in replies[1].get_content()

        report = await service.discover(primary.id)
        assert [f.siren + f.nic for f in report.created] == [siren + nic]


async def test_only_an_authenticated_sender_of_the_family_may_file(
    database: Database, clock: ManualClock, family: Family, tmp_path: Path
) -> None:
    async with database.session() as session:
        await create_account(
            session,
            clock,
            AccountInput(
                login="autre",
                company_name="Autre cabinet",
                siret=make_siren(3) + make_nic(make_siren(3)),
                email="autre@autre.example",
            ),
            PASSWORD,
        )
    data = interchange([Decl(siren=company(2)[0], name="BETA")])
    async with servers(database, clock, tmp_path) as (smtp, imap, tls, _):
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await _send(
                smtp,
                tls,
                "autre",
                _mail(f"autre@{DOMAIN}", f"edi.cabinet@{DOMAIN}", [("x.edi", data)]),
            )
        assert "authenticated sender of the account" in str(refused.value)
        with pytest.raises(aiosmtplib.SMTPSenderRefused):
            await _send(
                smtp,
                tls,
                None,
                _mail(f"cabinet@{DOMAIN}", f"edi.cabinet@{DOMAIN}", [("x.edi", data)]),
            )
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            await _send(
                smtp,
                tls,
                "cabinet",
                _mail(f"cabinet@{DOMAIN}", f"edi.inconnu@{DOMAIN}", [("x.edi", data)]),
            )
        assert await _deposits(database) == []
        assert (
            await asyncio.to_thread(_inbox, imap, "autre") == []
            and await asyncio.to_thread(_inbox, imap, "cabinet") == []
        )

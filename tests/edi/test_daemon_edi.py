"""The real daemon serves the EDI paths: upload and analysis in its portal, mail to
edi.<login>@ through its SMTP server with the refusal answered in the account's box."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import imaplib
import ssl
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

from releves_mailer.db import Database
from releves_mailer.services.edi import EdiService
from tests.daemon.harness import add_portal_account, daemon_config, portal_client, running_daemon
from tests.edi.interchanges import Decl, company, interchange
from tests.factories import PASSWORD
from tests.waiting import polls
from tests.web.portal.conftest import csrf_of


def _unverified() -> ssl.SSLContext:
    # The daemon's self-signed test certificate: the channel, not its identity, is tested.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _inbox_bodies(port: int, login: str) -> list[str]:
    client = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=_unverified(), timeout=30)
    try:
        client.login(login, PASSWORD)
        _, count = client.select("INBOX")
        if count == [b"0"]:
            return []
        _, data = client.fetch("1:*", "(BODY.PEEK[])")
        found = []
        for part in data:
            if isinstance(part, tuple):
                message = email.message_from_bytes(part[1], policy=email.policy.default)
                assert isinstance(message, EmailMessage)
                found.append(f"{message['Subject']}\n{message.get_content()}")
        return found
    finally:
        client.logout()


async def test_portal_and_mail_paths_in_the_daemon(tmp_path: Path) -> None:
    config = await daemon_config(tmp_path)
    account_id = await add_portal_account(config)
    domain = config.portal.domain
    siren = company(1)[0]
    good = interchange([Decl(siren=siren, name="DELTA", procedure="IR")])
    async with running_daemon(config) as daemon:
        async with portal_client(daemon) as client:
            page = await client.get("/portail/edi")
            assert page.status_code == 200
            uploaded = await client.post(
                "/portail/edi/depots",
                data={"csrf": csrf_of(page.text)},
                files=[("fichiers", ("delta.edi", good, "application/octet-stream"))],
            )
            assert "Enregistré : 1 déclaration(s)" in uploaded.text
            started = await client.post("/portail/edi/analyse", data={"csrf": csrf_of(page.text)})
            assert started.status_code == 303
            async for _ in polls("the analysis did not finish", every=0.05):
                report = await client.get(started.headers["Location"])
                if 'id="rapport"' in report.text:
                    break
                assert "Merci de patienter" in report.text
            assert "1 redevable(s) créé(s)" in report.text

        message = EmailMessage()
        message["From"] = f"cabinet@{domain}"
        message["To"] = f"edi.cabinet@{domain}"
        message["Subject"] = "Dépôts"
        message.set_content("Ci-joint.")
        message.add_attachment(
            b"%PDF-1.7", maintype="application", subtype="pdf", filename="scan.pdf"
        )
        smtp = aiosmtplib.SMTP(
            hostname="127.0.0.1",
            port=daemon.ports["smtp"],
            tls_context=_unverified(),
            start_tls=False,
            timeout=30,
        )
        await smtp.connect()
        try:
            await smtp.starttls()
            await smtp.login("cabinet", PASSWORD)
            await smtp.send_message(message)
        finally:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await smtp.quit()
        imaps = daemon.ports["imaps"]
        assert imaps is not None
        (reply,) = await asyncio.to_thread(_inbox_bodies, imaps, "cabinet")
        assert reply.startswith("Dépôt EDI refusé : Dépôts")
        assert "scan.pdf : segment n° 1 : ce n'est pas un échange EDIFACT" in reply

    database = Database(config.database_url)
    try:
        overview = await EdiService(database, daemon.clock).overview(account_id)
    finally:
        await database.dispose()
    assert overview.deposits == 1 and overview.last_analysis is not None

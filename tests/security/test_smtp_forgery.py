"""Issue 13, point 7: the SMTP server cannot be used to forge statements.

The real SMTP server on 127.0.0.1 port 0 over the real store and accounts (``cabinet`` and
its secondary ``agence``, an unrelated ``autre``), driven by aiosmtplib; what landed is read
back over IMAP with imaplib and through the store's usage.
"""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

from releves_mailer.clock import ManualClock
from releves_mailer.config import SmtpSection
from releves_mailer.db import Database
from tests.factories import PASSWORD
from tests.mailservers import DOMAIN, MailServers, inbox_subjects, mail_servers, smtp_client
from tests.web.portal.conftest import make_account

pytestmark = pytest.mark.usefixtures("family")

CABINET, AGENCE, AUTRE = (f"{login}@{DOMAIN}" for login in ("cabinet", "agence", "autre"))
DEDICATED = f"releves.cabinet@{DOMAIN}"
ALL_BOXES = (CABINET, AGENCE, AUTRE, DEDICATED, f"releves.agence@{DOMAIN}")


@pytest.fixture(autouse=True)
async def unrelated_account(database: Database, clock: ManualClock) -> None:
    await make_account(database, clock, "autre", 3)


def forged(to: str, sender: str = f"noreply@{DOMAIN}", size: int = 0) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = to
    mail["Subject"] = "Releve 99999 FORGED"
    mail.set_content("Relevé de compte\n" + "x" * size)
    return mail


def section(**values: object) -> SmtpSection:
    return SmtpSection(**{"listen": "127.0.0.1", "port": 0, "max_message_size": 200_000, **values})  # type: ignore[arg-type]


async def usages(mail: MailServers) -> dict[str, int]:
    return {address: await mail.store.usage(address) for address in ALL_BOXES}


async def test_unauthenticated_mail_is_refused_by_default(
    database: Database, clock: ManualClock, tmp_path: Path
) -> None:
    async with mail_servers(database, clock, tmp_path) as mail:
        for recipient in (DEDICATED, AGENCE, AUTRE):
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as caught:
                await aiosmtplib.send(
                    forged(recipient), hostname="127.0.0.1", port=mail.smtp_port, start_tls=False
                )
            assert caught.value.code == 530
        # Past STARTTLS but without AUTH, and with a large message: still refused at MAIL.
        async with smtp_client(mail) as client:
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as caught:
                await client.send_message(forged(AGENCE, size=150_000))
            assert caught.value.code == 530
            with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
                await client.rcpt(AGENCE)
            assert refused.value.code in (503, 530)
        assert set((await usages(mail)).values()) == {0}


async def test_the_dedicated_box_is_refused_to_everyone(
    database: Database, clock: ManualClock, tmp_path: Path
) -> None:
    trusted = section(trusted_networks=["127.0.0.0/8"])
    async with mail_servers(database, clock, tmp_path, smtp=trusted) as mail:
        async with smtp_client(mail, "cabinet", PASSWORD) as client:
            for recipient in (DEDICATED, f"Releves.Agence@{DOMAIN}"):
                with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as caught:
                    await client.send_message(forged(recipient, sender=CABINET))
                assert caught.value.recipients[0].code == 550
        # Not even a trusted network may write there.
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as caught:
            await aiosmtplib.send(
                forged(DEDICATED), hostname="127.0.0.1", port=mail.smtp_port, start_tls=False
            )
        assert caught.value.recipients[0].code == 550
        assert set((await usages(mail)).values()) == {0}


async def test_an_authenticated_sender_writes_only_in_its_family_and_its_own_name(
    database: Database, clock: ManualClock, tmp_path: Path
) -> None:
    async with mail_servers(database, clock, tmp_path) as mail:
        async with smtp_client(mail, "agence", PASSWORD) as client:
            # Another family's box.
            with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as caught:
                await client.send_message(forged(AUTRE, sender=AGENCE))
            assert caught.value.recipients[0].code == 550
            # Someone else's envelope sender, even of its own family.
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as sender_refused:
                await client.send_message(forged(CABINET, sender=CABINET))
            assert sender_refused.value.code == 553
            # Its own envelope, someone else's From: or Sender:.
            for mail_from, extra in (
                (f"noreply@{DOMAIN}", {}),
                (AGENCE, {"Sender": f"portail@{DOMAIN}"}),
                (f"{AGENCE}, portail@{DOMAIN}", {}),
            ):
                message = forged(CABINET, sender=mail_from)
                for name, value in extra.items():
                    message[name] = value
                with pytest.raises(aiosmtplib.SMTPDataError) as data_refused:
                    await client.send_message(message, sender=AGENCE)
                assert data_refused.value.code == 550
            assert set((await usages(mail)).values()) == {0}
            # Its own name, to its primary: delivered.
            errors, _ = await client.send_message(forged(CABINET, sender=AGENCE))
            assert errors == {}
        subjects = await asyncio.to_thread(inbox_subjects, mail.imap_port, "cabinet")
        assert subjects == ["Releve 99999 FORGED"]
        assert (await usages(mail))[AUTRE] == 0


async def test_a_trusted_network_may_deliver_without_authentication(
    database: Database, clock: ManualClock, tmp_path: Path
) -> None:
    trusted = section(trusted_networks=["192.0.2.0/24", "127.0.0.1/32"])
    async with mail_servers(database, clock, tmp_path, smtp=trusted) as mail:
        errors, _ = await aiosmtplib.send(
            forged(AUTRE, sender="scanner@cabinet.example"),
            hostname="127.0.0.1",
            port=mail.smtp_port,
            start_tls=False,
        )
        assert errors == {}
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as caught:
            await aiosmtplib.send(
                forged("quelquun@ailleurs.example"),
                hostname="127.0.0.1",
                port=mail.smtp_port,
                start_tls=False,
            )
        assert caught.value.recipients[0].code == 550  # still no open relay
        subjects = await asyncio.to_thread(inbox_subjects, mail.imap_port, "autre")
        assert subjects == ["Releve 99999 FORGED"]


async def test_a_full_box_answers_552_and_statements_still_arrive(
    database: Database, clock: ManualClock, tmp_path: Path
) -> None:
    quota = section(mailbox_quota=50_000)
    async with (
        mail_servers(database, clock, tmp_path, smtp=quota) as mail,
        smtp_client(mail, "cabinet", PASSWORD) as client,
    ):
        await client.send_message(forged(AGENCE, sender=CABINET, size=30_000))
        # The next one would not fit: refused at DATA, the box is unchanged.
        before = await mail.store.usage(AGENCE)
        with pytest.raises(aiosmtplib.SMTPResponseException) as caught:
            await client.send_message(forged(AGENCE, sender=CABINET, size=30_000))
        assert caught.value.code == 552
        assert await mail.store.usage(AGENCE) == before
        # The daemon's own deliveries go to the store, not through SMTP: never refused.
        await mail.store.deliver(AGENCE, b"Subject: statement\r\n\r\n" * 2000, "<statement@test>")
        assert await mail.store.usage(AGENCE) > 50_000
        # A full box is refused at RCPT already, even a small message.
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as full:
            await client.send_message(forged(AGENCE, sender=CABINET))
        assert full.value.recipients[0].code == 552
        # Over-size DATA is refused whatever the quota.
        with pytest.raises(aiosmtplib.SMTPResponseException) as big:
            await client.send_message(forged(CABINET, sender=CABINET, size=300_000))
        assert big.value.code == 552
        assert await mail.store.usage(CABINET) == 0

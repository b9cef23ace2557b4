"""The "Messages envoyés" page: the account's mails to outside addresses, tokens masked."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from releves_mailer.config import RelaySection
from releves_mailer.db.models import OutboxMessage, OutboxState
from releves_mailer.notify.masking import MASK, mask_text, masked_copy, readable_text
from releves_mailer.notify.outbox import Outbox
from tests.mailservers import DOMAIN
from tests.web.portal.webmail.harness import WebmailBed

pytestmark = pytest.mark.db


async def test_a_pending_link_mail_is_listed_with_its_token_masked(bed: WebmailBed) -> None:
    issued = await bed.links.send(bed.cabinet.redevable_ids[0])
    # The relay of the bed (port 1) refuses: the mail stays pending with its error.
    report = await bed.links.outbox.send_due()
    assert report.retried == 1
    async with bed.logged_in() as client:
        listing = await client.get("/portail/envoyes")
        mail_id = re.findall(r'<tr data-id="(\d+)">', listing.text)
        detail = await client.get(f"/portail/envoyes/{mail_id[0]}")
    assert listing.status_code == 200 and "1 message(s)" in listing.text
    assert "client10@example.com" in listing.text and "En attente" in listing.text
    assert "Lien sécurisé" in listing.text
    row = re.search(r'<tr data-id="\d+">.*?</tr>', listing.text, re.S)
    assert row is not None and "<td>1</td>" in row.group(0)  # one attempt
    assert detail.status_code == 200
    assert issued.token not in detail.text and issued.token not in listing.text
    assert f"token={MASK}" in detail.text
    assert "Dernière erreur" in detail.text and "SMTPConnectError" in detail.text


async def test_a_sent_mail_keeps_only_its_masked_copy(bed: WebmailBed) -> None:
    issued = await bed.links.send(bed.cabinet.redevable_ids[0])
    # No relay configured: the mail is filed locally and counts as sent.
    filing = Outbox(bed.database, bed.clock, RelaySection(), domain=DOMAIN, data_dir=bed.folder)
    assert (await filing.send_due()).filed == 1
    async with bed.database.session() as session:
        stored = (await session.scalars(select(OutboxMessage))).one()
    assert stored.state is OutboxState.SENT
    assert issued.token.encode() not in stored.raw
    async with bed.logged_in() as client:
        listing = await client.get("/portail/envoyes")
        mail_id = re.findall(r'<tr data-id="(\d+)">', listing.text)[0]
        detail = await client.get(f"/portail/envoyes/{mail_id}")
    assert "Envoyé" in listing.text
    assert f"token={MASK}" in detail.text and issued.token not in detail.text
    assert "72 heures" in detail.text or "lien" in detail.text.lower()


async def test_mails_of_another_account_are_neither_listed_nor_reachable(bed: WebmailBed) -> None:
    await bed.links.send(bed.autre.redevable_ids[0])
    async with bed.database.session() as session:
        mail_id = (await session.scalars(select(OutboxMessage.id))).one()
    async with bed.logged_in() as client:
        listing = await client.get("/portail/envoyes")
        detail = await client.get(f"/portail/envoyes/{mail_id}")
    async with bed.logged_in("autre") as client:
        own = await client.get(f"/portail/envoyes/{mail_id}")
    assert "0 message(s)" in listing.text and "Aucun message envoyé." in listing.text
    assert detail.status_code == 404
    assert own.status_code == 200


def test_tokens_are_masked_in_text_and_in_the_kept_copy() -> None:
    text = (
        "Lien : https://portail.example/releves/saisie?token=AbCdEf0123456789_-AbCdEf0123456789xyz"
    )
    masked = mask_text(text)
    assert "AbCdEf0123456789" not in masked and f"token={MASK}" in masked
    # A long word with no digit (a company name, a label) is left alone.
    assert mask_text("CONSTRUCTIONSMETALLIQUESDUSUDOUESTREUNIES") == (
        "CONSTRUCTIONSMETALLIQUESDUSUDOUESTREUNIES"
    )
    raw = (
        b"From: a@b.example\r\nTo: c@d.example\r\nSubject: Lien\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + text.encode() + b"\r\n"
    )
    copy = masked_copy(raw)
    assert b"AbCdEf0123456789" not in copy
    assert MASK in readable_text(copy) and "Subject: Lien" in copy.decode()

"""Fixtures of the partner-mode tests: a portfolio, every service, the HTTP server, a relay."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from releves_mailer.clock import ManualClock
from releves_mailer.collect.testbank import TestBank
from releves_mailer.config import HttpSection, RelaySection
from releves_mailer.db import Database
from releves_mailer.db.models import OutboxMessage, Periodicity, PortalAccount, Redevable
from releves_mailer.notify.outbox import Outbox
from releves_mailer.partner.alerts import AlertService
from releves_mailer.partner.flow import PartnerFlow
from releves_mailer.partner.links import LinkService
from releves_mailer.partner.mails import MailComposer, PartnerSettings
from releves_mailer.partner.testbank import TestBankPartner
from releves_mailer.render import Renderer
from releves_mailer.signing.secrets import KeyRing
from releves_mailer.web.app import create_app
from releves_mailer.web.server import HttpServer
from tests.notify.test_outbox import Relay, free_port

#: Has four test bank accounts (chèque, chèque USD, carte, livret) with seed 1.
SIREN = "800000036"
START = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)  # Monday 09:00 Paris


@dataclass
class Harness:
    database: Database
    clock: ManualClock
    keyring: KeyRing
    bank: TestBank
    partner: TestBankPartner
    outbox: Outbox
    links: LinkService
    flow: PartnerFlow
    alerts: AlertService
    settings: PartnerSettings
    server: HttpServer
    relay: Relay
    holder_id: int
    redevable_id: int

    @property
    def base_url(self) -> str:
        return self.settings.public_url

    async def queued(self, kind: str | None = None) -> list[EmailMessage]:
        """Every queued mail (optionally of one kind), oldest first, parsed."""
        async with self.database.session() as session:
            query = select(OutboxMessage).order_by(OutboxMessage.id)
            if kind is not None:
                query = query.where(OutboxMessage.kind == kind)
            rows = (await session.scalars(query)).all()
        return [message_from_bytes(row.raw, policy=policy.default) for row in rows]  # type: ignore[misc]

    async def relayed(self) -> list[EmailMessage]:
        """Send what is due through the relay, return everything the relay received."""
        await self.outbox.send_due()
        return [
            message_from_bytes(envelope.content, policy=policy.default)  # type: ignore[arg-type, misc]
            for envelope in self.relay.received
        ]


def body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


async def make_portfolio(database: Database, now: dt.datetime) -> tuple[int, int]:
    async with database.session() as session:
        holder = PortalAccount(
            login="brunol",
            company_name="EXPERT COMPTABLE TEST",
            siret="40483304800022",
            email="expert@cabinet.example",
            phone="0102030405",
            password_hash="not-a-real-hash",
            created_at=now,
            updated_at=now,
        )
        session.add(holder)
        await session.flush()
        redevable = Redevable(
            account_id=holder.id,
            family_id=holder.id,
            siren=SIREN,
            nic="",
            company_name="ENTREPRISE TEST",
            email="redevable@client.example",
            periodicity=Periodicity.JOURNALIERE,
            remote_entry=True,
            created_at=now,
            updated_at=now,
        )
        session.add(redevable)
        await session.flush()
        return holder.id, redevable.id


@pytest.fixture
async def harness(database: Database, clock: ManualClock, tmp_path: Path) -> AsyncIterator[Harness]:
    relay = Relay(free_port())
    await relay.start()
    port = free_port()
    settings = PartnerSettings(
        public_url=f"http://127.0.0.1:{port}",
        portal_name="Portail Relevés",
        domain="releves.example",
        support_email="support@releves.example",
        support_phone="04 77 81 04 69",
    )
    keyring = KeyRing([Fernet.generate_key()])
    bank = TestBank(clock, seed=1)
    partner = TestBankPartner(bank, clock, settings.public_url)
    outbox = Outbox(
        database,
        clock,
        RelaySection(host="127.0.0.1", port=relay.port, starttls=False),
        domain=settings.domain,
        data_dir=tmp_path,
        timeout=5,
    )
    renderer = Renderer()
    composer = MailComposer(renderer, settings, clock)
    links = LinkService(database, outbox, composer)
    modes = {partner.name: partner}
    flow = PartnerFlow(database, links, outbox, composer, keyring, modes, default_mode=partner.name)
    alerts = AlertService(database, links, outbox, composer, keyring, modes)
    app = create_app(renderer=renderer, settings=settings, flow=flow, testbank=partner)
    server = HttpServer(HttpSection(listen="127.0.0.1", port=port), app)
    await server.start()
    holder_id, redevable_id = await make_portfolio(database, clock.now())
    try:
        yield Harness(
            database,
            clock,
            keyring,
            bank,
            partner,
            outbox,
            links,
            flow,
            alerts,
            settings,
            server,
            relay,
            holder_id,
            redevable_id,
        )
    finally:
        await server.stop()
        await relay.stop()

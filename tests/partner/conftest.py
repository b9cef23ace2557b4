"""Fixtures of the partner-mode tests: a portfolio, every service, the HTTP server, a relay."""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import aiohttp
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from releves_mailer.aggregators.powens import PowensProvider
from releves_mailer.aggregators.powens.partner import PowensPartner
from releves_mailer.aggregators.testbank import TestBank, webview
from releves_mailer.aggregators.testbank.partner import TestBankPartner
from releves_mailer.clock import ManualClock
from releves_mailer.config import Config, HttpSection, PowensSection, RelaySection, load_config
from releves_mailer.db import Database
from releves_mailer.db.models import (
    BankAccount,
    BankEvent,
    BankEventKind,
    OutboxMessage,
    SecureLink,
)
from releves_mailer.listeners import reserve_port
from releves_mailer.notify.outbox import Outbox
from releves_mailer.partner.alerts import AlertService
from releves_mailer.partner.flow import PartnerFlow
from releves_mailer.partner.links import (
    REMOTE_ENTRY_REASON,
    LinkKind,
    LinkService,
    LinkState,
    hash_token,
    link_state,
)
from releves_mailer.partner.mails import MailComposer, PartnerSettings
from releves_mailer.partner.modes import PartnerMode
from releves_mailer.render import Renderer
from releves_mailer.signing.certificates import write_signing_pair
from releves_mailer.signing.secrets import KeyRing
from releves_mailer.web.app import create_app
from releves_mailer.web.server import HttpServer
from tests.factories import Holder, Spec, add_portfolio
from tests.fakes.powens_server import FakePowens, WebviewOutcome
from tests.notify.test_outbox import Relay

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


def plain_text(raw: bytes) -> str:
    """The text part of a mail as queued or relayed (S/MIME signed or not)."""
    message = message_from_bytes(raw, policy=policy.default)
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            return str(part.get_content())
    raise AssertionError("no text part")


SAISIE_TOKEN = re.compile(r"/releves/saisie\?token=([A-Za-z0-9_-]+)")


async def remote_entry_mails(session: AsyncSession) -> list[tuple[OutboxMessage, SecureLink]]:
    """Every queued secure-link mail with the link its token opens, checked to be the
    ``saisie`` link of Annexe 1 field 9 = 1 sent to the mail's recipient."""
    rows = (
        await session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.kind == "secure_link")
            .order_by(OutboxMessage.id)
        )
    ).all()
    found = []
    for row in rows:
        text = plain_text(row.raw)
        assert "vous demande de saisir vos identifiants bancaires" in text
        token = SAISIE_TOKEN.search(text)
        assert token is not None, text
        link = await session.scalar(
            select(SecureLink).where(SecureLink.token_hash == hash_token(token.group(1)))
        )
        assert link is not None, "the mailed token matches no stored link"
        assert (link.kind, link.created_by, link.reason) == (
            LinkKind.ENTRY.value,
            "auto",
            REMOTE_ENTRY_REASON,
        )
        assert link.recipient == row.recipient
        found.append((row, link))
    return found


def cli_data_dir(path: Path, extra_config: str = "") -> Config:
    """A data directory as ``init`` leaves it for link mails: config, signing pair."""
    (path / "releves-mailer.toml").write_text(
        '[portal]\ndata_dir = "."\ndomain = "releves.example"\n' + extra_config, encoding="utf-8"
    )
    config = load_config(path / "releves-mailer.toml", environ={})
    # A data directory made by `init` holds the portal's signing pair: link mails are signed.
    write_signing_pair(
        "portail@releves.example",
        "Portail",
        config.path(config.signing.key),
        config.path(config.signing.certificate),
        START,
    )
    return config


async def assert_three_accounts_attached(
    harness: Harness, link_id: int, connection_id: int, savings_label: str
) -> None:
    """After a ``saisie`` where the client ticked all but the savings account: the accounts,
    the spent link, the connection's events, and the two mails (link, then notice)."""
    async with harness.database.session() as session:
        rows = (await session.scalars(select(BankAccount).order_by(BankAccount.id))).all()
        assert [(a.label, a.active, a.connection_id) for a in rows] == [
            ("Compte chèque", True, connection_id),
            ("Compte chèque USD", True, connection_id),
            ("Compte carte débit différé", True, connection_id),
            (savings_label, False, connection_id),
        ]
        link = await session.get(SecureLink, link_id)
        assert link is not None and link_state(link, harness.clock.now()) is LinkState.USED
        kinds = (
            await session.scalars(
                select(BankEvent.kind)
                .where(BankEvent.connection_id == connection_id)
                .where(BankEvent.account_id.is_(None))
                .order_by(BankEvent.at, BankEvent.id)
            )
        ).all()
        assert kinds == [
            BankEventKind.LINK_SENT,
            BankEventKind.CONNECTION_CREATED,
            BankEventKind.LINK_USED,
        ]

    mails = await harness.relayed()
    assert len(mails) == 2
    notice = mails[1]
    assert notice["To"] == "expert@cabinet.example"
    text = body(notice)
    assert (
        "ENTREPRISE TEST a saisi ses identifiants bancaires et activé la collecte des relevés "
        "sur le(s) compte(s) bancaire(s) suivant(s) :" in text
    )
    for label in ("COMPTE CHÈQUE", "COMPTE CHÈQUE USD", "COMPTE CARTE DÉBIT DIFFÉRÉ"):
        assert f"- {label} (CONNECTEUR DE TEST)" in text
    assert "LIVRET" not in text


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


async def make_portfolio(database: Database, now: dt.datetime) -> tuple[int, int]:
    holder_id, (redevable_id,) = await add_portfolio(
        database,
        now,
        [
            Spec(
                siren=SIREN,
                name="ENTREPRISE TEST",
                email="redevable@client.example",
                remote_entry=True,
            )
        ],
        holder=Holder(
            login="brunol",
            company_name="EXPERT COMPTABLE TEST",
            email="expert@cabinet.example",
            phone="0102030405",
        ),
    )
    return holder_id, redevable_id


def _settings(port: int) -> PartnerSettings:
    return PartnerSettings(
        public_url=f"http://127.0.0.1:{port}",
        portal_name="Portail Relevés",
        domain="releves.example",
        support_email="support@releves.example",
        support_phone="04 77 81 04 69",
    )


@asynccontextmanager
async def _running(
    database: Database,
    clock: ManualClock,
    tmp_path: Path,
    port: int,
    relay: Relay,
    extra_modes: Sequence[PartnerMode] = (),
) -> AsyncIterator[Harness]:
    """Every partner service wired as the daemon does, the HTTP server started, a portfolio:
    the test bank mode first, then ``extra_modes`` (the last one is the default)."""
    settings = _settings(port)
    keyring = KeyRing([Fernet.generate_key()])
    bank = TestBank(clock, seed=1)
    partner = TestBankPartner(bank, clock, settings.public_url)
    outbox = Outbox(
        database,
        clock,
        RelaySection(host="127.0.0.1", port=relay.port, starttls=False),
        domain=settings.domain,
        data_dir=tmp_path,
        timeout=60,
    )
    renderer = Renderer()
    composer = MailComposer(renderer, settings, clock)
    links = LinkService(database, outbox, composer)
    modes: dict[str, PartnerMode] = {mode.name: mode for mode in (partner, *extra_modes)}
    default = (partner, *extra_modes)[-1].name
    flow = PartnerFlow(database, links, outbox, composer, keyring, modes, default_mode=default)
    alerts = AlertService(database, links, outbox, composer, keyring, modes)
    app = create_app(
        renderer=renderer,
        settings=settings,
        flow=flow,
        setups=[functools.partial(webview.setup, partner=partner)],
    )
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


@pytest.fixture
async def harness(database: Database, clock: ManualClock, tmp_path: Path) -> AsyncIterator[Harness]:
    relay = Relay(reserve_port())
    await relay.start()
    try:
        async with _running(database, clock, tmp_path, reserve_port(), relay) as running:
            yield running
    finally:
        await relay.stop()


# -- Powens ----------------------------------------------------------------------------------


@dataclass
class PowensHarness(Harness):
    """The harness with Powens as the default partner mode, against the fake server."""

    fake: FakePowens
    provider: PowensProvider
    powens: PowensPartner
    waits: list[float]


@pytest.fixture
async def powens_harness(
    database: Database, clock: ManualClock, tmp_path: Path
) -> AsyncIterator[PowensHarness]:
    """Both modes registered, Powens the default: links open the fake's Webview."""
    relay = Relay(reserve_port())
    await relay.start()
    port = reserve_port()
    fake = FakePowens(clock, redirect_uris=[_settings(port).callback_url])
    await fake.start()
    http = aiohttp.ClientSession()
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    section = PowensSection(
        enabled=True,
        domain="fake-sandbox",
        client_id=fake.client_id,
        client_secret=SecretStr(fake.client_secret),
        webhook_secret=SecretStr(fake.webhook_secret),
    )
    provider = PowensProvider.from_config(
        section,
        http,
        clock,
        base_url=fake.base_url,
        webview_base=fake.webview_base,
        sleep=sleep,
    )
    powens = PowensPartner(provider)
    try:
        async with _running(database, clock, tmp_path, port, relay, [powens]) as running:
            shared = {item.name: getattr(running, item.name) for item in fields(Harness)}
            yield PowensHarness(**shared, fake=fake, provider=provider, powens=powens, waits=waits)
    finally:
        await http.close()
        await fake.close()
        await relay.stop()


#: The three accounts the client ticks in the fake's Webview (the fourth is ``Livret A``).
POWENS_CHOSEN = frozenset({"Compte chèque", "Compte chèque USD", "Compte carte débit différé"})


async def through_powens_webview(client: aiohttp.ClientSession, link_url: str) -> tuple[str, str]:
    """Open ``link_url`` and let the fake's Webview act (its queued outcome): return the
    Webview URL and the callback URL it redirects to."""
    opened = await client.get(link_url, allow_redirects=False)
    assert opened.status == 302, await opened.text()
    webview = opened.headers["Location"]
    visited = await client.get(webview, allow_redirects=False)
    assert visited.status == 302, await visited.text()
    return webview, visited.headers["Location"]


async def attach_with_powens(harness: PowensHarness) -> int:
    """Send a ``saisie`` link and finish it through the fake: the connection id (local)."""
    issued = await harness.links.send(harness.redevable_id)
    harness.fake.queue_webview(WebviewOutcome(chosen=POWENS_CHOSEN))
    async with aiohttp.ClientSession() as client:
        _, callback = await through_powens_webview(client, issued.url)
        done = await client.get(callback, allow_redirects=False)
        assert done.status == 200, await done.text()
    async with harness.database.session() as session:
        link = await session.get(SecureLink, issued.link.id)
        assert link is not None and link.connection_id is not None
        return link.connection_id

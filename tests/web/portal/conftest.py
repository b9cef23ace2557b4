"""Fixtures of the portal tests: a portfolio of three accounts, the HTTP server, clients."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from releves_mailer.clock import ManualClock
from releves_mailer.config import HttpSection, RelaySection
from releves_mailer.db import Database
from releves_mailer.db.models import (
    BankAccount,
    BankConnection,
    BankEvent,
    BankEventKind,
    ConnectionState,
    Periodicity,
    PortalAccount,
    Redevable,
    SecureLink,
    Statement,
    StatementFile,
    StatementState,
    WindowKind,
)
from releves_mailer.notify.outbox import Outbox
from releves_mailer.partner.links import LinkService
from releves_mailer.partner.mails import MailComposer, PartnerSettings
from releves_mailer.portfolio.logins import LoginGuard
from releves_mailer.render import Renderer
from releves_mailer.services import Services
from releves_mailer.web.app import create_app
from releves_mailer.web.portal import setup_portal
from releves_mailer.web.server import HttpServer
from tests.factories import PASSWORD, add_subscribed_account, make_nic, make_siren

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found is not None, "no CSRF field in the page"
    return found.group(1)


def cfonb_bytes(statement_index: int) -> bytes:
    return (f"01{statement_index:0118d}\r\n" + f"07{statement_index:0118d}\r\n").encode()


async def log_in(client: httpx.AsyncClient, login: str, password: str = PASSWORD) -> None:
    """Log ``client`` in to the portal (its cookie jar keeps the session)."""
    page = await client.get("/portail/connexion")
    response = await client.post(
        "/portail/connexion",
        data={"login": login, "password": password, "csrf": csrf_of(page.text)},
    )
    assert response.status_code == 302, response.text


@dataclass
class Owned:
    """What one portal account owns in the fixture."""

    account_id: int
    login: str
    redevable_ids: list[int] = field(default_factory=list)
    bank_account_ids: list[int] = field(default_factory=list)
    statement_ids: list[int] = field(default_factory=list)


@dataclass
class PortalHarness:
    database: Database
    clock: ManualClock
    server: HttpServer
    settings: PartnerSettings
    primary: Owned
    secondary: Owned
    other: Owned

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, follow_redirects=False, timeout=30)

    @contextlib.asynccontextmanager
    async def logged_in(
        self, login: str, password: str = PASSWORD
    ) -> AsyncIterator[httpx.AsyncClient]:
        async with self.client() as client:
            await log_in(client, login, password)
            yield client


async def add_redevable(
    database: Database,
    now: dt.datetime,
    owner: Owned,
    family_id: int,
    index: int,
    *,
    statements: int = 1,
    name: str | None = None,
) -> None:
    """A redevable with one bank connection, one account and ``statements`` statements."""
    siren = make_siren(index)
    async with database.session() as session:
        redevable = Redevable(
            account_id=owner.account_id,
            family_id=family_id,
            siren=siren,
            nic=make_nic(siren),
            company_name=name or f"SOCIETE {index}",
            email=f"client{index}@example.com",
            periodicity=Periodicity.JOURNALIERE,
            remote_entry=True,
            created_at=now,
            updated_at=now,
        )
        session.add(redevable)
        await session.flush()
        connection = BankConnection(
            redevable_id=redevable.id,
            provider="testbank",
            provider_connection_id=f"c{index}",
            token_encrypted=b"x",
            bank_name="Connecteur de test",
            state=ConnectionState.OK,
            last_check_at=now,
            last_success_at=now,
            created_at=now,
            updated_at=now,
        )
        session.add(connection)
        await session.flush()
        iban = f"FR76300040000{index:014d}"
        account = BankAccount(
            redevable_id=redevable.id,
            connection_id=connection.id,
            provider_account_id=f"a{index}",
            iban=iban,
            bic="BNPAFRPP",
            label="Compte chèque",
            type="checking",
            activated_at=now,
            last_collected_at=now,
            created_at=now,
            updated_at=now,
        )
        session.add(account)
        await session.flush()
        session.add(
            BankEvent(
                at=now,
                kind=BankEventKind.IBAN_CHANGED,
                connection_id=connection.id,
                account_id=account.id,
                old_value="FRXX0000",
                new_value=iban,
                message="Mise à jour de l'IBAN",
            )
        )
        for number in range(1, statements + 1):
            due = now.date() - dt.timedelta(days=statements - number + 1)
            statement = Statement(
                account_id=account.id,
                redevable_id=redevable.id,
                sequence=number,
                due_date=due,
                period_start=due - dt.timedelta(days=1),
                period_end=due,
                window=WindowKind.NEXT,
                periodicity="JOURNALIERE",
                created_at=now - dt.timedelta(hours=statements - number + 1),
                updated_at=now,
                state=StatementState.PRODUCED,
                iban=iban,
                currency="EUR",
                movement_count=1,
                deleted_count=1 if number == 1 else 0,
                opening_balance=1000,
                closing_balance=1500,
                cfonb_sha256="0" * 64,
                cfonb_size=244,
                csv_sha256="0" * 64 if number == 1 else None,
                csv_size=10 if number == 1 else None,
            )
            session.add(statement)
            await session.flush()
            session.add(
                StatementFile(
                    statement_id=statement.id, kind="cfonb", content=cfonb_bytes(statement.id)
                )
            )
            if number == 1:
                session.add(
                    StatementFile(
                        statement_id=statement.id,
                        kind="csv",
                        content=f"supprimee;{statement.id}\n".encode(),
                    )
                )
            owner.statement_ids.append(statement.id)
        owner.redevable_ids.append(redevable.id)
        owner.bank_account_ids.append(account.id)


async def make_account(
    database: Database, clock: ManualClock, login: str, index: int, parent: str | None = None
) -> Owned:
    return Owned(await add_subscribed_account(database, clock, login, index, parent), login)


@contextlib.asynccontextmanager
async def open_portal(
    database: Database,
    clock: ManualClock,
    tmp_path: Path,
    guard: LoginGuard | None = None,
    *,
    max_secondaries: int = 10,
) -> AsyncIterator[PortalHarness]:
    """The portfolio and the portal's HTTP server; ``guard`` shared with other servers;
    ``max_secondaries`` is ``portal.max_secondary_accounts``."""
    primary = await make_account(database, clock, "cabinet", 1)
    secondary = await make_account(database, clock, "agence", 2, parent="cabinet")
    other = await make_account(database, clock, "autre", 3)
    now = clock.now()
    await add_redevable(database, now, primary, primary.account_id, 10, statements=3)
    await add_redevable(database, now, secondary, primary.account_id, 20, name="FILIALE SUD")
    await add_redevable(database, now, other, other.account_id, 30, name="AUTRE CLIENT")
    settings = PartnerSettings(
        public_url="http://127.0.0.1:1",
        portal_name="Portail Relevés",
        domain="releves.example",
        support_phone="04 77 81 04 69",
    )
    renderer = Renderer()
    outbox = Outbox(
        database,
        clock,
        RelaySection(host="127.0.0.1", port=1, starttls=False),
        domain=settings.domain,
        data_dir=tmp_path,
    )
    links = LinkService(database, outbox, MailComposer(renderer, settings, clock))
    app = create_app(
        renderer=renderer,
        settings=settings,
        setups=[
            functools.partial(
                setup_portal,
                services=Services(database, clock, links, max_secondaries=max_secondaries),
                settings=settings,
                guard=guard,
            )
        ],
    )
    server = HttpServer(HttpSection(listen="127.0.0.1", port=0), app)
    await server.start()
    try:
        yield PortalHarness(database, clock, server, settings, primary, secondary, other)
    finally:
        await server.stop()


@pytest.fixture
async def portal(
    database: Database, clock: ManualClock, tmp_path: Path
) -> AsyncIterator[PortalHarness]:
    async with open_portal(database, clock, tmp_path) as harness:
        yield harness


async def portal_account(database: Database, login: str) -> PortalAccount:
    from sqlalchemy import select

    async with database.session() as session:
        found = await session.scalar(select(PortalAccount).where(PortalAccount.login == login))
    assert found is not None
    return found


async def add_health_cases(portal: PortalHarness) -> dict[str, int]:
    """Failing connections, pending and expired links, a redevable without a connection and a
    delivered statement, on top of the fixture; returns the ids the tests look for.

    The clock is 10/03/2026 10:30 Paris: last night's window is 23:00..05:00 UTC.
    """
    now = portal.clock.now()
    night = dt.datetime(2026, 3, 10, 2, 0, tzinfo=dt.UTC)
    ids: dict[str, int] = {}
    async with portal.database.session() as session:

        def redevable(owner: Owned, index: int, name: str) -> Redevable:
            siren = make_siren(index)
            return Redevable(
                account_id=owner.account_id,
                family_id=portal.primary.account_id,
                siren=siren,
                nic=make_nic(siren),
                company_name=name,
                email=f"client{index}@example.com",
                periodicity=Periodicity.JOURNALIERE,
                created_at=now,
                updated_at=now,
            )

        failing = redevable(portal.primary, 50, "MAUVAIS MOT DE PASSE")
        first = redevable(portal.primary, 51, "PREMIERE VERIFICATION")
        bare = redevable(portal.secondary, 52, "SANS CONNEXION SECONDAIRE")
        expired = redevable(portal.primary, 53, "LIEN EXPIRE")
        session.add_all([failing, first, bare, expired])
        await session.flush()
        wrong = BankConnection(
            redevable_id=failing.id,
            provider="testbank",
            provider_connection_id="c50",
            token_encrypted=b"x",
            bank_name="Banque en erreur",
            state=ConnectionState.ERROR,
            error_code="wrongpass",
            consecutive_failures=2,
            last_check_at=night,
            last_success_at=night - dt.timedelta(days=2),
            created_at=now - dt.timedelta(days=5),
            updated_at=now,
        )
        never = BankConnection(
            redevable_id=first.id,
            provider="testbank",
            provider_connection_id="c51",
            token_encrypted=b"x",
            bank_name="Banque jamais vue",
            state=ConnectionState.ERROR,
            error_code="SCARequired",
            consecutive_failures=1,
            last_check_at=night + dt.timedelta(hours=1),
            created_at=now - dt.timedelta(days=1),
            updated_at=now,
        )
        session.add_all([wrong, never])
        await session.flush()
        session.add(
            BankAccount(
                redevable_id=failing.id,
                connection_id=wrong.id,
                provider_account_id="a50",
                iban="FR7630004000000000000000050",
                label="Compte courant",
                type="checking",
                activated_at=now - dt.timedelta(days=5),
                created_at=now - dt.timedelta(days=5),
                updated_at=now,
            )
        )
        # The fixture's healthy connection of the primary was refreshed last night.
        healthy = await session.scalar(
            select(BankConnection)
            .join(Redevable, Redevable.id == BankConnection.redevable_id)
            .where(Redevable.account_id == portal.primary.account_id)
            .order_by(BankConnection.id)
        )
        assert healthy is not None
        healthy.last_check_at = night - dt.timedelta(minutes=30)
        for target, created, used in (
            (bare, now - dt.timedelta(hours=2), None),
            (expired, now - dt.timedelta(days=4), None),
            (failing, now - dt.timedelta(days=1), now - dt.timedelta(hours=20)),
        ):
            session.add(
                SecureLink(
                    redevable_id=target.id,
                    kind="saisie",
                    token_hash=f"{target.id:064d}",
                    created_by="manual",
                    recipient=target.email,
                    created_at=created,
                    expires_at=created + dt.timedelta(hours=72),
                    used_at=used,
                )
            )
        delivered = await session.get(Statement, portal.primary.statement_ids[0])
        assert delivered is not None
        delivered.delivery_box = "releves.cabinet@releves.example"
        delivered.delivered_at = now
        ids.update(failing=failing.id, first=first.id, bare=bare.id, expired=expired.id)
        ids.update(never=never.id, wrong=wrong.id)
    return ids


async def expected_health(portal: PortalHarness, account_ids: set[int]) -> dict[str, int]:
    """The home page's figures, counted here row by row in Python (not by the service's SQL)."""
    now = portal.clock.now()
    window = (
        dt.datetime(2026, 3, 9, 23, 0, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 10, 5, 0, tzinfo=dt.UTC),
    )
    async with portal.database.session() as session:
        redevables = [
            r
            for r in (await session.scalars(select(Redevable))).all()
            if r.account_id in account_ids and r.active
        ]
        ids = {r.id for r in redevables}
        connections = [
            c
            for c in (await session.scalars(select(BankConnection))).all()
            if c.redevable_id in ids and c.active and c.state is not ConnectionState.CLOSED
        ]
        links = (await session.scalars(select(SecureLink))).all()
        statements = (await session.scalars(select(Statement))).all()
        all_ids = {
            r.id
            for r in (await session.scalars(select(Redevable))).all()
            if r.account_id in account_ids
        }
    failing = [c for c in connections if c.state is ConnectionState.ERROR]
    latest: dict[int, SecureLink] = {}
    for link in sorted(links, key=lambda item: (item.created_at, item.id)):
        latest[link.redevable_id] = link
    in_window = [
        c for c in connections if c.last_check_at and window[0] <= c.last_check_at < window[1]
    ]
    return {
        "connections_in_error": len(failing),
        "first_check_failures": sum(1 for c in failing if c.last_success_at is None),
        "redevables_in_error": len({c.redevable_id for c in failing}),
        "without_connection": len(ids - {c.redevable_id for c in connections}),
        "links_pending": sum(
            1
            for rid in ids
            if rid in latest and latest[rid].used_at is None and latest[rid].expires_at > now
        ),
        "links_expired": sum(
            1
            for rid in ids
            if rid in latest and latest[rid].used_at is None and latest[rid].expires_at <= now
        ),
        "undelivered": sum(
            1
            for s in statements
            if s.redevable_id in all_ids
            and s.state is StatementState.PRODUCED
            and s.delivery_box is None
        ),
        "refreshed": sum(1 for c in in_window if c.state is ConnectionState.OK),
        "failed": sum(1 for c in in_window if c.state is ConnectionState.ERROR),
        "not_checked": len(connections) - len(in_window),
    }

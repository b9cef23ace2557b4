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
    database: Database, clock: ManualClock, tmp_path: Path, guard: LoginGuard | None = None
) -> AsyncIterator[PortalHarness]:
    """The portfolio and the portal's HTTP server; ``guard`` shared with other servers."""
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
                services=Services(database, clock, links),
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

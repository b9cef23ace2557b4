"""Issue 13, point 10: input from outside is validated where it enters.

An IBAN from the aggregator is checked (characters, check digits) before it is stored, and
no file or ZIP entry name is built from an unchecked one; out-of-range dates in the portal's
filters give a French 400 page, not a 500; error pages carry the security headers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import httpx
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import select

from releves_mailer.aggregators.powens import PowensProvider
from releves_mailer.clock import ManualClock
from releves_mailer.collect.service import CollectionService
from releves_mailer.config import HttpSection, PowensSection
from releves_mailer.daemon.main import Daemon
from releves_mailer.db import Database
from releves_mailer.db.models import (
    BankAccount,
    BankConnection,
    BankEvent,
    BankEventKind,
    ConnectionState,
    Statement,
    StatementFile,
    StatementState,
    WindowKind,
)
from releves_mailer.partner.mails import PartnerSettings
from releves_mailer.render import Renderer
from releves_mailer.signing.secrets import KeyRing
from releves_mailer.statements.exports import file_names
from releves_mailer.web.app import SECURITY_HEADERS, create_app
from releves_mailer.web.server import HttpServer
from tests.daemon.harness import daemon_config, portal_client, portal_daemon
from tests.factories import Spec, add_portfolio, add_powens_connection
from tests.fakes.powens_server import FakePowens

CRAFTED = "FR76../../../../tmp/evil"
NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


# -- IBANs from the aggregator ---------------------------------------------------------------


async def _powens_refresh(database: Database, clock: ManualClock, fake: FakePowens) -> int:
    """A redevable whose Powens account has a crafted IBAN, refreshed twice; its account."""
    keyring = KeyRing([Fernet.generate_key()])
    _, (redevable_id,) = await add_portfolio(database, clock.now(), [Spec()])
    user = fake.create_user()
    remote = fake.add_connection(user)
    fake.add_account(remote, name="Compte piégé", iban=CRAFTED, balance="10.00")
    connection_id = await add_powens_connection(
        database,
        keyring,
        clock.now(),
        redevable_id,
        user_id=user.id,
        user_token=user.token,
        connection_id=remote.id,
    )
    section = PowensSection(
        enabled=True,
        domain="fake-sandbox",
        client_id=fake.client_id,
        client_secret=SecretStr(fake.client_secret),
    )
    async with aiohttp.ClientSession() as http:
        provider = PowensProvider.from_config(
            section, http, clock, base_url=fake.base_url, webview_base=fake.webview_base
        )
        for _ in range(2):
            result = await CollectionService(
                database, clock, {"powens": provider}, keyring
            ).refresh_one(connection_id)
            assert result.ok, result
            clock.advance(dt.timedelta(hours=1))
    async with database.session() as session:
        account = await session.scalar(
            select(BankAccount).where(BankAccount.connection_id == connection_id)
        )
        assert account is not None
        return account.id


async def test_a_crafted_iban_from_powens_is_refused_and_names_no_file(
    database: Database, tmp_path: Path
) -> None:
    clock = ManualClock(NOW)
    async with FakePowens(clock) as fake:
        account_id = await _powens_refresh(database, clock, fake)
    async with database.session() as session:
        account = await session.get(BankAccount, account_id)
        assert account is not None
        events = (
            await session.scalars(
                select(BankEvent).where(
                    BankEvent.account_id == account_id,
                    BankEvent.kind == BankEventKind.IBAN_REJECTED,
                )
            )
        ).all()
    # Not stored; said once in the account's history (not at every check).
    assert account.iban is None
    assert len(events) == 1 and "refusé" in events[0].message
    assert events[0].new_value == CRAFTED
    # Without an IBAN the statement cannot be made: no file is named after it.
    statement = Statement(account_id=account_id, iban=account.iban, period_start=NOW.date())
    statement.period_end = NOW.date()
    assert all("/" not in name and ".." not in name for name in file_names(statement))


async def test_file_names_from_a_stored_crafted_iban_stay_in_their_folder(
    tmp_path: Path,
) -> None:
    """A row written before IBANs were checked: ``statements download`` (folder and ZIP)
    still writes only plain names inside the folder asked for."""
    config = await daemon_config(tmp_path / "data")
    database = Database(config.database_url)
    try:
        _, (redevable_id,) = await add_portfolio(database, NOW, [Spec()])
        async with database.session() as session:
            connection = BankConnection(
                redevable_id=redevable_id,
                provider="testbank",
                provider_connection_id="c1",
                token_encrypted=b"x",
                bank_name="Banque",
                state=ConnectionState.OK,
                created_at=NOW,
                updated_at=NOW,
            )
            session.add(connection)
            await session.flush()
            account = BankAccount(
                redevable_id=redevable_id,
                connection_id=connection.id,
                provider_account_id="a1",
                iban=CRAFTED,
                label="Compte",
                type="checking",
                activated_at=NOW,
                created_at=NOW,
                updated_at=NOW,
            )
            session.add(account)
            await session.flush()
            statement = Statement(
                account_id=account.id,
                redevable_id=redevable_id,
                sequence=1,
                due_date=NOW.date(),
                period_start=NOW.date() - dt.timedelta(days=1),
                period_end=NOW.date(),
                window=WindowKind.NEXT,
                periodicity="JOURNALIERE",
                created_at=NOW,
                updated_at=NOW,
                state=StatementState.PRODUCED,
                iban=CRAFTED,
                currency="EUR",
                movement_count=0,
                deleted_count=0,
                opening_balance=0,
                closing_balance=0,
                cfonb_sha256="0" * 64,
                cfonb_size=3,
            )
            session.add(statement)
            await session.flush()
            session.add(StatementFile(statement_id=statement.id, kind="cfonb", content=b"01\n"))
            statement_id = statement.id
    finally:
        await database.dispose()
    assert config.source is not None
    await asyncio.to_thread(_download, config.source, statement_id, account.id, tmp_path)


def _download(source: Path, statement_id: int, account_id: int, folder: Path) -> None:
    """``statements download`` into a folder and into a ZIP, as a user runs it."""
    out = folder / "sortie" / "releves"
    archive = folder / "sortie" / "releves.zip"
    for option, target in (("--out", out), ("--zip", archive)):
        command = [sys.executable, "-m", "releves_mailer", "--config", str(source)]
        command += ["statements", "download", str(statement_id), option, str(target)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
    written = sorted(path.relative_to(folder) for path in folder.rglob("*.cfonb"))
    name = f"Releve_compte{account_id}_20260301-20260302.cfonb"
    assert written == [Path("sortie/releves") / name]
    with zipfile.ZipFile(archive) as opened:
        assert opened.namelist() == [name]
    assert not (folder.parent / "evil").exists() and not Path("/tmp/evil").exists()


# -- portal filters and error pages ----------------------------------------------------------


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    async with portal_daemon(tmp_path / "data") as running:
        yield running


def _assert_security_headers(answer: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert answer.headers.get(name) == value, (answer.status_code, name)


async def test_out_of_range_dates_give_a_french_400(daemon: Daemon) -> None:
    async with portal_client(daemon) as client:
        for query in ("au=9999-12-31", "du=0001-01-01", "au=31/12/9999", "du=1899-05-01"):
            answer = await client.get(f"/portail/releves?{query}")
            assert answer.status_code == 400, (query, answer.text[:300])
            assert "hors limites" in answer.text and "saisissez une date" in answer.text
            _assert_security_headers(answer)
        page = await client.get("/portail/releves?du=2026-01-01&au=2026-12-31")
        assert page.status_code == 200
        _assert_security_headers(page)


async def test_error_pages_carry_the_security_headers(daemon: Daemon) -> None:
    async with portal_client(daemon) as client:
        for path in ("/nulle-part", "/portail/releves/999999", "/portail/redevables/abc"):
            answer = await client.get(path)
            assert answer.status_code == 404, path
            _assert_security_headers(answer)
        unknown = await client.get("/nulle-part")
        assert "Page introuvable" in unknown.text
        wrong_method = await client.delete("/portail/releves")
        assert wrong_method.status_code == 405
        _assert_security_headers(wrong_method)


async def test_an_unexpected_failure_is_a_french_500_with_the_headers() -> None:
    """The daemon's application (same factory) with a route that fails, served for real."""
    from aiohttp import web

    async def broken(request: web.Request) -> web.StreamResponse:
        raise RuntimeError("boom")

    def mount(app: web.Application) -> None:
        app.router.add_get("/casse", broken)

    settings = PartnerSettings(
        public_url="http://127.0.0.1:1", portal_name="Portail", domain="releves.example"
    )
    app = create_app(renderer=Renderer(), settings=settings, setups=[mount])
    server = HttpServer(HttpSection(listen="127.0.0.1", port=0), app)
    await server.start()
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{server.port}", timeout=60
        ) as client:
            answer = await client.get("/casse")
    finally:
        await server.stop()
    assert answer.status_code == 500
    assert "erreur inattendue" in answer.text and "boom" not in answer.text
    _assert_security_headers(answer)

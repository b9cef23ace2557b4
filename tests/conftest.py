"""Shared fixtures: a migrated database per test (SQLite, or PostgreSQL when asked) and a clock."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from releves_mailer.clock import ManualClock
from releves_mailer.db import Database
from releves_mailer.db.migrate import upgrade
from releves_mailer.db.models import PortalAccount
from releves_mailer.portfolio.accounts import AccountInput, create_account
from releves_mailer.signing.certificates import write_signing_pair
from releves_mailer.signing.smime import SmimeSigner
from tests.factories import CABINET, PASSWORD, make_nic, make_siren

#: Set to a PostgreSQL URL (``postgresql+asyncpg://postgres@127.0.0.1:5432/test``) to run
#: every database test on PostgreSQL instead of SQLite.
POSTGRES_URL_VARIABLE = "RELEVES_MAILER_TEST_DATABASE_URL"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the database, so that a PostgreSQL run can select them."""
    for item in items:
        if "database" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.db)


def database_url_for_tests(tmp_path: Path) -> str:
    return os.environ.get(POSTGRES_URL_VARIABLE) or f"sqlite+aiosqlite:///{tmp_path}/test.sqlite3"


@asynccontextmanager
async def fresh_database(folder: Path) -> AsyncIterator[Database]:
    """A freshly migrated, empty database: a SQLite file in ``folder``, or a PostgreSQL
    schema of its own (dropped afterwards) when the tests run on PostgreSQL."""
    url = database_url_for_tests(folder)
    if url.startswith("sqlite"):
        os.makedirs(folder, exist_ok=True)
        db = Database(url)
        try:
            await upgrade(db)
            yield db
        finally:
            await db.dispose()
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(url)
    async with admin.begin() as connection:
        await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    db = Database(url, connect_args={"server_settings": {"search_path": schema}})
    try:
        await upgrade(db)
        yield db
    finally:
        await db.dispose()
        async with admin.begin() as connection:
            await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    """A freshly migrated, empty database, private to the test."""
    async with fresh_database(tmp_path) as db:
        yield db


@pytest.fixture
async def other_database(tmp_path: Path) -> AsyncIterator[Database]:
    """A second fresh database, for comparing two runs of the same work."""
    async with fresh_database(tmp_path / "other") as db:
        yield db


@pytest.fixture
def clock() -> ManualClock:
    """A clock frozen at a Tuesday morning, Paris time; tests move it explicitly."""
    return ManualClock(dt.datetime(2026, 3, 10, 9, 30, tzinfo=dt.UTC))


@pytest.fixture
async def family(database: Database, clock: ManualClock) -> tuple[PortalAccount, PortalAccount]:
    """A primary account ``cabinet`` and its secondary ``agence``, password ``PASSWORD``."""
    async with database.session() as session:
        primary = await create_account(session, clock, CABINET, PASSWORD)
        secondary = await create_account(
            session,
            clock,
            AccountInput(
                login="agence",
                company_name="Cabinet Martin Agence Sud",
                siret=make_siren(2) + make_nic(make_siren(2)),
                email="sud@cabinet.example",
                parent_login="cabinet",
            ),
            PASSWORD,
        )
    return primary, secondary


OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


@pytest.fixture(scope="session")
def signing_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(key, certificate) PEM paths of a self-signed portal pair made once per run (RSA key
    generation is slow), never committed."""
    folder = tmp_path_factory.mktemp("portal")
    key, cert = folder / "keys" / "portal-key.pem", folder / "keys" / "portal-cert.pem"
    write_signing_pair("portail@releves.example", "Portail", key, cert, dt.datetime.now(dt.UTC))
    return key, cert


@pytest.fixture(scope="session")
def signer(signing_pair: tuple[Path, Path]) -> SmimeSigner:
    return SmimeSigner.from_files(*signing_pair)


@pytest.fixture
def openssl_verify(
    tmp_path: Path, signing_pair: tuple[Path, Path]
) -> Callable[[bytes], subprocess.CompletedProcess[bytes]]:
    """Run ``openssl smime -verify -CAfile <portal cert>`` on a mail; stdout is the content."""
    if not Path(OPENSSL).exists():
        pytest.skip("the openssl binary is not installed: cannot check signatures for real")

    def verify(raw: bytes) -> subprocess.CompletedProcess[bytes]:
        mail = tmp_path / "mail.eml"
        mail.write_bytes(raw)
        return subprocess.run(
            [OPENSSL, "smime", "-verify", "-in", str(mail), "-CAfile", str(signing_pair[1])],
            capture_output=True,
            check=False,
        )

    return verify

"""Shared fixtures: a migrated database per test (SQLite, or PostgreSQL when asked), copied
from a template migrated once per run; cheap argon2; a clock; the ``--soak`` option."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from argon2 import PasswordHasher
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from releves_mailer.clock import ManualClock
from releves_mailer.db import Database
from releves_mailer.db.migrate import upgrade
from releves_mailer.db.models import PortalAccount
from releves_mailer.portfolio.accounts import AccountInput, create_account
from releves_mailer.portfolio.passwords import use_password_hasher
from releves_mailer.signing.certificates import write_signing_pair
from releves_mailer.signing.smime import SmimeSigner
from tests.factories import CABINET, PASSWORD, make_nic, make_siren

#: Set to a PostgreSQL URL (``postgresql+asyncpg://postgres@127.0.0.1:5432/test``) to run
#: every database test on PostgreSQL instead of SQLite.
POSTGRES_URL_VARIABLE = "RELEVES_MAILER_TEST_DATABASE_URL"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        help="also run the soak tests: the kill tests with their full counts",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses the database, so that a PostgreSQL run can select them;
    skip the soak tests unless ``--soak`` asks for them."""
    soak = config.getoption("--soak")
    for item in items:
        if "database" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.db)
        if not soak and item.get_closest_marker("soak") is not None:
            item.add_marker(pytest.mark.skip(reason="soak test: run with --soak"))
    items[:] = long_tests_first(items, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


def long_tests_first(items: list[pytest.Item], workers: int) -> list[pytest.Item]:
    """The order that keeps a long test from starting last: pytest-xdist's worksteal hands
    each worker one contiguous share of the list, so the long (``slow``) tests are dealt out
    to the heads of the shares, a file's together (module fixtures are built once), each file
    to the share with the fewest so far; the other tests keep their order."""
    workers = max(1, workers)
    files: dict[str, list[pytest.Item]] = {}
    others: list[pytest.Item] = []
    for item in items:
        if item.get_closest_marker("slow") is None:
            others.append(item)
        else:
            files.setdefault(item.nodeid.split("::")[0], []).append(item)
    heads: list[list[pytest.Item]] = [[] for _ in range(workers)]
    for tests in files.values():
        min(heads, key=len).extend(tests)
    ordered: list[pytest.Item] = []
    start = 0
    for worker, head in enumerate(heads):
        # Each worker's share ends where worksteal cuts the list: len // workers remaining.
        count = max(0, (len(items) - len(ordered)) // (workers - worker) - len(head))
        ordered += head + others[start : start + count]
        start += count
    return ordered + others[start:]


def database_url_for_tests(tmp_path: Path) -> str:
    return os.environ.get(POSTGRES_URL_VARIABLE) or f"sqlite+aiosqlite:///{tmp_path}/test.sqlite3"


class MigratedTemplate:
    """One database migrated once per run; every test gets a copy of it, since running the
    migrations costs far more than copying their result (0.3 to 0.7 s a test).

    On SQLite the copy is the file's. On PostgreSQL a database created from the template
    (``CREATE DATABASE ... TEMPLATE``, 0.3 s) is emptied after the test (``TRUNCATE``, a
    few ms) and handed to the next test of the process; one that a test left at another
    schema revision, or that cannot be emptied, is dropped instead.
    """

    def __init__(self, folder: Path) -> None:
        self._url = database_url_for_tests(folder)
        self._name = f"releves_tmpl_{uuid.uuid4().hex[:12]}"
        #: Emptied PostgreSQL copies, ready for the next test of this process.
        self._spare: list[str] = []
        self._made: list[str] = []
        self._head = ""

    @property
    def is_sqlite(self) -> bool:
        return self._url.startswith("sqlite")

    async def prepare(self) -> None:
        if self.is_sqlite:
            await _migrate(self._url)
            return
        await _admin_execute(self._url, f'CREATE DATABASE "{self._name}"')
        await _migrate(_with_database(self._url, self._name))
        self._head = await _schema_revision(_with_database(self._url, self._name))

    async def drop(self) -> None:
        if not self.is_sqlite:
            for name in self._made:
                await _admin_execute(self._url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await _admin_execute(self._url, f'DROP DATABASE "{self._name}"')

    @asynccontextmanager
    async def copy(self, folder: Path) -> AsyncIterator[Database]:
        """A private copy of the migrated template, disposed of (and dropped) afterwards."""
        if self.is_sqlite:
            os.makedirs(folder, exist_ok=True)
            url = database_url_for_tests(folder)
            # The template's connections are closed: its WAL was folded into the file.
            shutil.copy(make_url(self._url).database or "", make_url(url).database or "")
            db = Database(url)
            try:
                yield db
            finally:
                await db.dispose()
            return
        if self._spare:
            name = self._spare.pop()
        else:
            name = f"t_{uuid.uuid4().hex[:12]}"
            await _admin_execute(self._url, f'CREATE DATABASE "{name}" TEMPLATE "{self._name}"')
            self._made.append(name)
        url = _with_database(self._url, name)
        db = Database(url)
        try:
            yield db
        finally:
            await db.dispose()
            if await _emptied(url, self._head):
                self._spare.append(name)
            else:
                self._made.remove(name)
                await _admin_execute(self._url, f'DROP DATABASE "{name}" WITH (FORCE)')


#: Where the tests that need PostgreSQL itself (not just "the database") find a server.
POSTGRES_DEFAULT = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


@asynccontextmanager
async def new_postgres_database(prefix: str) -> AsyncIterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards; the test is skipped,
    saying why, when no server answers."""
    admin = os.environ.get(POSTGRES_URL_VARIABLE) or POSTGRES_DEFAULT
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        await _admin_execute(admin, f'CREATE DATABASE "{name}"')
    except Exception as error:  # the drivers' errors have no common base
        pytest.skip(f"no PostgreSQL server answers at {admin} ({type(error).__name__})")
    try:
        yield _with_database(admin, name)
    finally:
        await _admin_execute(admin, f'DROP DATABASE "{name}" WITH (FORCE)')


async def _migrate(url: str) -> None:
    db = Database(url)
    try:
        await upgrade(db)
    finally:
        await db.dispose()


async def _schema_revision(url: str) -> str:
    connection = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        return str(await connection.fetchval("SELECT version_num FROM alembic_version"))
    finally:
        await connection.close()


async def _emptied(url: str, head: str) -> bool:
    """Empty every table (identities restarted) of the copy at ``url``; False when it cannot
    be reused: another schema revision, a lock held by something the test left running."""
    try:
        connection = await asyncpg.connect(_asyncpg_dsn(url), timeout=10)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return False
    try:
        if await connection.fetchval("SELECT version_num FROM alembic_version") != head:
            return False
        tables = await connection.fetch(
            "SELECT quote_ident(tablename) AS name FROM pg_tables "
            "WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        )
        await connection.execute("SET lock_timeout = '10s'")
        names = ", ".join(row["name"] for row in tables)
        await connection.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        return True
    except (asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return False
    finally:
        await connection.close()


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


async def _admin_execute(url: str, statement: str) -> None:
    """Run ``statement`` outside any transaction (CREATE and DROP DATABASE need it)."""
    admin = create_async_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with admin.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await admin.dispose()


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigratedTemplate]:
    # Synchronous, in loops of its own: the tests' event loops live one test each.
    template = MigratedTemplate(tmp_path_factory.mktemp("template"))
    asyncio.run(template.prepare())
    yield template
    asyncio.run(template.drop())


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hasher() -> None:
    """Real argon2 at its lowest costs: the default costs most of a second per hash, and
    the tests hash hundreds of passwords."""
    use_password_hasher(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


@pytest.fixture
async def database(tmp_path: Path, migrated_template: MigratedTemplate) -> AsyncIterator[Database]:
    """A freshly migrated, empty database, private to the test."""
    async with migrated_template.copy(tmp_path) as db:
        yield db


@pytest.fixture
async def other_database(
    tmp_path: Path, migrated_template: MigratedTemplate
) -> AsyncIterator[Database]:
    """A second fresh database, for comparing two runs of the same work."""
    async with migrated_template.copy(tmp_path / "other") as db:
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

"""``releves-mailer db copy --to URL``: an installation copied to another database (SQLite to
PostgreSQL, or to another SQLite file), every table counted, and the copy runs the same."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from releves_mailer.clock import ManualClock
from releves_mailer.collect.connections import build_test_bank
from releves_mailer.config import Config, load_config
from releves_mailer.db import Database
from releves_mailer.db.base import Base
from releves_mailer.db.models import BankTransaction, Periodicity, PortalAccount, StatementFile
from releves_mailer.portfolio.accounts import AccountInput, create_account
from releves_mailer.signing.secrets import KeyRing
from tests.commands import run_command, run_command_async
from tests.conftest import new_postgres_database
from tests.datadirs import initialised_data_dir
from tests.factories import PASSWORD, make_nic, make_siren
from tests.statements.scenario import Spec, build_portfolio, paris_night

pytestmark = pytest.mark.slow

SPECS = (
    Spec(Periodicity.JOURNALIERE, include_pending=True),
    Spec(Periodicity.MENSUELLE, day=10),
)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """An installation after three weeks of nights: accounts (a secondary one among them),
    redevables, connections, transactions (pending ones replaced), statements, outbox."""
    config = asyncio.run(initialised_data_dir(tmp_path_factory.mktemp("source") / "data"))
    asyncio.run(_populate(config))
    done = run_command(
        config, "simulate", "--from", "2026-03-02", "--to", "2026-03-20", "--step-minutes", "240"
    )
    assert done.returncode == 0, done.stderr
    return config


async def _populate(config: Config) -> None:
    clock = ManualClock(paris_night(dt.date(2026, 3, 1)))
    keyring = KeyRing.from_file(config.path(config.secrets.key_file))
    database = Database(config.database_url)
    try:
        await build_portfolio(database, clock, keyring, build_test_bank(config, clock), SPECS)
        async with database.session() as session:
            primary = await session.scalar(select(PortalAccount.login).limit(1))
            await create_account(
                session,
                clock,
                AccountInput(
                    login="agence",
                    company_name="Agence Sud",
                    siret=make_siren(7) + make_nic(make_siren(7)),
                    email="sud@cabinet.example",
                    parent_login=primary,
                ),
                PASSWORD,
            )
    finally:
        await database.dispose()


def pointing_at(config: Config, url: str, folder: Path) -> Config:
    """A copy of ``config``'s file in ``folder`` whose database is ``url`` (keys and files
    still those of the source's data directory)."""
    body = config.source.read_text(encoding="utf-8") if config.source else ""
    body = re.sub(r'(?m)^data_dir = ".*"$', f'data_dir = "{config.data_dir}"', body)
    body = re.sub(r'(?m)^url = ""$', f'url = "{url}"', body, count=1)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "releves-mailer.toml").write_text(body, encoding="utf-8")
    return load_config(folder / "releves-mailer.toml")


async def table_counts(url: str) -> dict[str, int]:
    database = Database(url)
    try:
        async with database.engine.connect() as connection:
            return {
                table.name: int(
                    await connection.scalar(select(func.count()).select_from(table)) or 0
                )
                for table in Base.metadata.sorted_tables
            }
    finally:
        await database.dispose()


async def file_digests(url: str) -> list[tuple[int, str, str]]:
    database = Database(url)
    try:
        async with database.session() as session:
            rows = await session.execute(
                select(StatementFile.statement_id, StatementFile.kind, StatementFile.content)
            )
            return sorted(
                (statement_id, str(kind), hashlib.sha256(content).hexdigest())
                for statement_id, kind, content in rows
            )
    finally:
        await database.dispose()


@pytest.fixture
async def postgres_target() -> AsyncIterator[str]:
    async with new_postgres_database("copy") as url:
        yield url.replace("postgresql+asyncpg://", "postgresql://")  # as an admin would type it


@pytest.fixture
def sqlite_target(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'copie.sqlite3'}"


async def test_copy_to_postgresql(source: Config, postgres_target: str, tmp_path: Path) -> None:
    await check_copy(source, postgres_target, tmp_path)


async def test_copy_to_another_sqlite_file(
    source: Config, sqlite_target: str, tmp_path: Path
) -> None:
    await check_copy(source, sqlite_target, tmp_path)


async def check_copy(source: Config, target: str, tmp_path: Path) -> None:
    """Copy ``source`` to ``target``: same rows, statements, self-references; the copy
    takes new rows; a second copy to it is refused."""
    before = await table_counts(source.database_url)
    assert before["statement"] > 0 and before["bank_transaction"] > 0
    assert before["portal_account"] >= 2

    done = await run_command_async(source, "db", "copy", "--to", target, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {row["table"]: row["lignes"] for row in report["tables"]} == before
    assert report["lignes"] == sum(before.values())

    copy = pointing_at(source, target, tmp_path / "copy")
    assert await table_counts(copy.database_url) == before
    assert await file_digests(copy.database_url) == await file_digests(source.database_url)
    # The rows pointing into their own table kept what they point at.
    assert await self_references(copy) == await self_references(source)

    listed = [
        await run_command_async(config, "statements", "list", "--json") for config in (source, copy)
    ]
    assert listed[0].returncode == listed[1].returncode == 0, listed[1].stderr
    assert json.loads(listed[0].stdout) == json.loads(listed[1].stdout)
    # New rows in the copy take new ids (PostgreSQL's sequences restarted past the copied).
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n", encoding="utf-8")
    added = await run_command_async(
        copy,
        "accounts",
        "add",
        "nouveau",
        "--siret",
        make_siren(8) + make_nic(make_siren(8)),
        "--name",
        "Nouveau cabinet",
        "--email",
        "nouveau@cabinet.example",
        "--password-file",
        str(password_file),
    )
    assert added.returncode == 0, added.stderr

    # A second copy into the same database is refused: it is not empty any more.
    again = await run_command_async(source, "db", "copy", "--to", target)
    assert again.returncode != 0
    assert "la base cible n'est pas vide" in again.stderr
    assert await table_counts(copy.database_url) == {
        **before,
        "portal_account": before["portal_account"] + 1,
    }


async def self_references(config: Config) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """(account, its primary) and (pending transaction, its booked replacement) pairs."""
    database = Database(config.database_url)
    try:
        async with database.session() as session:
            parents = await session.execute(
                select(PortalAccount.id, PortalAccount.parent_id).where(
                    PortalAccount.parent_id.is_not(None)
                )
            )
            replaced = await session.execute(
                select(BankTransaction.id, BankTransaction.replaced_by_id).where(
                    BankTransaction.replaced_by_id.is_not(None)
                )
            )
            found = ({(a, b) for a, b in parents}, {(a, b) for a, b in replaced})
    finally:
        await database.dispose()
    assert len(found[0]) == 1  # the secondary account
    return found


async def test_bad_targets_are_named(source: Config) -> None:
    unknown = await run_command_async(source, "db", "copy", "--to", "mysql://root@localhost/x")
    assert unknown.returncode != 0
    assert "adresse de base de données non reconnue" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    # A port where nothing listens (port 1 is never a database's).
    gone = await run_command_async(
        source, "db", "copy", "--to", "postgresql://postgres@127.0.0.1:1/nulle"
    )
    assert gone.returncode != 0
    assert "base cible injoignable" in gone.stderr

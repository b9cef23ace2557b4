"""Backup of an installation on PostgreSQL while ``serve`` runs (``pg_dump`` on the exported
snapshot its census was read in), restored into a new folder and a new empty database."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from releves_mailer.clock import PARIS, ManualClock, SystemClock
from releves_mailer.collect.connections import build_test_bank
from releves_mailer.collect.scheduler import RefreshPlan
from releves_mailer.collect.service import CollectionService
from releves_mailer.config import Config, load_config
from releves_mailer.db import Database
from releves_mailer.db.migrate import upgrade
from releves_mailer.services.demo import create_demo_portfolio
from releves_mailer.signing.secrets import KeyRing
from tests.backup.installation import statements_json, stored_messages
from tests.backup.test_backup_while_serving import stop, wait_for, wait_for_ports
from tests.commands import run_command_async
from tests.conftest import POSTGRES_URL_VARIABLE, _admin_execute, _with_database
from tests.daemon.test_kill_during_delivery import PASSWORD, progress, start_daemon
from tests.datadirs import initialised_data_dir

SERVER = (
    os.environ.get(POSTGRES_URL_VARIABLE) or "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
async def two_databases() -> AsyncIterator[tuple[str, str]]:
    """A source and an empty target database on the test server, dropped afterwards."""
    missing = [tool for tool in ("pg_dump", "psql") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: no PostgreSQL backup to test")
    try:
        await _admin_execute(SERVER, "SELECT 1")
    except Exception as error:  # any driver error: no server to test against
        pytest.skip(f"no PostgreSQL server at {SERVER} ({type(error).__name__})")
    names = [f"bk_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    for name in names:
        await _admin_execute(SERVER, f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(SERVER, names[0]), _with_database(SERVER, names[1])
    finally:
        for name in names:
            await _admin_execute(SERVER, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def installation_on(url: str, directory: Path, days: int) -> Config:
    """A data directory on the database ``url`` whose statements of ``days`` simulated days
    are cut, not delivered."""
    config = await initialised_data_dir(directory)
    assert config.source is not None
    text = config.source.read_text(encoding="utf-8")
    text = re.sub(r'^url = ""$', f'url = "{url}"', text, count=1, flags=re.MULTILINE)
    config.source.write_text(text, encoding="utf-8")
    config = load_config(config.source)
    assert config.database_url == url
    last = SystemClock().now().astimezone(PARIS).date() - dt.timedelta(days=1)
    first = last - dt.timedelta(days=days)
    clock = ManualClock(dt.datetime.combine(first, dt.time(12), PARIS))
    database = Database(url)
    try:
        await upgrade(database)
        await create_demo_portfolio(config, database, clock, PASSWORD)
        await CollectionService(
            database,
            clock,
            {"testbank": build_test_bank(config, clock)},
            KeyRing.from_file(config.path(config.secrets.key_file)),
            plan=RefreshPlan.from_config(config.collection),
        ).simulate(first, last, step_minutes=180)
    finally:
        await database.dispose()
    return config


@pytest.mark.slow
async def test_postgres_backup_while_serving_restores_into_a_new_database(
    tmp_path: Path, two_databases: tuple[str, str]
) -> None:
    source, target = two_databases
    config = await installation_on(source, tmp_path / "data", days=14)
    database = Database(config.database_url)
    out = tmp_path / "pg.tar.gz"
    try:
        total, _ = await progress(database)
        assert total > 10
        daemon = start_daemon(config)
        try:
            await wait_for_ports(config, daemon)
            await wait_for(database, daemon)
            result = await run_command_async(config, "backup", "--out", str(out), "--with-keys")
            assert result.returncode == 0, result.stderr
            assert "base postgresql" in result.stdout
        finally:
            stop(daemon)
    finally:
        await database.dispose()
    assert source not in out.read_bytes().decode("latin-1")  # the URL is given again

    restored_dir = tmp_path / "restored"
    args = ["restore", str(out), "--data", str(restored_dir)]
    refused = await run_command_async(config, *args)
    assert refused.returncode != 0 and "--database-url" in refused.stderr
    assert not restored_dir.exists()
    result = await run_command_async(config, *args, "--database-url", target)
    assert result.returncode == 0, result.stderr
    restored = load_config(restored_dir / "releves-mailer.toml")
    assert restored.database_url == target
    assert await statements_json(restored) == await statements_json(config)
    assert await stored_messages(restored) == await stored_messages(config)
    # The target is not empty any more: a second restore into it is refused.
    again = await run_command_async(
        config, "restore", str(out), "--data", str(tmp_path / "again"), "--database-url", target
    )
    assert again.returncode != 0 and "n'est pas vide" in again.stderr
    assert not (tmp_path / "again").exists()

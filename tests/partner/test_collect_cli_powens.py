"""``collect`` and ``simulate`` refresh Powens connections (the fake, on 127.0.0.1) exactly as
the daemon does: failures counted, links and alerts from the second failure, exit status 3."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from releves_mailer.clock import PARIS, ManualClock
from releves_mailer.config import Config
from releves_mailer.db import Database
from releves_mailer.db.models import BankAccount, BankConnection, ConnectionState, OutboxMessage
from releves_mailer.signing.secrets import KeyRing
from tests.commands import run_command_async
from tests.daemon.harness import daemon_config, powens_section
from tests.factories import Spec, add_portfolio, add_powens_connection
from tests.fakes.powens_server import FakeConnection, FakePowens

START = dt.datetime(2026, 3, 2, 11, 0, tzinfo=dt.UTC)  # Monday, noon in Paris
REDEVABLE_MAIL = "tresorerie@client.example"


@pytest.fixture
async def fake() -> AsyncIterator[FakePowens]:
    async with FakePowens(ManualClock(START)) as server:
        yield server


async def powens_portfolio(
    config: Config, fake: FakePowens
) -> tuple[dict[str, FakeConnection], dict[str, int]]:
    """Two redevables, each with a Powens connection stored as the partner flow stores it."""
    remote: dict[str, FakeConnection] = {}
    local: dict[str, int] = {}
    keyring = KeyRing.from_file(config.path(config.secrets.key_file))
    database = Database(config.database_url)
    try:
        specs = [Spec(email=REDEVABLE_MAIL, name=name) for name in ("SAINE", "CASSEE")]
        _account, ids = await add_portfolio(database, START, specs)
        for name, redevable_id in zip(("SAINE", "CASSEE"), ids, strict=True):
            user = fake.create_user()
            connection = fake.add_connection(user)
            account = fake.add_account(connection, balance="100.00")
            fake.add_transaction(account, value="-12.50", date=dt.date(2026, 2, 27))
            remote[name] = connection
            local[name] = await add_powens_connection(
                database,
                keyring,
                START,
                redevable_id,
                user_id=user.id,
                user_token=user.token,
                connection_id=connection.id,
            )
    finally:
        await database.dispose()
    return remote, local


async def read(config: Config) -> tuple[dict[int, BankConnection], set[int], list[OutboxMessage]]:
    """Stored connections by id, the connections that have bank accounts, the queued mails."""
    database = Database(config.database_url)
    try:
        async with database.session() as session:
            connections = {c.id: c for c in await session.scalars(select(BankConnection))}
            with_accounts = set(await session.scalars(select(BankAccount.connection_id)))
            mails = list(await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))
        return connections, with_accounts, mails
    finally:
        await database.dispose()


async def test_collect_refreshes_powens_and_alerts_like_the_daemon(
    tmp_path: Path, fake: FakePowens
) -> None:
    config = await daemon_config(tmp_path / "data", powens=powens_section(fake, "x" * 32))
    remote, local = await powens_portfolio(config, fake)
    fake.set_state(remote["CASSEE"], "wrongpass")
    remote["CASSEE"].state_after_sync = "wrongpass"

    first = await run_command_async(config, "collect", "--at", "2026-03-02T12:00")
    assert first.returncode == 3, first.stdout + first.stderr
    assert "2 connexion(s) actualisée(s) (1 en erreur)" in first.stdout
    assert f"connexion {local['CASSEE']} : wrongpass" in first.stderr
    connections, with_accounts, mails = await read(config)
    healthy, broken = connections[local["SAINE"]], connections[local["CASSEE"]]
    assert healthy.state is ConnectionState.OK and healthy.id in with_accounts
    assert broken.state is ConnectionState.ERROR and broken.error_code == "wrongpass"
    assert broken.consecutive_failures == 1
    # Both connections were asked of the Powens API (before, `collect` skipped Powens).
    asked = {call.path for call in fake.calls()}
    for connection in remote.values():
        assert any(str(connection.id) in path for path in asked), asked
    # First failure needing action: no link, no alert yet (the daemon's rule).
    assert [m.kind for m in mails if m.kind in ("secure_link", "alert")] == []

    second = await run_command_async(config, "collect", "--at", "2026-03-03T12:00")
    assert second.returncode == 3, second.stdout + second.stderr
    connections, _accounts, mails = await read(config)
    assert connections[local["CASSEE"]].consecutive_failures == 2
    links = [m for m in mails if m.kind == "secure_link"]
    alerts = [m for m in mails if m.kind == "alert"]
    assert [m.recipient for m in links] == [REDEVABLE_MAIL]
    assert len(alerts) == 1 and alerts[0].recipient == "cabinet@example.org"

    # The bank is repaired: every refresh succeeds, exit status 0.
    fake.set_state(remote["CASSEE"], None)
    remote["CASSEE"].state_after_sync = None
    third = await run_command_async(config, "collect", "--at", "2026-03-03T13:00")
    assert third.returncode == 0, third.stdout + third.stderr
    assert "2 connexion(s) actualisée(s) (0 en erreur)" in third.stdout


async def test_simulate_refreshes_powens_and_counts_failures(
    tmp_path: Path, fake: FakePowens
) -> None:
    config = await daemon_config(tmp_path / "data", powens=powens_section(fake, "x" * 32))
    remote, local = await powens_portfolio(config, fake)

    clean = await run_command_async(
        config, "simulate", "--from", "2026-03-03", "--to", "2026-03-04"
    )
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "2 nuit(s) simulée(s)" in clean.stdout and "(0 en erreur)" in clean.stdout
    connections, _accounts, _mails = await read(config)
    for connection_id in local.values():
        checked = connections[connection_id].last_success_at
        assert checked is not None and checked.astimezone(PARIS).date() == dt.date(2026, 3, 4)

    for state in ("wrongpass", "websiteUnavailable", "bug"):
        fake.set_state(remote["CASSEE"], state)
        remote["CASSEE"].state_after_sync = state
        night = {"wrongpass": "05", "websiteUnavailable": "06", "bug": "07"}[state]
        failed = await run_command_async(
            config, "simulate", "--from", f"2026-03-{night}", "--to", f"2026-03-{night}"
        )
        assert failed.returncode == 3, failed.stdout + failed.stderr
        assert "(0 en erreur)" not in failed.stdout
        connections, _accounts, _mails = await read(config)
        assert connections[local["CASSEE"]].error_code == state
        assert connections[local["SAINE"]].state is ConnectionState.OK

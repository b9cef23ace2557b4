"""SIGKILL the real daemon while it delivers (10 times, 30 with --soak): every statement
lands exactly once."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from releves_mailer.clock import PARIS, ManualClock, SystemClock
from releves_mailer.collect.connections import build_test_bank, connect_test_bank
from releves_mailer.collect.scheduler import RefreshPlan
from releves_mailer.collect.service import CollectionService
from releves_mailer.config import Config
from releves_mailer.db import Database
from releves_mailer.db.models import MailFolder, MailMessage
from releves_mailer.db.models.statements import Statement, StatementState
from releves_mailer.mailbox.store import MessageStore
from releves_mailer.portfolio.accounts import get_account
from releves_mailer.portfolio.redevables import create_redevable, validate_redevable
from releves_mailer.services.demo import create_demo_portfolio
from releves_mailer.signing.secrets import KeyRing
from tests.datadirs import initialised_data_dir
from tests.factories import make_siren

#: Kills of the soak run (``--soak``); the default run kills 10 times.
KILLS = 30
PASSWORD = "mot de passe des tests"


async def add_daily_redevables(
    config: Config, database: Database, clock: ManualClock, count: int
) -> None:
    keyring = KeyRing.from_file(config.path(config.secrets.key_file))
    bank = build_test_bank(config, clock)
    async with database.session() as session:
        account = await get_account(session, "demo")
        ids = []
        for index in range(count):
            data, problems = validate_redevable(
                siren=make_siren(700 + index),
                company_name=f"QUOTIDIEN {index}",
                periodicity="JOURNALIERE",
            )
            assert data is not None, problems
            ids.append((await create_redevable(session, clock, account, data)).id)
    for redevable_id in ids:
        await connect_test_bank(database, redevable_id, bank=bank, keyring=keyring, clock=clock)


async def build(directory: Path, *, extra_daily: int) -> Config:
    """A data directory whose statements are cut but not delivered yet; ``extra_daily``
    daily redevables are added to the demo ones, so that there are enough statements for
    every kill to land in the middle of deliveries."""
    config = await initialised_data_dir(directory)
    last = SystemClock().now().astimezone(PARIS).date() - dt.timedelta(days=1)
    first = last - dt.timedelta(days=45)
    clock = ManualClock(dt.datetime.combine(first, dt.time(12), PARIS))
    database = Database(config.database_url)
    try:
        await create_demo_portfolio(config, database, clock, PASSWORD)
        await add_daily_redevables(config, database, clock, extra_daily)
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


def start_daemon(config: Config) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELEVES_MAILER")}
    env["RELEVES_MAILER_CONFIG"] = str(config.source)
    command = [sys.executable, "-m", "releves_mailer", "serve"]
    command += ["--imap-port", "0", "--imaps-port", "0", "--smtp-port", "0", "--http-port", "0"]
    with (config.data_dir / "daemon.log").open("ab") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=log)


async def progress(database: Database) -> tuple[int, int]:
    """(statements cut, statements whose delivery is decided)."""
    async with database.session() as session:
        rows = (
            await session.execute(
                select(Statement.delivery_box).where(Statement.state == StatementState.PRODUCED)
            )
        ).all()
    return len(rows), sum(1 for (box,) in rows if box is not None)


async def kill_while_delivering(
    config: Config, database: Database, kills: int, rng: random.Random
) -> tuple[int, int]:
    """SIGKILL fresh daemons, each once it has decided a few statements, until ``kills``
    kills landed while deliveries remained to do, or until none remained.

    Each kill waits for a number of statements drawn from a share of the work that remains,
    so that work remains for the kills to come however fast the machine is. A kill counts
    as landing mid-work when its daemon decided statements and left some undecided; one
    that did not is tried again while work remains. Returns (kills sent, kills mid-work).
    """
    total, decided = await progress(database)
    sent = mid_work = 0
    while mid_work < kills and decided < total:
        before = decided
        daemon = start_daemon(config)
        share = (total - decided) // (4 * (kills - mid_work))
        target = decided + rng.randint(1, max(1, min(25, share)))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            _, decided = await progress(database)
            if decided >= target:
                break
            if daemon.poll() is not None:
                log = (config.data_dir / "daemon.log").read_text(errors="replace")
                pytest.fail(f"the daemon stopped on its own:\n{log[-2000:]}")
            await asyncio.sleep(0.02)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=30)
        sent += 1
        total, decided = await progress(database)
        mid_work += before < decided < total
    return sent, mid_work


@pytest.mark.slow
@pytest.mark.parametrize("kills", [10, pytest.param(KILLS, marks=pytest.mark.soak)])
async def test_every_statement_delivered_exactly_once_despite_kills(
    tmp_path: Path, kills: int
) -> None:
    # A kill costs some 30 statements (25 are decided per transaction); the demo portfolio
    # has about 230 and each daily redevable adds about 135: 900 for 10 kills.
    config = await build(tmp_path / "data", extra_daily=kills // 2)
    database = Database(config.database_url)
    try:
        total, decided = await progress(database)
        assert total > 100 and decided == 0
        sent, mid_work = await kill_while_delivering(
            config, database, kills, random.Random(20261126)
        )
        observed = f"{sent} kills sent, {mid_work} of them mid-work"
        # What the kills hit is observed, not assumed: the work is sized for every kill to
        # land mid-work, but a machine fast enough to outrun the shares ends the kills early.
        assert mid_work >= 1, observed
        # Let one run finish the work, then stop it cleanly (once it is up: it writes its
        # ports).
        ports = config.data_dir / "ports.json"
        ports.unlink(missing_ok=True)
        daemon = start_daemon(config)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            total, decided = await progress(database)
            if decided == total and ports.exists():
                break
            await asyncio.sleep(0.5)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
        assert decided == total, f"{total - decided} statements left undelivered ({observed})"
    finally:
        await database.dispose()

    database = Database(config.database_url)
    store = MessageStore(database, config.data_dir / "messages", SystemClock())
    try:
        async with database.session() as session:
            statements = (
                await session.scalars(
                    select(Statement).where(Statement.state == StatementState.PRODUCED)
                )
            ).all()
            messages = (
                await session.execute(
                    select(MailFolder.owner, MailMessage.blob).join(
                        MailFolder, MailFolder.id == MailMessage.folder_id
                    )
                )
            ).all()
        message_ids: Counter[tuple[str, str]] = Counter()
        for owner, blob in messages:
            raw = await store.read_blob(blob)
            header = raw.split(b"\r\n\r\n", 1)[0]
            for line in header.split(b"\r\n"):
                if line.lower().startswith(b"message-id:"):
                    message_ids[(owner, line.split(b":", 1)[1].strip().decode())] += 1
    finally:
        await store.close()
        await database.dispose()
    assert all(s.delivery_box for s in statements)
    expected = Counter((s.delivery_box, s.message_id) for s in statements)
    assert message_ids == expected
    assert max(message_ids.values()) == 1

"""SIGKILL the real daemon 30 times while it delivers: every statement lands exactly once."""

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
from releves_mailer.daemon.bootstrap import initialise_data_dir
from releves_mailer.db import Database
from releves_mailer.db.models import MailFolder, MailMessage
from releves_mailer.db.models.statements import Statement, StatementState
from releves_mailer.mailbox.store import MessageStore
from releves_mailer.portfolio.accounts import get_account
from releves_mailer.portfolio.redevables import create_redevable, validate_redevable
from releves_mailer.services.demo import create_demo_portfolio
from releves_mailer.signing.secrets import KeyRing
from tests.factories import make_siren

KILLS = 30
PASSWORD = "mot de passe des tests"
#: Daily redevables added to the demo ones, so that there are enough statements for every
#: kill to land in the middle of deliveries.
EXTRA_DAILY = 5


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


async def build(directory: Path) -> Config:
    """A data directory whose statements are cut but not delivered yet."""
    config = await initialise_data_dir(directory, "releves.localhost", SystemClock())
    last = SystemClock().now().astimezone(PARIS).date() - dt.timedelta(days=1)
    first = last - dt.timedelta(days=45)
    clock = ManualClock(dt.datetime.combine(first, dt.time(12), PARIS))
    database = Database(config.database_url)
    try:
        await create_demo_portfolio(config, database, clock, PASSWORD)
        await add_daily_redevables(config, database, clock, EXTRA_DAILY)
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


async def progress(config: Config) -> tuple[int, int]:
    """(statements cut, statements whose delivery is decided)."""
    database = Database(config.database_url)
    try:
        async with database.session() as session:
            rows = (
                await session.execute(
                    select(Statement.delivery_box).where(Statement.state == StatementState.PRODUCED)
                )
            ).all()
    finally:
        await database.dispose()
    return len(rows), sum(1 for (box,) in rows if box is not None)


@pytest.mark.slow
async def test_every_statement_delivered_exactly_once_despite_kills(tmp_path: Path) -> None:
    config = await build(tmp_path / "data")
    total, decided = await progress(config)
    assert total > 100 and decided == 0
    rng = random.Random(20261126)
    interrupted = 0
    for _ in range(KILLS):
        daemon = start_daemon(config)
        # Kill once deliveries are under way, after a random number of them.
        target = decided + rng.randint(1, 25)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            _, decided = await progress(config)
            if decided >= target:
                break
            if daemon.poll() is not None:
                log = (config.data_dir / "daemon.log").read_text(errors="replace")
                pytest.fail(f"the daemon stopped on its own:\n{log[-2000:]}")
            await asyncio.sleep(0.02)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=30)
        total, decided = await progress(config)
        interrupted += decided < total
    # Let one run finish the work, then stop it cleanly (once it is up: it writes its ports).
    ports = config.data_dir / "ports.json"
    ports.unlink(missing_ok=True)
    daemon = start_daemon(config)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        total, decided = await progress(config)
        if decided == total and ports.exists():
            break
        await asyncio.sleep(0.5)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0
    assert interrupted == KILLS, "every kill must land while deliveries are going on"

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

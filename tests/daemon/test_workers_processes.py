"""Three real ``serve`` processes on one PostgreSQL database (issue 19, point 2).

A portfolio of test bank connections with a simulated week behind it; its night is due
(every connection to refresh, yesterday's statements to cut, the week's statements to
deliver). Three daemons, each with its own data directory (same keys and configuration),
share the night; one is SIGKILLed while it holds claims. The other two finish its work:
here at once, since its process is gone from this host (on another host they would wait
for its leases, 3 s here; ``tests/collect/test_workers.py`` shows that path): each
connection refreshed once, each statement cut once and delivered once.

Refreshes are counted from the daemons' logs (each worker logs the connections it refreshed,
after their write is committed). PostgreSQL only: SQLite runs one daemon per data directory.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from releves_mailer.clock import PARIS, ManualClock, SystemClock
from releves_mailer.collect.connections import build_test_bank
from releves_mailer.collect.scheduler import RefreshPlan
from releves_mailer.collect.service import CollectionService
from releves_mailer.config import Config
from releves_mailer.db import Database
from releves_mailer.db.models import (
    BankAccount,
    BankConnection,
    MailDelivered,
    Statement,
    StatementState,
)
from releves_mailer.listeners import reserve_port, reserve_ports
from releves_mailer.services.demo import create_demo_portfolio
from releves_mailer.signing.secrets import KeyRing
from tests.conftest import POSTGRES_URL_VARIABLE
from tests.daemon.test_kill_during_delivery import PASSWORD, add_daily_redevables
from tests.datadirs import initialised_data_dir

# Not marked slow (about 20 s; slow tests run on SQLite only, and this one is for
# PostgreSQL).
pytestmark = pytest.mark.skipif(
    not os.environ.get(POSTGRES_URL_VARIABLE),
    reason="several daemons share a PostgreSQL database (set "
    f"{POSTGRES_URL_VARIABLE}); SQLite runs one daemon per data directory",
)

#: The night window of the test: the whole day, so that the night is due whenever it runs.
WINDOW = {"window_start": "00:00", "window_end": "23:59"}
LEASE_SECONDS = 3
DAILY = 24
REFRESHED = re.compile(r"worker (\S+) refreshed connections \[([0-9, ]*)\]")
CLAIMED = (BankConnection, BankAccount, Statement)


async def build(directory: Path, url: str) -> Config:
    """A data directory on the test database: the demo portfolio plus ``DAILY`` daily
    redevables, a week simulated up to yesterday (statements cut, none delivered), and every
    connection's refresh due."""
    config = await initialised_data_dir(directory)
    config = config.model_copy(update={"database": config.database.model_copy(update={"url": url})})
    today = SystemClock().now().astimezone(PARIS).date()
    first, last = today - dt.timedelta(days=7), today - dt.timedelta(days=1)
    clock = ManualClock(dt.datetime.combine(first, dt.time(12), PARIS))
    database = Database(url)
    try:
        await create_demo_portfolio(config, database, clock, PASSWORD)
        await add_daily_redevables(config, database, clock, DAILY)
        plan = RefreshPlan(window_end=dt.time(23, 59))
        await CollectionService(
            database,
            clock,
            {"testbank": build_test_bank(config, clock)},
            KeyRing.from_file(config.path(config.secrets.key_file)),
            plan=plan,
        ).simulate(first, last, step_minutes=240)
        long_ago = SystemClock().now() - dt.timedelta(days=2)
        async with database.session() as session:
            await session.execute(
                update(BankConnection).values(last_check_at=long_ago, last_success_at=long_ago)
            )
    finally:
        await database.dispose()
    return config


def port_taken(data_dir: Path) -> bool:
    log = data_dir / "daemon.log"
    return log.exists() and "Address already in use" in log.read_text(errors="replace")


def start_daemon(data_dir: Path, url: str, http_port: int = 0) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELEVES_MAILER")}
    env["RELEVES_MAILER_CONFIG"] = str(data_dir / "releves-mailer.toml")
    env["RELEVES_MAILER__DATABASE__URL"] = url
    env["RELEVES_MAILER__LOGGING__LEVEL"] = "DEBUG"
    env["RELEVES_MAILER__LOGGING__FILE"] = "daemon.log"
    env["RELEVES_MAILER__COLLECTION__CLAIM_LEASE_SECONDS"] = str(LEASE_SECONDS)
    for key, value in WINDOW.items():
        env[f"RELEVES_MAILER__COLLECTION__{key.upper()}"] = value
    command = [sys.executable, "-m", "releves_mailer", "serve", "--listen", "127.0.0.1"]
    command += ["--imap-port", "0", "--imaps-port", "0", "--smtp-port", "0"]
    command += ["--http-port", str(http_port)]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def claims_of(database: Database, pid: int) -> dict[str, set[int]]:
    """The rows a worker (by its pid) holds a live claim on, per table."""
    held: dict[str, set[int]] = {}
    async with database.session() as session:
        for model in CLAIMED:
            ids = await session.scalars(
                select(model.id).where(
                    model.claimed_by.like(f"%:{pid}:%"), model.claimed_until.is_not(None)
                )
            )
            held[model.__tablename__] = set(ids)
    return held


async def remaining(database: Database, since: dt.datetime, yesterday: dt.date) -> dict[str, int]:
    """The night's work not done yet."""
    async with database.session() as session:
        stale = await session.scalar(
            select(func.count())
            .select_from(BankConnection)
            .where(BankConnection.active.is_(True), BankConnection.last_check_at < since)
        )
        undelivered = await session.scalar(
            select(func.count())
            .select_from(Statement)
            .where(Statement.state == StatementState.PRODUCED, Statement.delivery_box.is_(None))
        )
        cut_yesterday = await session.scalar(
            select(func.count())
            .select_from(Statement)
            .where(Statement.due_date == yesterday, Statement.state == StatementState.PRODUCED)
        )
        claimed = 0
        for model in CLAIMED:
            claimed += (
                await session.scalar(
                    select(func.count()).select_from(model).where(model.claimed_until.is_not(None))
                )
            ) or 0
    return {
        "connections to refresh": stale or 0,
        "statements to deliver": undelivered or 0,
        "daily statements of yesterday to cut": max(0, DAILY - (cut_yesterday or 0)),
        "live claims": claimed,
    }


def refreshes_logged(log: Path) -> Counter[int]:
    found: Counter[int] = Counter()
    if log.exists():
        for match in REFRESHED.finditer(log.read_text(errors="replace")):
            found.update(int(item) for item in match.group(2).split(",") if item.strip())
    return found


async def test_three_daemons_share_a_night_and_finish_a_killed_one(
    tmp_path: Path, database: Database
) -> None:
    url = database.url.render_as_string(hide_password=False)
    base = await build(tmp_path / "w0", url)
    folders = [base.data_dir]
    for index in (1, 2):
        folder = tmp_path / f"w{index}"
        shutil.copytree(base.data_dir, folder)
        folders.append(folder)
    since = SystemClock().now()
    yesterday = since.astimezone(PARIS).date() - dt.timedelta(days=1)
    async with database.session() as session:
        connection_ids = set((await session.scalars(select(BankConnection.id))).all())
        to_deliver = await session.scalar(
            select(func.count())
            .select_from(Statement)
            .where(Statement.state == StatementState.PRODUCED)
        )
    assert len(connection_ids) == DAILY + 6 and (to_deliver or 0) > 100

    daemons = [
        start_daemon(folder, url, port)
        for folder, port in zip(folders, reserve_ports(len(folders)), strict=True)
    ]
    victim = daemons[0]
    try:
        # Kill the first daemon while it holds claims and work remains. It is frozen
        # (SIGSTOP) before its claims are read again: a claim seen a moment before the kill
        # may have been finished and released in between (seen on a loaded CI machine).
        held: dict[str, set[int]] = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert victim.poll() is None, "the first daemon stopped on its own"
            if any((await claims_of(database, victim.pid)).values()):
                victim.send_signal(signal.SIGSTOP)
                held = await claims_of(database, victim.pid)
                if any(held.values()):
                    break
                victim.send_signal(signal.SIGCONT)
            await asyncio.sleep(0.01)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        assert any(held.values()), "the daemon was never seen holding a claim"
        work = await remaining(database, since, yesterday)
        assert any(work.values()), "the night was over before the kill"

        # The two others finish the night, the dead worker's claims included.
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:
            work = await remaining(database, since, yesterday)
            if not any(work.values()):
                break
            for index in (1, 2):
                if daemons[index].poll() is not None and port_taken(folders[index]):
                    # Another process took its HTTP port between the probe and the bind.
                    (folders[index] / "daemon.log").unlink()
                    daemons[index] = start_daemon(folders[index], url, reserve_port())
                assert daemons[index].poll() is None, "a surviving daemon stopped on its own"
            await asyncio.sleep(1)
        assert not any(work.values()), work
    finally:
        for daemon in daemons[1:]:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
        for daemon in daemons[1:]:
            assert daemon.wait(timeout=60) == 0

    # Each connection refreshed once: logged once by the worker that committed it; a
    # connection the killed worker wrote but had no time to log is its own (claimed_by).
    logged = [refreshes_logged(folder / "daemon.log") for folder in folders]
    total = sum(logged, Counter[int]())
    assert set(total.values()) == {1}, total
    async with database.session() as session:
        rows = (await session.execute(select(BankConnection.id, BankConnection.claimed_by))).all()
    by_worker = {connection_id: worker for connection_id, worker in rows}
    unlogged = connection_ids - set(total)
    assert all(f":{victim.pid}:" in (by_worker[key] or "") for key in unlogged), unlogged
    # The survivors finished the night. Whether both got a share depends on how fast each
    # started on a loaded machine (one once did it all while the other was still starting):
    # the sharing itself is shown by the killed daemon's claims, finished by the others.
    assert any(logged[1:])

    # The dead worker's claims were finished by the others.
    taken_over = await rows_finished_by_others(database, held, victim.pid)
    assert taken_over, held

    # Each statement cut once (one row per account and due date) and delivered once.
    async with database.session() as session:
        statements = (
            await session.execute(
                select(Statement.account_id, Statement.due_date, Statement.message_id).where(
                    Statement.state == StatementState.PRODUCED
                )
            )
        ).all()
        deliveries = Counter((await session.scalars(select(MailDelivered.message_id))).all())
        failed = await session.scalar(
            select(func.count())
            .select_from(Statement)
            .where(Statement.state == StatementState.FAILED)
        )
    assert failed == 0
    assert len({(account, due) for account, due, _ in statements}) == len(statements)
    mailed = [message_id for _, _, message_id in statements if message_id]
    assert len(mailed) > 100
    assert all(deliveries[message_id] == 1 for message_id in mailed)
    assert len(deliveries) == len(mailed)


async def rows_finished_by_others(
    database: Database, held: dict[str, set[int]], pid: int
) -> dict[str, set[int]]:
    """Of the rows the dead worker held, those whose work another worker did afterwards."""
    done: dict[str, set[int]] = {}
    async with database.session() as session:
        for model in CLAIMED:
            ids = held.get(model.__tablename__) or set()
            if not ids:
                continue
            query: Any = select(model.id).where(
                model.id.in_(ids),
                model.claimed_by.not_like(f"%:{pid}:%"),
                model.claimed_until.is_(None),
            )
            done[model.__tablename__] = set(await session.scalars(query))
    return {table: ids for table, ids in done.items() if ids}

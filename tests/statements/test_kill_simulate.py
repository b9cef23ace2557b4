"""SIGKILL a real ``simulate`` process 10 times (50 with --soak): after restarts every
invariant holds, and the final statements are byte-identical to those of a run never
interrupted."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from releves_mailer.cli.common import REFRESH_FAILED
from releves_mailer.clock import ManualClock
from releves_mailer.collect.connections import build_test_bank
from releves_mailer.collect.scheduler import RefreshPlan
from releves_mailer.collect.service import CollectionService
from releves_mailer.config import Config
from releves_mailer.db import Database
from releves_mailer.db.models import Periodicity
from releves_mailer.signing.secrets import KeyRing
from releves_mailer.statements.audit import TestBankTruth, audit
from tests.datadirs import initialised_data_dir

from .invariants import Summary, check_invariants
from .scenario import Spec, build_portfolio, paris_night

#: Kills of the soak run (``--soak``); the default run kills 10 times.
KILLS = 50
#: Exit status of a run that did its work but saw a refresh fail (README): the runs that
#: cover the websiteUnavailable days below.
FIRST = dt.date(2026, 3, 2)
LAST = dt.date(2026, 4, 20)
STEP = 60
P = Periodicity
SPECS = (
    Spec(P.JOURNALIERE),
    Spec(P.JOURNALIERE, include_pending=True),
    Spec(P.HEBDOMADAIRE, day=1, errors=("websiteUnavailable@2026-03-16..2026-03-17",)),
    Spec(P.MENSUELLE, day=0),
    Spec(P.TRIMESTRIELLE, month=3, day=0),
)


async def build(directory: Path) -> Config:
    """A data directory with the portfolio connected to the test bank, nothing simulated."""
    config = await initialised_data_dir(directory)
    clock = ManualClock(paris_night(FIRST - dt.timedelta(days=1)))
    database = Database(config.database_url)
    try:
        await build_portfolio(
            database, clock, keyring(config), build_test_bank(config, clock), SPECS
        )
    finally:
        await database.dispose()
    return config


def keyring(config: Config) -> KeyRing:
    return KeyRing.from_file(config.path(config.secrets.key_file))


def start(config: Config) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELEVES_MAILER")}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "releves_mailer",
            "--config",
            str(config.source),
            "simulate",
            "--from",
            FIRST.isoformat(),
            "--to",
            LAST.isoformat(),
            "--step-minutes",
            str(STEP),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def done_step(config: Config) -> str | None:
    try:
        return str(json.loads((config.data_dir / "simulation.json").read_text())["done"])
    except (OSError, ValueError, KeyError):
        return None


async def check(config: Config, *, complete: bool) -> Summary:
    database = Database(config.database_url)
    clock = ManualClock(paris_night(LAST))
    bank = build_test_bank(config, clock)
    try:
        problems = await audit(database, truth=TestBankTruth(bank, keyring(config)))
        assert problems == [], [str(p) for p in problems]
        return await check_invariants(
            database,
            bank,
            keyring(config),
            until=LAST - dt.timedelta(days=1),
            complete=complete,
        )
    finally:
        await database.dispose()


async def reference(config: Config) -> Summary:
    """The same simulation, in one go, in this process."""
    plan = RefreshPlan.from_config(config.collection)
    clock = ManualClock(paris_night(FIRST - dt.timedelta(days=1)))
    database = Database(config.database_url)
    try:
        await CollectionService(
            database,
            clock,
            {"testbank": build_test_bank(config, clock)},
            keyring(config),
            plan=plan,
        ).simulate(FIRST, LAST, step_minutes=STEP)
    finally:
        await database.dispose()
    return await check(config, complete=True)


async def progress_marks(
    config: Config, process: subprocess.Popen[bytes], *, count: int, within: float = 60
) -> list[float]:
    """When each of the next ``count`` steps of a run finished (fewer if it ended first or
    ``within`` seconds passed)."""
    marks: list[float] = []
    seen = done_step(config)
    deadline = time.monotonic() + within
    while len(marks) < count and process.poll() is None and time.monotonic() < deadline:
        current = done_step(config)
        if current != seen:
            marks.append(time.monotonic())
            seen = current
        await asyncio.sleep(0.005)
    return marks


@pytest.mark.slow
@pytest.mark.parametrize("kills", [10, pytest.param(KILLS, marks=pytest.mark.soak)])
async def test_simulate_survives_kills(tmp_path: Path, kills: int) -> None:
    config = await build(tmp_path / "killed")
    clean_config = await build(tmp_path / "clean")
    rng = random.Random(20260302)
    sent = checkpoints = 0
    finished = False
    while sent < kills:
        process = start(config)
        if rng.random() < 0.2:
            # During start-up or while redoing the step the previous kill interrupted (at
            # the latest when that step is done).
            await progress_marks(config, process, count=1, within=rng.uniform(0, 2.0))
        else:
            # Two steps of this run done, then a random moment of the step after: the delay
            # scales with the step's duration, so the kills stay spread over the whole
            # simulation however fast the machine or the code.
            marks = await progress_marks(config, process, count=2)
            if len(marks) == 2:
                await asyncio.sleep(rng.uniform(0, 1.0) * (marks[1] - marks[0]))
        if process.poll() is not None:
            _out, err = process.communicate()
            # 3: done, with the scheduled websiteUnavailable refreshes among this run's nights.
            assert process.returncode in (0, REFRESH_FAILED), err.decode()
            finished = True
            break
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL
        sent += 1
        if sent % 10 == 0:
            summary = await check(config, complete=False)
            assert summary.statements > 0
            checkpoints += 1
    # Each run is killed within its first steps, of more than a thousand: it cannot end first.
    assert sent == kills and not finished, f"the simulation ended after {sent} kills"
    assert checkpoints == kills // 10
    # Let the last run finish.
    process = start(config)
    _out, err = process.communicate(timeout=1800)
    assert process.returncode in (0, REFRESH_FAILED), err.decode()
    killed = await check(config, complete=True)

    clean = await reference(clean_config)
    assert killed.statements == clean.statements > 100
    assert killed.deleted_after_report == clean.deleted_after_report
    assert killed.files.keys() == clean.files.keys()
    assert killed.files == clean.files

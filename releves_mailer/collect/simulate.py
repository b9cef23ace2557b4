"""Simulation: the daemon's scheduler run over simulated nights on a manual clock.

Each simulated night is cut into steps ``step_minutes`` apart from the window's start to its
end (both included); at each step the clock is set and :func:`run_due_work` (the daemon's
own runner) is called. Nothing else moves the clock, so two runs from the same database and
seed do the same work at the same clock times and produce byte-identical statements.

Resumable: after each step the time of the last finished step is written (atomically) to a
progress file; a run with the same dates skips the finished steps. The step interrupted by a
crash is run again, which is harmless: the runner is idempotent at a given clock time
(a refresh already done is not due any more, a statement already cut exists).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from releves_mailer.clock import ManualClock
from releves_mailer.collect.provider import Provider
from releves_mailer.collect.scheduler import AfterRefresh, RefreshPlan, run_due_work
from releves_mailer.collect.sync import SyncSettings
from releves_mailer.db import Database
from releves_mailer.files import write_atomically
from releves_mailer.signing.secrets import KeyRing

__all__ = ["SimulationReport", "simulate", "simulation_steps"]


@dataclass(slots=True)
class SimulationReport:
    steps: int = 0
    skipped_steps: int = 0
    refreshes: int = 0
    refresh_errors: int = 0
    statements: int = 0
    waiting: int = 0
    failed: int = 0


def simulation_steps(
    first: dt.date, last: dt.date, plan: RefreshPlan, step_minutes: int = 60
) -> Iterator[tuple[dt.date, dt.datetime]]:
    """(night, UTC instant) of every step of the nights opening from ``first`` to ``last``."""
    if step_minutes < 1:
        raise ValueError("step_minutes must be at least 1")
    night = first
    step = dt.timedelta(minutes=step_minutes)
    while night <= last:
        start, end = plan.window_bounds(night)
        moment = start
        while moment < end:
            yield night, moment
            moment += step
        yield night, end
        night += dt.timedelta(days=1)


def _read_progress(path: Path, key: dict[str, str]) -> dt.datetime | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("key") != key:
        return None
    try:
        return dt.datetime.fromisoformat(str(document["done"]))
    except (KeyError, ValueError):
        return None


def _write_progress(path: Path, key: dict[str, str], done: dt.datetime) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps({"key": key, "done": done.isoformat()}).encode())


async def simulate(
    database: Database,
    *,
    clock: ManualClock,
    providers: Mapping[str, Provider],
    keyring: KeyRing,
    first: dt.date,
    last: dt.date,
    plan: RefreshPlan | None = None,
    sync_settings: SyncSettings | None = None,
    step_minutes: int = 60,
    progress_file: Path | None = None,
    on_night: Callable[[dt.date], None] | None = None,
    after_refresh: AfterRefresh | None = None,
) -> SimulationReport:
    """Run the scheduler over the nights opening from ``first`` to ``last`` (Paris dates).

    ``clock`` must be the clock the providers read (the test bank follows it).
    ``after_refresh`` is the daemon's alert hook, so failures count toward links and alerts
    exactly as they would in production.
    """
    plan = plan or RefreshPlan()
    key = {"from": first.isoformat(), "to": last.isoformat(), "step": str(step_minutes)}
    done = None if progress_file is None else _read_progress(progress_file, key)
    report = SimulationReport()
    current_night: dt.date | None = None
    for night, moment in simulation_steps(first, last, plan, step_minutes):
        if current_night is not None and night != current_night and on_night is not None:
            on_night(current_night)
        current_night = night
        if done is not None and moment <= done:
            report.skipped_steps += 1
            continue
        clock.set(moment)
        result = await run_due_work(
            database,
            clock=clock,
            providers=providers,
            keyring=keyring,
            plan=plan,
            sync_settings=sync_settings,
            after_refresh=after_refresh,
        )
        report.steps += 1
        report.refreshes += result.refresh_count
        report.refresh_errors += result.failed_refreshes
        report.statements += result.statements.count("cut")
        report.waiting += result.statements.count("waiting")
        report.failed += result.statements.count("failed")
        if progress_file is not None:
            _write_progress(progress_file, key, moment)
    if current_night is not None and on_night is not None:
        on_night(current_night)
    return report

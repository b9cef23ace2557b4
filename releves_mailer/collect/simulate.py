"""Simulation: the steps of simulated nights, their report and the progress file.

:meth:`releves_mailer.collect.service.CollectionService.simulate` runs the daemon's scheduler
over simulated nights on a manual clock. Each simulated night is cut into steps
``step_minutes`` apart from the window's start to its end (both included); at each step the
clock is set and :meth:`~releves_mailer.collect.service.CollectionService.run_due` (the
daemon's own runner) is called. Nothing else moves the clock, so two runs from the same
database and seed do the same work at the same clock times and produce byte-identical
statements.

Resumable: after each step the time of the last finished step is written (atomically) to a
progress file; a run with the same dates skips the finished steps. The step interrupted by a
crash is run again, which is harmless: the runner is idempotent at a given clock time
(a refresh already done is not due any more, a statement already cut exists).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from releves_mailer.collect.scheduler import RefreshPlan
from releves_mailer.files import write_atomically

__all__ = ["SimulationReport", "read_progress", "simulation_steps", "write_progress"]


@dataclass(slots=True)
class SimulationReport:
    """Totals of a simulation."""

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


def read_progress(path: Path, key: dict[str, str]) -> dt.datetime | None:
    """The last finished step of the run ``key`` names, if the file is about that run."""
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


def write_progress(path: Path, key: dict[str, str], done: dt.datetime) -> None:
    """Record ``done`` as the last finished step of the run ``key`` names (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps({"key": key, "done": done.isoformat()}).encode())

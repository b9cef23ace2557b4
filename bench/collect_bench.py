"""Benchmark of the collection engine: ``simulate`` over N redevables on the test bank.

Builds a temporary data directory (``initialise_data_dir``: config, keys, migrated SQLite
database, or ``--database-url`` for an empty database elsewhere), creates N redevables of
mixed periodicities (the six periodicities and their day/month variants, a few with
``include_pending``), connects each one to the test bank (~2.9 accounts per connection), then
runs :func:`releves_mailer.collect.simulate.simulate` over D nights, exactly as the
``simulate`` command does.

Prints statements produced per second, total time, the time spent refreshing and cutting,
refreshes, peak memory (ru_maxrss) and the targets (whole run under 10 minutes, under
500 MB, for 700 connections = ~2,000 accounts over 90 days).

Usage::

    python bench/collect_bench.py                             # 700 redevables x 90 nights
    python bench/collect_bench.py --redevables 50 --days 30   # quick look
    python bench/collect_bench.py --profile /tmp/collect.prof # cProfile of the simulation
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import resource
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from releves_mailer.clock import PARIS, ManualClock, SystemClock
from releves_mailer.collect import service
from releves_mailer.collect.connections import build_test_bank, connect_test_bank
from releves_mailer.collect.scheduler import RefreshPlan
from releves_mailer.collect.service import CollectionService
from releves_mailer.collect.simulate import simulation_steps
from releves_mailer.daemon.bootstrap import initialise_data_dir
from releves_mailer.db import Database
from releves_mailer.db.migrate import upgrade
from releves_mailer.db.models import (
    BankAccount,
    BankTransaction,
    Periodicity,
    Statement,
    StatementLine,
)
from releves_mailer.signing.secrets import KeyRing
from releves_mailer.statements.cut import cut_due_statements

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test data builders
from tests.factories import Holder, Spec, add_portfolio

START = dt.date(2026, 1, 5)  # a Monday
P = Periodicity
#: Cycled over the redevables: the six periodicities, their day/month variants, some with
#: pending transactions included.
MIX = (
    Spec(P.JOURNALIERE),
    Spec(P.JOURNALIERE, include_pending=True),
    Spec(P.JOURNALIERE),
    Spec(P.HEBDOMADAIRE, day=2),
    Spec(P.HEBDOMADAIRE, day=1),
    Spec(P.HEBDOMADAIRE, day=7, include_pending=True),
    Spec(P.MENSUELLE, day=0),
    Spec(P.MENSUELLE, day=15),
    Spec(P.MENSUELLE, day=28, include_pending=True),
    Spec(P.TRIMESTRIELLE, month=1, day=1),
    Spec(P.TRIMESTRIELLE, month=3, day=0),
    Spec(P.SEMESTRIELLE, month=1, day=5),
    Spec(P.SEMESTRIELLE, month=6, day=0),
    Spec(P.ANNUELLE, month=2, day=31),
    Spec(P.ANNUELLE, month=12, day=31),
)
TARGET_SECONDS = 600
TARGET_MB = 500


class _Timer:
    """Wall time spent in one coroutine function (wrapped in the collection service)."""

    def __init__(self, target: Callable[..., Awaitable[Any]]) -> None:
        self.target = target
        self.seconds = 0.0
        self.calls = 0

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await self.target(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1


async def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="collect-bench-") as folder:
        built = time.perf_counter()
        config = await initialise_data_dir(Path(folder) / "data", "bench.localhost", SystemClock())
        url = args.database_url or config.database_url
        plan = RefreshPlan.from_config(config.collection)
        first_step = next(iter(simulation_steps(START, START, plan, args.step_minutes)))[1]
        clock = ManualClock(dt.datetime.combine(START, dt.time(12), PARIS) - dt.timedelta(1))
        keyring = KeyRing.from_file(config.path(config.secrets.key_file))
        bank = build_test_bank(config, clock)
        database = Database(url)
        try:
            if args.database_url:
                await upgrade(database)
            specs = [MIX[index % len(MIX)] for index in range(args.redevables)]
            _account, redevables = await add_portfolio(
                database, clock.now(), specs, holder=Holder(login="bench"), first_index=0
            )
            for redevable_id in redevables:
                await connect_test_bank(
                    database, redevable_id, bank=bank, keyring=keyring, clock=clock
                )
            clock.set(first_step)
            setup = time.perf_counter() - built
            collection = CollectionService(database, clock, {bank.name: bank}, keyring, plan=plan)
            refresh_timer = _Timer(collection._refresh_all)
            cut_timer = _Timer(cut_due_statements)
            collection._refresh_all = refresh_timer  # type: ignore[method-assign]
            # The service module looks the cut up in its globals at each round.
            vars(service)["cut_due_statements"] = cut_timer
            last = START + dt.timedelta(days=args.days - 1)
            profiler = cProfile.Profile() if args.profile else None
            nights = 0

            def on_night(_night: dt.date) -> None:
                nonlocal nights
                nights += 1
                if args.progress and nights % args.progress == 0:
                    print(f"  night {nights}/{args.days}: {time.perf_counter() - started:.1f} s")

            started = time.perf_counter()
            cpu_started = time.process_time()
            if profiler is not None:
                profiler.enable()
            report = await collection.simulate(
                START, last, step_minutes=args.step_minutes, on_night=on_night
            )
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(args.profile)
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            async with database.session() as session:
                accounts = await session.scalar(select(func.count()).select_from(BankAccount))
                rows = await session.scalar(select(func.count()).select_from(BankTransaction))
                statements = await session.scalar(select(func.count()).select_from(Statement))
                lines = await session.scalar(select(func.count()).select_from(StatementLine))
        finally:
            await database.dispose()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    total = setup + elapsed
    backend = "postgresql" if args.database_url else "sqlite"
    print(f"database          {backend}")
    print(f"redevables        {args.redevables} (one test bank connection each)")
    print(f"accounts          {accounts}")
    print(f"nights            {args.days} (step {args.step_minutes} min, {report.steps} steps)")
    print(f"transactions      {rows}")
    print(f"refreshes         {report.refreshes} ({report.refresh_errors} in error)")
    print(f"statements        {report.statements} cut ({statements} rows, {lines} lines)")
    print(f"setup             {setup:.1f} s (data dir, portfolio, connections)")
    print(f"simulation        {elapsed:.1f} s wall, {cpu:.1f} s CPU (all threads)")
    print(
        f"  refreshing      {refresh_timer.seconds:.1f} s ({refresh_timer.calls} calls, "
        f"{1000 * refresh_timer.seconds / max(report.refreshes, 1):.2f} ms per refresh)"
    )
    print(
        f"  cutting         {cut_timer.seconds:.1f} s ({cut_timer.calls} calls, "
        f"{1000 * cut_timer.seconds / max(report.statements, 1):.2f} ms per statement)"
    )
    print(f"statements/s      {report.statements / elapsed:.1f} (whole simulation)")
    cut_rate = report.statements / max(cut_timer.seconds, 1e-9)
    print(f"statements/s      {cut_rate:.1f} (cutting only)")
    print(f"total             {total:.1f} s (target < {TARGET_SECONDS} s)")
    print(f"peak RSS          {rss_mb:.0f} MB (target < {TARGET_MB} MB)")
    ok = total < TARGET_SECONDS and rss_mb < TARGET_MB
    print("targets           " + ("met" if ok else "MISSED"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--redevables", type=int, default=700)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--step-minutes", type=int, default=60)
    parser.add_argument("--database-url", default=None, help="an empty database (default: temp)")
    parser.add_argument("--profile", default=None, help="write cProfile stats here")
    parser.add_argument("--progress", type=int, default=10, help="print every N nights")
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

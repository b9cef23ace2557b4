"""Discovery of redevables from 10,000 EDI deposits on SQLite (target: under 30 s).

Usage: PYTHONPATH=. .venv/bin/python bench/edi_bench.py [--count N] [--companies N]
Generates ``--count`` deposit files (3 declarations each, every procedure in turn, deposit
dates spread over 24 months, ``--companies`` distinct made-up companies), files them into a
fresh migrated SQLite database (timed apart: reading and filing), then runs the first
analysis (18 months: most companies become redevables) and a second one (nothing new).
Prints the wall and CPU time of each phase and the counts; the target is about the analysis.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from releves_mailer.clock import ManualClock
from releves_mailer.db import Database
from releves_mailer.db.migrate import upgrade
from releves_mailer.portfolio.accounts import create_account
from releves_mailer.services.edi import EdiService
from tests.edi.interchanges import spread_deposits
from tests.factories import CABINET, PASSWORD

TARGET_SECONDS = 30.0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def main(count: int, companies: int) -> None:
    clock = ManualClock(dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC))
    started = time.perf_counter()
    files = spread_deposits(count=count, companies=companies, until=dt.date(2026, 11, 30))
    print(f"generated {len(files)} deposit files in {time.perf_counter() - started:.1f} s")
    with tempfile.TemporaryDirectory() as folder:
        database = Database(f"sqlite+aiosqlite:///{folder}/bench.sqlite3")
        try:
            await upgrade(database)
            async with database.session() as session:
                account = await create_account(session, clock, CABINET, PASSWORD)
            service = EdiService(database, clock)

            wall, cpu = time.perf_counter(), _cpu()
            filed = 0
            for start in range(0, len(files), 100):
                results = await service.file_deposits(
                    account.id, files[start : start + 100], source="command"
                )
                filed += sum(r.ok for r in results)
            print(
                f"filed {filed} deposits: {time.perf_counter() - wall:.1f} s wall, "
                f"{_cpu() - cpu:.1f} s CPU"
            )

            for label in ("first analysis (18 months)", "second analysis (nothing new)"):
                wall, cpu = time.perf_counter(), _cpu()
                report = await service.discover(account.id)
                elapsed = time.perf_counter() - wall
                print(
                    f"{label}: {elapsed:.1f} s wall, {_cpu() - cpu:.1f} s CPU; "
                    f"{report.declarations} declarations in the window, "
                    f"{len(report.created)} created, {len(report.present)} already present, "
                    f"{len(report.refused)} refused"
                )
                if label.startswith("first"):
                    verdict = "met" if elapsed < TARGET_SECONDS else "MISSED"
                    print(f"target {TARGET_SECONDS:.0f} s for the analysis: {verdict}")
                clock.advance(dt.timedelta(days=1))
        finally:
            await database.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--companies", type=int, default=3_000)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.count, arguments.companies))

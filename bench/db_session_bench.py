"""Time of a short database session on SQLite: our one-trip driver against aiosqlite's adaptor.

Usage: .venv/bin/python bench/db_session_bench.py [--sessions 2000] [--concurrency 1]

Creates a temporary SQLite database with 1,000 rows, then runs, on each driver, ``sessions``
sessions of three kinds, ``concurrency`` of them at a time: a read (one SELECT by primary key),
a read of three statements, and a write (one UPDATE and its commit). Prints, for each kind and
driver, the mean and median wall time of a session, the hand-overs to SQLite's thread per
session, and the ratio one-trip/aiosqlite. The order of the drivers alternates over three
rounds and the best round is kept, so a burst of load on the machine favours neither.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite
from sqlalchemy import text

from releves_mailer.db import Database, sqlite_driver

ROWS = 1000
ROUNDS = 3


async def read_one(database: Database, key: int) -> None:
    async with database.session() as session:
        await session.execute(text("SELECT name FROM item WHERE id = :id"), {"id": key})


async def read_three(database: Database, key: int) -> None:
    async with database.session() as session:
        for offset in range(3):
            await session.execute(
                text("SELECT name FROM item WHERE id = :id"), {"id": (key + offset) % ROWS + 1}
            )


async def write_one(database: Database, key: int) -> None:
    async with database.session() as session:
        await session.execute(
            text("UPDATE item SET hits = hits + 1 WHERE id = :id"), {"id": key % ROWS + 1}
        )


KINDS: dict[str, Callable[[Database, int], Awaitable[None]]] = {
    "read (1 SELECT)": read_one,
    "read (3 SELECTs)": read_three,
    "write (1 UPDATE)": write_one,
}


class HandOvers:
    """Counts the functions handed to any aiosqlite connection's thread."""

    def __init__(self) -> None:
        self.count = 0
        self._original: Any = aiosqlite.Connection._execute

    def install(self) -> None:
        original = self._original
        counter = self

        async def counting(
            connection: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any
        ) -> Any:
            counter.count += 1
            return await original(connection, fn, *args, **kwargs)

        aiosqlite.Connection._execute = counting  # type: ignore[method-assign]


async def run_kind(
    path: Path,
    kind: Callable[[Database, int], Awaitable[None]],
    *,
    one_trip: bool,
    sessions: int,
    concurrency: int,
    hand_overs: HandOvers,
) -> tuple[list[float], float]:
    sqlite_driver.AVAILABLE = one_trip
    database = Database(f"sqlite+aiosqlite:///{path}")
    try:
        await kind(database, 0)  # opens the pool's first connection
        times: list[float] = []
        queue = iter(range(sessions))
        hand_overs.count = 0

        async def worker() -> None:
            for key in queue:
                started = time.perf_counter()
                await kind(database, key)
                times.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return times, hand_overs.count / sessions
    finally:
        await database.dispose()


async def main(sessions: int, concurrency: int) -> None:
    available = sqlite_driver.AVAILABLE
    if not available:
        raise SystemExit("the installed aiosqlite lacks what the one-trip driver needs")
    hand_overs = HandOvers()
    hand_overs.install()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.sqlite3"
        setup = Database(f"sqlite+aiosqlite:///{path}")
        async with setup.session() as session:
            await session.execute(
                text("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, hits INTEGER)")
            )
            for key in range(1, ROWS + 1):
                await session.execute(
                    text("INSERT INTO item VALUES (:id, :name, 0)"),
                    {"id": key, "name": f"item {key}"},
                )
        await setup.dispose()
        print(f"{sessions} sessions of each kind, {concurrency} at a time, best of {ROUNDS} rounds")
        print(f"{'session':<18} {'driver':<9} {'mean ms':>8} {'median ms':>10} {'hand-overs':>11}")
        for name, kind in KINDS.items():
            best: dict[bool, tuple[float, float, float]] = {}
            for round_ in range(ROUNDS):
                order = (True, False) if round_ % 2 == 0 else (False, True)
                for one_trip in order:
                    times, per_session = await run_kind(
                        path,
                        kind,
                        one_trip=one_trip,
                        sessions=sessions,
                        concurrency=concurrency,
                        hand_overs=hand_overs,
                    )
                    figures = (statistics.fmean(times), statistics.median(times), per_session)
                    if one_trip not in best or figures[0] < best[one_trip][0]:
                        best[one_trip] = figures
            for one_trip, label in ((False, "aiosqlite"), (True, "one-trip")):
                mean, median, per_session = best[one_trip]
                print(
                    f"{name:<18} {label:<9} {mean * 1000:>8.3f} {median * 1000:>10.3f}"
                    f" {per_session:>11.1f}"
                )
            print(f"{'':<18} ratio one-trip/aiosqlite: {best[True][0] / best[False][0]:.2f}x")
    sqlite_driver.AVAILABLE = available


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=1)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.sessions, arguments.concurrency))

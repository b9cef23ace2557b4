"""Benchmark of the collection sync: daily refreshes of test bank connections over simulated days.

Builds a fresh migrated database (a temporary SQLite file by default, or ``--database-url``,
e.g. a PostgreSQL URL whose database is empty), creates N redevables (no statement is cut
here, so their periodicity does not matter), connects each one to the test bank, then
moves a :class:`ManualClock` one day at a time and refreshes every connection once per
simulated day (at 03:00 Paris, like the scheduler).

Prints refreshes/s, ms per refresh, accounts, transactions and versions stored, the time spent
in the test bank alone (the same reads replayed on a fresh bank, no database), and peak memory
(ru_maxrss; tracemalloc peak with ``--tracemalloc``, which slows everything down).

Usage::

    python bench/sync_bench.py                               # 20 connections x 365 days
    python bench/sync_bench.py --connections 700 --days 90   # ~2,000 accounts
    python bench/sync_bench.py --batch 50                    # CollectionService.refresh, 50 a batch
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy import func, select

from releves_mailer.aggregators.testbank import TestBank, TestBankToken
from releves_mailer.clock import PARIS, ManualClock
from releves_mailer.collect.connections import connect_test_bank
from releves_mailer.collect.service import CollectionService
from releves_mailer.collect.sync import SyncSettings
from releves_mailer.db import Database
from releves_mailer.db.migrate import upgrade
from releves_mailer.db.models import (
    BankAccount,
    BankTransaction,
    BankTransactionVersion,
)
from releves_mailer.signing.secrets import KeyRing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test data builders
from tests.factories import Holder, Spec, add_portfolio

START = dt.datetime(2026, 1, 5, 3, 0, tzinfo=PARIS)  # a Monday, 03:00 Paris


async def _counts(database: Database) -> tuple[int, int, int]:
    async with database.session() as session:
        accounts = await session.scalar(select(func.count()).select_from(BankAccount))
        rows = await session.scalar(select(func.count()).select_from(BankTransaction))
        versions = await session.scalar(select(func.count()).select_from(BankTransactionVersion))
    return accounts or 0, rows or 0, versions or 0


async def _bank_only(tokens: list[str], days: int) -> float:
    """The same reads as the sync does, on a fresh test bank with no database."""
    clock = ManualClock(START)
    bank = TestBank(clock, seed=1)
    accesses = [bank.access_for(TestBankToken.decode(token)) for token in tokens]
    settings = SyncSettings()
    cursors: list[dt.datetime | None] = [None] * len(accesses)
    started = time.perf_counter()
    for _ in range(days):
        now = clock.now()
        today = now.astimezone(PARIS).date()
        for index, access in enumerate(accesses):
            await bank.connection_status(access)
            await bank.list_accounts(access)
            cursor = cursors[index]
            fetched = []
            if cursor is None:
                low = today - dt.timedelta(days=settings.initial_days)
            else:
                low = today - dt.timedelta(days=settings.reread_days)
                fetched.extend(
                    await bank.fetch_transactions(
                        access, changed_since=cursor - settings.cursor_overlap
                    )
                )
            fetched.extend(await bank.fetch_transactions(access, min_date=low))
            cursors[index] = now
        clock.advance(dt.timedelta(days=1))
    return time.perf_counter() - started


async def run(args: argparse.Namespace) -> int:
    clock = ManualClock(START)
    keyring = KeyRing([Fernet.generate_key()])
    with tempfile.TemporaryDirectory(prefix="sync-bench-") as folder:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(folder) / 'bench.sqlite3'}"
        database = Database(url)
        try:
            await upgrade(database)
            bank = TestBank(clock, seed=1)
            providers = {TestBank.name: bank}
            _account, redevables = await add_portfolio(
                database,
                clock.now(),
                [Spec()] * args.connections,
                holder=Holder(login="bench"),
                first_index=0,
            )
            connection_ids: list[int] = []
            tokens: list[str] = []
            for redevable_id in redevables:
                connection = await connect_test_bank(
                    database, redevable_id, bank=bank, keyring=keyring, clock=clock
                )
                connection_ids.append(connection.id)
                tokens.append(keyring.decrypt(connection.token_encrypted))
            collection = CollectionService(database, clock, providers, keyring)
            refreshes = failures = 0
            per_day: list[float] = []
            if args.tracemalloc:
                tracemalloc.start()
            started = time.perf_counter()
            cpu_started = time.process_time()
            for day in range(args.days):
                day_started = time.perf_counter()
                if args.batch > 1:
                    for first in range(0, len(connection_ids), args.batch):
                        results = await collection.refresh(
                            connection_ids[first : first + args.batch]
                        )
                        refreshes += len(results)
                        failures += sum(not result.ok for result in results)
                else:
                    for connection_id in connection_ids:
                        result = await collection.refresh_one(connection_id)
                        refreshes += 1
                        failures += not result.ok
                per_day.append(time.perf_counter() - day_started)
                clock.advance(dt.timedelta(days=1))
                if args.progress and (day + 1) % args.progress == 0:
                    elapsed = time.perf_counter() - started
                    print(f"  day {day + 1}/{args.days}: {elapsed:.1f} s", flush=True)
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            traced_peak = tracemalloc.get_traced_memory()[1] if args.tracemalloc else None
            if args.tracemalloc:
                tracemalloc.stop()
            accounts, rows, versions = await _counts(database)
        finally:
            await database.dispose()
    bank_seconds = await _bank_only(tokens, args.days) if args.bank_only else None

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    backend = "postgresql" if args.database_url else "sqlite"
    mode = f"refresh x{args.batch}" if args.batch > 1 else "refresh_one"
    print(f"database        {backend} ({mode})")
    print(f"connections     {args.connections}")
    print(f"days            {args.days}")
    print(f"accounts        {accounts} ({accounts / max(args.connections, 1):.2f} per connection)")
    print(f"transactions    {rows}")
    print(f"versions        {versions}")
    print(f"refreshes       {refreshes} ({failures} failed)")
    print(f"elapsed         {elapsed:.2f} s")
    print(f"cpu             {cpu:.2f} s (every thread; the machine may be shared)")
    print(f"refreshes/s     {refreshes / elapsed:.1f}")
    print(f"ms per refresh  {1000 * elapsed / max(refreshes, 1):.2f}")
    print(f"first day       {per_day[0]:.2f} s (initial history)" if per_day else "")
    if len(per_day) > 1:
        rest = sum(per_day[1:]) / (len(per_day) - 1)
        print(f"later days      {rest:.2f} s/day ({1000 * rest / args.connections:.2f} ms/refresh)")
    if bank_seconds is not None:
        share = 100 * bank_seconds / elapsed
        print(f"test bank only  {bank_seconds:.2f} s ({share:.0f} % of the run)")
    print(f"peak RSS        {rss_mb:.0f} MB")
    if traced_peak is not None:
        print(f"tracemalloc     {traced_peak / 2**20:.0f} MB peak")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--batch", type=int, default=1, help="connections per transaction")
    parser.add_argument("--database-url", default=None, help="an empty database (default: temp)")
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--no-bank-only", dest="bank_only", action="store_false")
    parser.add_argument("--progress", type=int, default=0, help="print every N days")
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

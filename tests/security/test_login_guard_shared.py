"""The login guard's counts in the database: two workers (two guards, two connection pools on
one database) answer with the same counts, as several daemons sharing PostgreSQL do.

Runs on SQLite and, with ``RELEVES_MAILER_TEST_DATABASE_URL``, on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from releves_mailer.clock import ManualClock
from releves_mailer.config import AuthSection
from releves_mailer.db import Database
from releves_mailer.db.models import LoginAttempt
from releves_mailer.portfolio.auth import PasswordGuard
from releves_mailer.portfolio.logins import LoginThrottled
from releves_mailer.portfolio.throttle import DatabaseGuardStore

DOMAIN = "releves.example"
CONFIG = AuthSection(
    max_failures_per_login_and_address=3,
    max_failures_per_address=5,
    delay_after_failures=1,
    first_delay_seconds=1,
    max_delay_seconds=4,
)


class Sleeps:
    """The guard's sleep: records the delays, sleeps not."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


async def wrong() -> str | None:
    return None


async def right() -> str | None:
    return "ok"


@pytest.fixture
async def second(database: Database) -> AsyncIterator[Database]:
    """The same database through a second engine: the other worker's pool."""
    other = Database(str(database.url.render_as_string(hide_password=False)))
    try:
        yield other
    finally:
        await other.dispose()


def guard(database: Database, clock: ManualClock, sleeps: Sleeps | None = None) -> PasswordGuard:
    store = DatabaseGuardStore(database, clock, CONFIG.window)
    return PasswordGuard(clock, CONFIG, DOMAIN, sleep=sleeps or Sleeps(), store=store)


async def test_failures_on_one_worker_refuse_on_the_other(
    database: Database, second: Database, clock: ManualClock
) -> None:
    first, other = guard(database, clock), guard(second, clock)
    for worker in (first, other, first):
        assert await worker.attempt("192.0.2.7", "cabinet", wrong) is None
    # Three failures of (address, login) in all: both workers refuse the fourth at once.
    for worker in (first, other):
        with pytest.raises(LoginThrottled):
            await worker.attempt("192.0.2.7", "cabinet", right)
    # Another address is not refused; the login's delay is shared.
    assert await other.next_delay("cabinet") == await first.next_delay("cabinet") == 4.0
    assert await first.attempt("198.51.100.1", "cabinet", right) == "ok"
    # The success forgets the login's failures everywhere (not those of the first address).
    assert await other.next_delay("cabinet") == 0.0
    with pytest.raises(LoginThrottled):
        await other.attempt("192.0.2.7", "cabinet", right)
    # Out of the window, the address may try again.
    clock.advance(dt.timedelta(minutes=CONFIG.window_minutes, seconds=1))
    assert await other.attempt("192.0.2.7", "cabinet", right) == "ok"


async def test_attempts_in_flight_on_one_worker_count_on_the_other(
    database: Database, second: Database, clock: ManualClock
) -> None:
    first, other = guard(database, clock), guard(second, clock)
    opened, all_in = asyncio.Event(), asyncio.Event()
    entered = 0

    async def held() -> str | None:
        nonlocal entered
        entered += 1
        if entered == 3:
            all_in.set()
        await opened.wait()
        return None

    # Three attempts being checked on the first worker fill the (address, login) limit.
    tasks = [asyncio.create_task(first.attempt("192.0.2.9", "demo", held)) for _ in range(3)]
    async with asyncio.timeout(60):  # a hang guard
        await all_in.wait()
    with pytest.raises(LoginThrottled):
        await other.attempt("192.0.2.9", "demo", right)
    opened.set()
    assert await asyncio.gather(*tasks) == [None, None, None]
    async with database.session() as session:
        pending = await session.scalar(select(func.count()).where(LoginAttempt.pending.is_(True)))
    assert pending == 0  # every attempt left its pending rows behind it


async def test_parallel_attempts_on_two_workers_never_pass_the_limit(
    database: Database, second: Database, clock: ManualClock
) -> None:
    first, other = guard(database, clock), guard(second, clock)
    checked = 0

    async def counted() -> str | None:
        nonlocal checked
        checked += 1
        await asyncio.sleep(0.05)
        return None

    async def one(worker: PasswordGuard) -> str:
        try:
            await worker.attempt("203.0.113.4", "cabinet", counted)
        except LoginThrottled:
            return "refused"
        return "checked"

    outcomes = await asyncio.gather(*(one(first if n % 2 else other) for n in range(10)))
    # Whatever the interleaving, at most the limit of passwords were checked.
    assert checked == outcomes.count("checked")
    assert 1 <= checked <= CONFIG.max_failures_per_login_and_address
    assert outcomes.count("refused") == 10 - checked


async def test_a_pending_attempt_of_a_dead_worker_stops_counting(
    database: Database, clock: ManualClock
) -> None:
    store = DatabaseGuardStore(database, clock, CONFIG.window)
    limits = (("ip:192.0.2.1 login:x", 1), ("ip:192.0.2.1", 5))
    ticket = await store.enter(limits)
    assert ticket is not None
    assert await store.enter(limits) is None  # the first one is still being checked
    # Its worker died without leaving: after the pending lease, it counts no more.
    clock.advance(dt.timedelta(minutes=6))
    assert await store.enter(limits) is not None

"""Refresh planning: one refresh per connection every 24 h +/- 3 h, spread over the night window."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
from collections import Counter
from collections.abc import Sequence

from sqlalchemy import update

from releves_mailer.clock import PARIS, ManualClock
from releves_mailer.collect.connections import connect_test_bank
from releves_mailer.collect.provider import ProviderAccess, ProviderAccount
from releves_mailer.collect.scheduler import (
    ConnectionClock,
    RefreshPlan,
    is_refresh_due,
    next_refresh,
    refresh_slots,
    run_due_work,
)
from releves_mailer.collect.sync import RefreshResult
from releves_mailer.collect.testbank import TestBank
from releves_mailer.db import Database
from releves_mailer.db.models.collect import BankConnection
from releves_mailer.signing.secrets import KeyRing

from .conftest import Portfolio

NIGHTS = [dt.date(2026, 3, 1) + dt.timedelta(days=n) for n in range(60)]  # DST on 29 March
CONNECTIONS = range(1, 201)


def _paris(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(PARIS)


def _in_window(moment: dt.datetime, night: dt.date, plan: RefreshPlan) -> bool:
    start, end = plan.window_bounds(night)
    return start <= moment < end


def test_every_slot_is_inside_its_night_window() -> None:
    for plan in (RefreshPlan(), RefreshPlan(window_start=dt.time(22), window_end=dt.time(6))):
        for connection_id in CONNECTIONS:
            for night in NIGHTS[:10]:
                (slot,) = refresh_slots(connection_id, night, plan)
                assert _in_window(slot, night, plan), (connection_id, night, _paris(slot))


def test_consecutive_refreshes_are_24_hours_plus_or_minus_3_apart() -> None:
    plan = RefreshPlan()
    gaps = []
    for connection_id in CONNECTIONS:
        for earlier_night, later_night in itertools.pairwise(NIGHTS):
            earlier = refresh_slots(connection_id, earlier_night, plan)[0]
            later = refresh_slots(connection_id, later_night, plan)[0]
            # The night of a change of daylight saving time is an hour shorter or longer.
            shift = plan.window_bounds(later_night)[0] - plan.window_bounds(earlier_night)[0]
            gaps.append(later - earlier - shift + dt.timedelta(hours=24))
    assert min(gaps) >= dt.timedelta(hours=21)
    assert max(gaps) <= dt.timedelta(hours=27)
    # The jitter is real: refreshes are not all exactly a day apart.
    assert len(set(gaps)) > 100


def test_connections_are_spread_over_the_window() -> None:
    plan = RefreshPlan()
    night = NIGHTS[5]
    minutes = Counter(
        _paris(refresh_slots(connection_id, night, plan)[0]).strftime("%H:%M")
        for connection_id in CONNECTIONS
    )
    # Never a crowd at one minute (no more than 3% of the connections), edges included.
    assert max(minutes.values()) <= 6
    assert minutes["00:00"] + minutes["05:59"] <= 2
    hours = Counter(minute[:2] for minute in minutes.elements())
    assert set(hours) == {"00", "01", "02", "03", "04", "05"}
    assert min(hours.values()) >= 200 // 6 // 2


def test_refresh_every_two_days_and_twice_a_night() -> None:
    every_other = RefreshPlan(refresh_hours=48)
    nights_with_slot = [night for night in NIGHTS if refresh_slots(7, night, every_other)]
    assert len(nights_with_slot) == len(NIGHTS) // 2
    assert all(
        (later - earlier).days == 2 for earlier, later in itertools.pairwise(nights_with_slot)
    )
    twice = RefreshPlan(window_start=dt.time(18), window_end=dt.time(8), refresh_hours=12)
    for connection_id in CONNECTIONS:
        slots = refresh_slots(connection_id, NIGHTS[3], twice)
        assert 1 <= len(slots) <= 2
        if len(slots) == 2:
            assert slots[1] - slots[0] == dt.timedelta(hours=12)
            assert _in_window(slots[1], NIGHTS[3], twice)


def test_due_only_once_per_slot_and_retried_while_the_window_is_open() -> None:
    plan = RefreshPlan(retry_minutes=60)
    night = NIGHTS[10]
    (slot,) = refresh_slots(42, night, plan)
    _start, end = plan.window_bounds(night)
    before = slot - dt.timedelta(minutes=1)
    never = ConnectionClock(42, None, None)
    assert is_refresh_due(never, before, plan)  # just connected: at once

    previous = ConnectionClock(42, slot - dt.timedelta(hours=22), slot - dt.timedelta(hours=22))
    assert not is_refresh_due(previous, before, plan)
    assert next_refresh(previous, before, plan) == slot
    assert is_refresh_due(previous, slot, plan)

    done = ConnectionClock(42, slot + dt.timedelta(minutes=5), slot + dt.timedelta(minutes=5))
    assert not is_refresh_due(done, slot + dt.timedelta(minutes=90), plan)
    assert next_refresh(done, slot + dt.timedelta(minutes=90), plan) > end

    failed_at = slot + dt.timedelta(minutes=5)
    failed = ConnectionClock(42, failed_at, slot - dt.timedelta(hours=22))
    assert not is_refresh_due(failed, failed_at + dt.timedelta(minutes=59), plan)
    if failed_at + dt.timedelta(minutes=60) < end:
        assert is_refresh_due(failed, failed_at + dt.timedelta(minutes=60), plan)
    assert not is_refresh_due(failed, end + dt.timedelta(minutes=1), plan)


class _CountingBank(TestBank):
    """The test bank under another name, with calls that take time and are counted."""

    __test__ = False
    name = "countingbank"

    def __init__(self, clock: ManualClock, *, await_overlap: int = 1) -> None:
        super().__init__(clock, seed=3)
        self.in_flight = 0
        self.most = 0
        # The first calls wait (up to 10 s) until ``await_overlap`` of them are in flight, so
        # that allowed concurrency is seen however slowly the next call gets here.
        self._await_overlap = await_overlap
        self._overlapped = asyncio.Event()

    async def list_accounts(self, access: ProviderAccess) -> Sequence[ProviderAccount]:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            if self.in_flight >= self._await_overlap:
                self._overlapped.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._overlapped.wait(), 10)
            await asyncio.sleep(0.02)
            return await super().list_accounts(access)
        finally:
            self.in_flight -= 1


async def test_concurrency_per_provider_is_bounded(
    database: Database, keyring: KeyRing, clock: ManualClock, portfolio: Portfolio
) -> None:
    counting = _CountingBank(clock, await_overlap=2)
    bank = TestBank(clock, seed=3)
    for redevable_id in (portfolio.redevable_id, portfolio.other_redevable_id):
        for seed in (3, 4, 5):
            await connect_test_bank(
                database, redevable_id, bank=bank, seed=seed, keyring=keyring, clock=clock
            )
    async with database.session() as session:
        await session.execute(update(BankConnection).values(provider=counting.name))
    plan = RefreshPlan(max_concurrency_per_provider=2, refresh_batch=1)
    report = await run_due_work(
        database, clock=clock, providers={counting.name: counting}, keyring=keyring, plan=plan
    )
    assert [result.ok for result in report.refreshed] == [True] * 6
    assert counting.most == 2  # concurrent, but never more than the bound


async def test_in_process_test_bank_is_refreshed_one_batch_at_a_time(
    database: Database, keyring: KeyRing, clock: ManualClock, portfolio: Portfolio
) -> None:
    counting = _CountingBank(clock)
    counting.name = TestBank.name
    for seed in (3, 4, 5):
        await connect_test_bank(
            database, portfolio.redevable_id, bank=counting, seed=seed, keyring=keyring, clock=clock
        )
    plan = RefreshPlan(max_concurrency_per_provider=4, refresh_batch=1)
    report = await run_due_work(
        database, clock=clock, providers={TestBank.name: counting}, keyring=keyring, plan=plan
    )
    assert len(report.refreshed) == 3
    assert counting.most == 1


async def test_refresh_now_adds_only_the_named_connections(
    database: Database, keyring: KeyRing, clock: ManualClock, portfolio: Portfolio
) -> None:
    """A webview completion or a webhook names one connection: only it is refreshed early,
    and every result goes through the hook (a failing hook stops nothing)."""
    bank = TestBank(clock, seed=3)
    ids = [
        (
            await connect_test_bank(
                database, portfolio.redevable_id, bank=bank, seed=seed, keyring=keyring, clock=clock
            )
        ).id
        for seed in (3, 4, 5)
    ]
    providers = {bank.name: bank}
    clock.set(dt.datetime.combine(_paris(clock.now()).date(), dt.time(15), tzinfo=PARIS))
    first = await run_due_work(database, clock=clock, providers=providers, keyring=keyring)
    assert [result.connection_id for result in first.refreshed] == ids  # never checked: due
    clock.advance(dt.timedelta(minutes=5))  # daytime: nothing due until the next night
    assert (
        await run_due_work(database, clock=clock, providers=providers, keyring=keyring)
    ).refreshed == []
    seen: list[int] = []

    async def hook(result: RefreshResult) -> None:
        seen.append(result.connection_id)
        raise RuntimeError("the alert service is down")

    report = await run_due_work(
        database,
        clock=clock,
        providers=providers,
        keyring=keyring,
        refresh_now={ids[1]},
        after_refresh=hook,
    )
    assert [result.connection_id for result in report.refreshed] == [ids[1]]
    assert seen == [ids[1]]

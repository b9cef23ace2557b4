"""One simulated year of 20 redevables: every invariant, counted; and determinism."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import func, select

from releves_mailer.aggregators.testbank import TestBank
from releves_mailer.clock import PARIS, ManualClock
from releves_mailer.collect.connections import set_redevable_accounts_active
from releves_mailer.db import Database
from releves_mailer.db.models import (
    BankAccount,
    LineKind,
    Periodicity,
    Redevable,
    StatementLine,
)
from releves_mailer.portfolio.periodicity import Schedule
from releves_mailer.portfolio.redevables import deactivate_redevable, reactivate_redevable
from releves_mailer.signing.secrets import KeyRing

from .conftest import World, make_world
from .invariants import Summary, check_invariants, expected_dues
from .scenario import Spec, build_portfolio, paris_night

P = Periodicity
YEAR_START = dt.date(2026, 1, 1)
YEAR_END = dt.date(2026, 12, 31)
#: Twenty redevables: the six periodicities with their day and month variants (Sunday = 1,
#: Saturday = 7, end of month = 0, a 31st in February and in September), pending movements,
#: connection errors (transient and needing the user) on some.
YEAR = (
    Spec(P.JOURNALIERE),
    Spec(P.JOURNALIERE, include_pending=True),
    Spec(P.JOURNALIERE, errors=("websiteUnavailable@2026-03-10..2026-03-12",)),
    Spec(P.HEBDOMADAIRE, day=2),
    Spec(P.HEBDOMADAIRE, day=1),
    Spec(P.HEBDOMADAIRE, day=7, include_pending=True),
    Spec(P.HEBDOMADAIRE, day=4, errors=("wrongpass@2026-09-01..2026-09-04",)),
    Spec(P.MENSUELLE, day=1),
    Spec(P.MENSUELLE, day=0),
    Spec(P.MENSUELLE, day=15, errors=("SCARequired@2026-05-14..2026-05-20",)),
    Spec(P.MENSUELLE, day=28, include_pending=True),
    Spec(P.TRIMESTRIELLE, month=1, day=1),
    Spec(P.TRIMESTRIELLE, month=3, day=0),
    Spec(P.TRIMESTRIELLE, month=2, day=10),
    Spec(P.SEMESTRIELLE, month=1, day=5),
    Spec(P.SEMESTRIELLE, month=6, day=0),
    Spec(P.ANNUELLE, month=2, day=31),
    Spec(P.ANNUELLE, month=9, day=31),
    Spec(P.ANNUELLE, month=12, day=31),
    Spec(P.JOURNALIERE),  # deactivated from 15/06 to 15/07
)
OFF_INDEX = 19
OFF = (dt.date(2026, 6, 15), dt.date(2026, 7, 15))
STEP = 180


async def _switch(world: World, redevable_id: int, day: dt.date, active: bool) -> None:
    """What deactivating (reactivating) a redevable does, at noon on ``day``."""
    world.clock.set(dt.datetime.combine(day, dt.time(12), tzinfo=PARIS).astimezone(dt.UTC))
    async with world.database.session() as session:
        redevable = await session.get(Redevable, redevable_id)
        assert redevable is not None
        if active:
            await reactivate_redevable(session, world.clock, redevable)
        else:
            await deactivate_redevable(session, world.clock, redevable)
    await set_redevable_accounts_active(world.database, redevable_id, active, clock=world.clock)


async def simulate_year(world: World, last: dt.date) -> None:
    """Simulate the nights from the start to ``last``, the redevable off from OFF[0] to
    OFF[1] when they fall in the span."""
    off_id = world.redevable_ids[OFF_INDEX] if len(world.redevable_ids) > OFF_INDEX else None
    night = YEAR_START
    if off_id is not None and last >= OFF[1]:
        await world.simulate(night, OFF[0], step_minutes=STEP)
        await _switch(world, off_id, OFF[0], False)
        await world.simulate(OFF[0] + dt.timedelta(1), OFF[1], step_minutes=STEP)
        await _switch(world, off_id, OFF[1], True)
        night = OFF[1] + dt.timedelta(1)
    await world.simulate(night, last, step_minutes=STEP)


@pytest.mark.slow
async def test_a_year_of_twenty_redevables(database: Database, keyring: KeyRing) -> None:
    world = await make_world(database, keyring, YEAR, YEAR_START)
    # The nights up to 01/01 of the next year cut the statements due on 31/12.
    await simulate_year(world, YEAR_END + dt.timedelta(days=1))

    assert await world.audit() == []
    off = {world.redevable_ids[OFF_INDEX]: OFF}
    summary = await check_invariants(database, world.bank, keyring, until=YEAR_END, off=off)

    # Statements per account match the due dates of the year, periodicity by periodicity.
    async with database.session() as session:
        accounts = (
            await session.execute(
                select(BankAccount, Redevable).join(
                    Redevable, Redevable.id == BankAccount.redevable_id
                )
            )
        ).all()
        expected_by_periodicity: dict[str, int] = {}
        for account, redevable in accounts:
            schedule = Schedule(redevable.periodicity, redevable.month, redevable.day)
            activated = account.created_at.astimezone(PARIS).date()
            assert activated == YEAR_START
            count = len(expected_dues(schedule, activated, YEAR_END, off.get(redevable.id)))
            key = str(redevable.periodicity)
            expected_by_periodicity[key] = expected_by_periodicity.get(key, 0) + count
        movement_lines = await session.scalar(
            select(func.count())
            .select_from(StatementLine)
            .where(StatementLine.kind == LineKind.MOVEMENT)
        )
        pending_lines = await session.scalar(
            select(StatementLine.id).where(StatementLine.pending.is_(True)).limit(1)
        )
        corrections = (
            await session.scalars(
                select(StatementLine.reason).where(StatementLine.kind == LineKind.CORRECTION)
            )
        ).all()
    assert dict(summary.statements_by_periodicity) == expected_by_periodicity
    per_account = {
        P.JOURNALIERE: 365,
        P.HEBDOMADAIRE: 52,
        P.MENSUELLE: 12,
        P.TRIMESTRIELLE: 4,
        P.SEMESTRIELLE: 2,
        P.ANNUELLE: 1,
    }
    for periodicity, count in per_account.items():
        # Sanity of the expectation itself: a year has these many due dates (the account
        # switched off for a month aside).
        assert expected_by_periodicity[str(periodicity)] >= count
    assert summary.accounts == len(accounts) >= 40
    # Every 04 of the year was checked: 7 digits, never twice on one account (a movement
    # withdrawn by a CSV and reported again got a new number).
    assert summary.entry_numbers == movement_lines > summary.booked_checked
    assert summary.resumed >= 1
    # The scenario really has what it is meant to have.
    assert summary.booked_checked > 5_000
    assert summary.deleted_after_report > 0
    assert summary.changed_after_report > 0
    assert summary.late_postings > 0
    assert summary.pending_settled > 0 and pending_lines is not None
    assert "supprimée" in corrections


async def test_a_long_error_loses_no_late_posting(database: Database, keyring: KeyRing) -> None:
    """The weekly redevable of the year with its connection broken for 9 days: the late
    postings back-dated while it was broken are collected after the repair."""
    start = dt.date(2026, 8, 1)
    clock = ManualClock(paris_night(start - dt.timedelta(days=1)))
    bank = TestBank(clock, seed=7)
    spec = Spec(P.HEBDOMADAIRE, day=4, errors=("wrongpass@2026-09-01..2026-09-09",))
    ids = await build_portfolio(database, clock, keyring, bank, (spec,), first_index=106)
    world = World(database, clock, bank, keyring, ids)
    await world.simulate(start, dt.date(2026, 9, 24), step_minutes=STEP)
    assert [str(problem) for problem in await world.audit()] == []


# -- determinism -----------------------------------------------------------------------------

DETERMINISM = (
    Spec(P.JOURNALIERE, include_pending=True),
    Spec(P.HEBDOMADAIRE, day=1, errors=("websiteUnavailable@2026-02-02..2026-02-04",)),
    Spec(P.MENSUELLE, day=0),
    Spec(P.TRIMESTRIELLE, month=3, day=0),
    Spec(P.SEMESTRIELLE, month=3, day=0),
    Spec(P.ANNUELLE, month=2, day=31),
)


async def _run(database: Database, keyring: KeyRing, last: dt.date) -> Summary:
    world = await make_world(database, keyring, DETERMINISM, YEAR_START, seed=11)
    await world.simulate(YEAR_START, last, step_minutes=STEP)
    assert await world.audit() == []
    return await check_invariants(database, world.bank, keyring, until=last - dt.timedelta(days=1))


@pytest.mark.slow
async def test_same_seed_gives_byte_identical_statements(
    database: Database, other_database: Database, keyring: KeyRing
) -> None:
    last = dt.date(2026, 4, 2)  # covers the end of March (quarter and semester ends)
    first = await _run(database, keyring, last)
    second = await _run(other_database, KeyRing([Fernet.generate_key()]), last)
    assert first.statements > 100 and first.deleted_after_report > 0
    assert any(kind == "csv" for *_key, kind in first.files)
    quarter_end = [key for key in first.files if key[2] == dt.date(2026, 3, 31)]
    assert quarter_end
    digest = {key: hashlib.sha256(content).hexdigest() for key, content in first.files.items()}
    again = {key: hashlib.sha256(content).hexdigest() for key, content in second.files.items()}
    assert digest == again

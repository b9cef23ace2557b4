"""The first statement of an account: (activation - 1 month, first due date], nothing left out.

The manual ("Premiers relevés et date de premières transactions") gives two examples, which
are the specification: monthly, activated 05/09, due 05/09 -> 06/08..05/09; quarterly
[Mois=1][Jour=1], activated 05/09, first due 01/10 -> 06/08..01/10.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from releves_mailer.aggregators.testbank import TestBank
from releves_mailer.clock import PARIS, ManualClock
from releves_mailer.collect.connections import connect_test_bank
from releves_mailer.collect.service import CollectionService
from releves_mailer.db import Database
from releves_mailer.db.models import (
    BankAccount,
    BankTransaction,
    LineKind,
    Periodicity,
    Statement,
    StatementLine,
    StatementState,
    TransactionStatus,
    WindowKind,
)
from releves_mailer.portfolio.periodicity import Schedule
from releves_mailer.signing.secrets import KeyRing
from releves_mailer.statements import build
from releves_mailer.statements.plan import due_dates, first_period_start, month_before
from tests.factories import add_portfolio

from .conftest import World
from .scenario import Spec

P = Periodicity


def _paris(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=PARIS).astimezone(dt.UTC)


async def _activate(world: World, redevable_id: int, at: dt.datetime) -> None:
    """Connect the redevable at ``at``: its first refresh creates (activates) its accounts."""
    world.clock.set(at)
    await connect_test_bank(
        world.database, redevable_id, bank=world.bank, keyring=world.keyring, clock=world.clock
    )
    await CollectionService(
        world.database, world.clock, {world.bank.name: world.bank}, world.keyring
    ).run_due(force_refresh=True, redevable_id=redevable_id)


async def _empty_world(database: Database, keyring: KeyRing, specs: tuple[Spec, ...]) -> World:
    clock = ManualClock(_paris(dt.date(2025, 12, 1), 12))
    _account, ids = await add_portfolio(database, clock.now(), specs)
    return World(database, clock, TestBank(clock, seed=11), keyring, ids)


async def _first_statements(database: Database) -> dict[int, tuple[BankAccount, Statement]]:
    async with database.session() as session:
        found = await session.execute(
            select(BankAccount, Statement)
            .join(Statement, Statement.account_id == BankAccount.id)
            .where(Statement.sequence == 1)
        )
        return {account.id: (account, statement) for account, statement in found}


async def _assert_every_booked_row_reported(database: Database) -> int:
    """Every booked row after (activation - 1 month), up to the last statement's due date,
    is in exactly one standing movement line of its account. Returns how many were checked."""
    checked = 0
    async with database.session() as session:
        accounts = list(await session.scalars(select(BankAccount)))
        for account in accounts:
            statements = list(
                await session.scalars(
                    select(Statement)
                    .where(Statement.account_id == account.id)
                    .where(Statement.state == StatementState.PRODUCED)
                    .order_by(Statement.due_date)
                )
            )
            if not statements:
                continue
            floor = month_before(account.activated_at.astimezone(PARIS).date())
            last_due = statements[-1].due_date
            standing = Counter(
                await session.scalars(
                    select(StatementLine.transaction_id)
                    .where(StatementLine.account_id == account.id)
                    .where(StatementLine.kind == LineKind.MOVEMENT)
                    .where(StatementLine.withdrawn_statement_id.is_(None))
                )
            )
            rows = await session.scalars(
                select(BankTransaction)
                .where(BankTransaction.account_id == account.id)
                .where(BankTransaction.status == TransactionStatus.BOOKED)
                .where(BankTransaction.booking_date > floor)
                .where(BankTransaction.booking_date <= last_due)
            )
            for row in rows:
                assert standing[row.id] == 1, (
                    f"account {account.id}: {row.provider_id} booked {row.booking_date} "
                    f"in {standing[row.id]} statement(s), window from {floor}"
                )
                checked += 1
    return checked


async def test_manual_example_monthly(database: Database, keyring: KeyRing) -> None:
    """Monthly on the 5th, activated 05/09: the first statement covers 06/08..05/09."""
    world = await _empty_world(database, keyring, (Spec(P.MENSUELLE, day=5),))
    await _activate(world, world.redevable_ids[0], _paris(dt.date(2026, 9, 5), 10))
    await world.simulate(dt.date(2026, 9, 6), dt.date(2026, 9, 6))

    firsts = await _first_statements(database)
    assert firsts
    for _account, statement in firsts.values():
        assert (statement.period_start, statement.due_date) == (
            dt.date(2026, 8, 5),
            dt.date(2026, 9, 5),
        )
        assert statement.window is WindowKind.FIRST
        assert statement.state is StatementState.PRODUCED
    assert await _assert_every_booked_row_reported(database) > 0
    assert await world.audit() == []


async def test_manual_example_quarterly(database: Database, keyring: KeyRing) -> None:
    """Quarterly [Mois=1][Jour=1], activated 05/09: the first statement covers 06/08..01/10
    (the old rule, one month before the due date, left 06/08..01/09 out)."""
    world = await _empty_world(database, keyring, (Spec(P.TRIMESTRIELLE, month=1, day=1),))
    await _activate(world, world.redevable_ids[0], _paris(dt.date(2026, 9, 5), 10))
    await world.simulate(dt.date(2026, 9, 6), dt.date(2026, 10, 2))

    firsts = await _first_statements(database)
    assert firsts
    for account, statement in firsts.values():
        assert (statement.period_start, statement.due_date) == (
            dt.date(2026, 8, 5),
            dt.date(2026, 10, 1),
        )
        async with database.session() as session:
            early = await session.scalar(
                select(StatementLine.id)
                .where(StatementLine.statement_id == statement.id)
                .where(StatementLine.booking_date <= dt.date(2026, 9, 1))
                .limit(1)
            )
        assert early is not None, f"account {account.id}: nothing from 06/08..01/09 reported"
    assert await _assert_every_booked_row_reported(database) > 0
    assert await world.audit() == []


#: Every periodicity with day and month variants: end of month (0), the 28th, a yearly 31st
#: clamped to February, weekdays from Sunday (1) to Saturday (7). Two portfolios, so that
#: the daily accounts do not produce a year of statements waiting for a yearly first one.
SHORT = (
    Spec(P.JOURNALIERE),
    Spec(P.JOURNALIERE, include_pending=True),
    *(Spec(P.HEBDOMADAIRE, day=day) for day in range(1, 8)),
    Spec(P.MENSUELLE, day=0),
    Spec(P.MENSUELLE, day=1),
)
LONG = (
    Spec(P.MENSUELLE, day=28),
    Spec(P.MENSUELLE, day=15, include_pending=True),
    Spec(P.TRIMESTRIELLE, month=1, day=1),
    Spec(P.TRIMESTRIELLE, month=2, day=0),
    Spec(P.TRIMESTRIELLE, month=3, day=28),
    Spec(P.SEMESTRIELLE, month=1, day=5),
    Spec(P.SEMESTRIELLE, month=6, day=0),
    Spec(P.SEMESTRIELLE, month=4, day=28),
    Spec(P.ANNUELLE, month=2, day=31),
    Spec(P.ANNUELLE, month=9, day=30),
    Spec(P.ANNUELLE, month=12, day=31),
    Spec(P.ANNUELLE, month=1, day=1),
)


def _schedule(spec: Spec) -> Schedule:
    return Schedule.checked(spec.periodicity, spec.month, spec.day)


@st.composite
def _schedules(draw: st.DrawFn) -> Schedule:
    periodicity = draw(st.sampled_from(list(Periodicity)))
    month_max = {P.TRIMESTRIELLE: 3, P.SEMESTRIELLE: 6, P.ANNUELLE: 12}.get(periodicity)
    if periodicity is P.JOURNALIERE:
        return Schedule.checked(periodicity, None, None)
    if periodicity is P.HEBDOMADAIRE:
        return Schedule.checked(periodicity, None, draw(st.integers(1, 7)))
    month = None if month_max is None else draw(st.integers(1, month_max))
    days = st.integers(1, 31) if periodicity is P.ANNUELLE else st.integers(0, 28)
    return Schedule.checked(periodicity, month, draw(days))


@settings(max_examples=500, deadline=None)
@given(
    schedule=_schedules(),
    activated=st.datetimes(
        min_value=dt.datetime(2024, 1, 1), max_value=dt.datetime(2028, 12, 31, 23, 59)
    ),
)
def test_first_window_is_activation_minus_a_month_to_first_due(
    schedule: Schedule, activated: dt.datetime
) -> None:
    moment = activated.replace(tzinfo=PARIS)
    day = moment.date()
    (first_due, *_rest) = due_dates(
        schedule, after=None, not_before=day, before=day + dt.timedelta(days=400)
    )
    start = first_period_start(moment, first_due)
    # The first due date is the first one on or after the activation...
    assert schedule.is_due(first_due) and first_due >= day
    assert not any(
        schedule.is_due(day + dt.timedelta(days=n)) for n in range((first_due - day).days)
    )
    # ... and the window reaches one month before the activation, whatever the periodicity.
    assert start == month_before(day)
    assert 28 <= (day - start).days <= 31
    assert start < day <= first_due


@pytest.mark.parametrize(("variants", "span"), [(SHORT, 21), (LONG, 120)], ids=["short", "long"])
async def test_first_window_of_every_variant_through_the_builder(
    database: Database, keyring: KeyRing, variants: tuple[Spec, ...], span: int
) -> None:
    """Every variant, activated on scattered days and hours, cut by the real runner: each
    first statement starts one month before its activation and ends on the first due date on
    or after it; every booked row after that start is reported exactly once."""
    world = await _empty_world(database, keyring, variants)
    chooser = random.Random(20260905)
    start = dt.date(2026, 1, 10)
    activations = sorted(
        (
            _paris(start + dt.timedelta(days=chooser.randrange(0, span)), chooser.randrange(7, 23)),
            redevable_id,
            spec,
        )
        for redevable_id, spec in zip(world.redevable_ids, variants, strict=True)
    )
    expected: dict[int, tuple[dt.date, dt.date]] = {}
    for at, redevable_id, spec in activations:
        await _activate(world, redevable_id, at)
        day = at.astimezone(PARIS).date()
        first_due = due_dates(
            _schedule(spec), after=None, not_before=day, before=day + dt.timedelta(days=400)
        )[0]
        expected[redevable_id] = (month_before(day), first_due)
    # One night after the latest first due date: the runner catches every first statement up.
    last_due = max(due for _start, due in expected.values())
    await world.simulate(last_due + dt.timedelta(days=1), last_due + dt.timedelta(days=1))

    firsts = await _first_statements(database)
    assert {account.redevable_id for account, _s in firsts.values()} == set(expected)
    for account, statement in firsts.values():
        assert statement.state is StatementState.PRODUCED
        assert statement.window is WindowKind.FIRST
        assert (statement.period_start, statement.due_date) == expected[account.redevable_id], (
            f"redevable {account.redevable_id}"
        )
    assert await _assert_every_booked_row_reported(database) > 100
    assert await world.audit() == []


async def test_audit_reports_what_a_late_first_window_left_out(
    database: Database, keyring: KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first statement cut with the old rule (one month before the due date) is flagged,
    and so is every booked row it left out between the activation - 1 month and its start."""
    monkeypatch.setattr(build, "first_period_start", lambda _activated, due: month_before(due))
    world = await _empty_world(database, keyring, (Spec(P.TRIMESTRIELLE, month=1, day=1),))
    await _activate(world, world.redevable_ids[0], _paris(dt.date(2026, 9, 5), 10))
    await world.simulate(dt.date(2026, 9, 6), dt.date(2026, 10, 2))

    problems = await world.audit()
    codes = Counter(problem.code for problem in problems)
    assert codes["premiere_fenetre"] >= 1
    assert codes["manquante"] >= 1
    assert all("2026-08-05" in p.message for p in problems if p.code == "premiere_fenetre")

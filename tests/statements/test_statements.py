"""Statements: windows, chains, corrections, files, idempotence, and an audit that can fail."""

from __future__ import annotations

import csv
import datetime as dt
import io

from alembic import command
from sqlalchemy import func, select, text, update
from sqlalchemy.engine import Connection

from releves_mailer import cfonb
from releves_mailer.clock import PARIS
from releves_mailer.collect.service import CollectionService
from releves_mailer.db import Database
from releves_mailer.db.migrate import alembic_config, upgrade
from releves_mailer.db.models import (
    BankAccount,
    BankEvent,
    BankEventKind,
    BankTransaction,
    LineKind,
    Periodicity,
    Redevable,
    SecureLink,
    Statement,
    StatementFile,
    StatementLine,
    StatementState,
    TransactionStatus,
    WindowKind,
)
from releves_mailer.partner.links import LinkKind
from releves_mailer.portfolio.periodicity import Schedule
from releves_mailer.signing.secrets import KeyRing
from releves_mailer.statements.build import CSV_HEADER, CorrectionData, render_csv
from releves_mailer.statements.plan import due_dates, month_before

from .conftest import World, make_world
from .scenario import FIVE, Spec

START = dt.date(2026, 1, 5)


def test_month_before_clamps() -> None:
    assert month_before(dt.date(2016, 9, 5)) == dt.date(2016, 8, 5)  # seed: 06/08 .. 05/09
    assert month_before(dt.date(2026, 3, 31)) == dt.date(2026, 2, 28)
    assert month_before(dt.date(2024, 3, 30)) == dt.date(2024, 2, 29)
    assert month_before(dt.date(2026, 1, 15)) == dt.date(2025, 12, 15)


def test_due_dates_follow_the_schedule() -> None:
    weekly = Schedule.checked(Periodicity.HEBDOMADAIRE, None, 2)  # Mondays
    found = due_dates(
        weekly, after=None, not_before=dt.date(2026, 1, 5), before=dt.date(2026, 1, 26)
    )
    assert found == (dt.date(2026, 1, 5), dt.date(2026, 1, 12), dt.date(2026, 1, 19))
    found = due_dates(
        weekly,
        after=dt.date(2026, 1, 12),
        not_before=dt.date(2026, 1, 1),
        before=dt.date(2026, 1, 20),
    )
    assert found == (dt.date(2026, 1, 19),)
    quarterly = Schedule.checked(Periodicity.TRIMESTRIELLE, 1, 1)
    found = due_dates(
        quarterly, after=None, not_before=dt.date(2016, 9, 5), before=dt.date(2017, 4, 2)
    )
    assert found == (dt.date(2016, 10, 1), dt.date(2017, 1, 1), dt.date(2017, 4, 1))


def test_csv_is_excel_friendly() -> None:
    line = CorrectionData(
        transaction_id=1,
        withdraws_line_id=2,
        provider_id="x.1",
        booking_date=dt.date(2026, 1, 5),
        value_date=None,
        amount=-123456,
        label='CB "CAFE"; PARIS',
        reference="REF1",
        pending=False,
        seen_at=dt.datetime(2026, 1, 7, 23, 30, tzinfo=dt.UTC),
        reason="supprimée",
        origin="n° 3 du 05/01/2026 au 05/01/2026",
    )
    content = render_csv("FR7613026000010000000000123", "EUR", [line])
    assert content.startswith(b"\xef\xbb\xbf")
    text = content.decode("utf-8")[1:]
    assert "\r\n" in text
    rows = list(csv.reader(io.StringIO(text), delimiter=";"))
    assert tuple(rows[0]) == CSV_HEADER
    assert rows[1] == [
        "FR7613026000010000000000123",
        "05/01/2026",
        "05/01/2026",
        'CB "CAFE"; PARIS',
        "-1234,56",
        "EUR",
        "REF1",
        "08/01/2026",  # seen at 00:30 Paris
        "n° 3 du 05/01/2026 au 05/01/2026",
        "supprimée",
    ]


async def _statements(database: Database) -> list[Statement]:
    async with database.session() as session:
        return list(
            (
                await session.scalars(
                    select(Statement).order_by(Statement.account_id, Statement.due_date)
                )
            ).all()
        )


async def test_six_weeks_hold_every_invariant(database: Database, keyring: KeyRing) -> None:
    world = await make_world(database, keyring, FIVE, START)
    report = await world.simulate(START, START + dt.timedelta(days=41))
    assert report.statements > 0 and report.refresh_errors == 0
    assert await world.audit() == []

    statements = await _statements(database)
    assert {s.state for s in statements} == {StatementState.PRODUCED}
    firsts = [s for s in statements if s.sequence == 1]
    # Every account was activated by the first night's refresh (START): first window from
    # one month before it, whatever the first due date.
    assert all(
        s.window is WindowKind.FIRST and s.period_start == month_before(START) for s in firsts
    )
    async with database.session() as session:
        redevables = {r.id: r for r in await session.scalars(select(Redevable))}
        for statement in statements:
            redevable = redevables[statement.redevable_id]
            schedule = Schedule.for_redevable(redevable)
            assert schedule.is_due(statement.due_date)
            content = await session.scalar(
                select(StatementFile.content).where(
                    StatementFile.statement_id == statement.id, StatementFile.kind == "cfonb"
                )
            )
            assert content is not None
            (read,) = cfonb.read(content.decode("ascii"), strict=True)
            assert read.opening_balance == statement.opening_balance
            assert read.closing_balance == statement.closing_balance
            assert read.closing_date == statement.due_date
            assert len(read.movements) == statement.movement_count
        # Daily statements exist for every day, empty ones included (01 + 07).
        daily = [s for s in statements if s.periodicity == "JOURNALIERE"]
        assert any(s.movement_count == 0 for s in daily)
        # Some pending movements were reported for the include_pending redevables only.
        pending_lines = (
            await session.execute(
                select(StatementLine.account_id, Redevable.include_pending)
                .join(BankAccount, BankAccount.id == StatementLine.account_id)
                .join(Redevable, Redevable.id == BankAccount.redevable_id)
                .where(StatementLine.pending.is_(True))
            )
        ).all()
        assert pending_lines and all(include for _account, include in pending_lines)
        # The bank deleted reported transactions: CSV lines exist, with their files.
        corrections = await session.scalar(
            select(func.count())
            .select_from(StatementLine)
            .where(StatementLine.kind == LineKind.CORRECTION)
        )
        assert corrections
        csv_files = await session.scalar(
            select(func.count()).select_from(StatementFile).where(StatementFile.kind == "csv")
        )
        assert csv_files == await session.scalar(
            select(func.count()).select_from(Statement).where(Statement.deleted_count > 0)
        )

    # Idempotent at a given clock time: running again changes nothing.
    again = await CollectionService(
        database, world.clock, {world.bank.name: world.bank}, keyring
    ).run_due()
    assert again.statements_cut == 0
    assert len(await _statements(database)) == len(statements)


async def _small_world(database: Database, keyring: KeyRing) -> World:
    world = await make_world(
        database, keyring, (Spec(Periodicity.JOURNALIERE, include_pending=True),), START
    )
    await world.simulate(START, START + dt.timedelta(days=12))
    assert await world.audit() == []
    return world


async def test_audit_sees_a_broken_chain(database: Database, keyring: KeyRing) -> None:
    world = await _small_world(database, keyring)
    async with database.session() as session:
        target = await session.scalar(
            select(Statement).where(Statement.sequence == 5).order_by(Statement.id).limit(1)
        )
        assert target is not None
        target.opening_balance = (target.opening_balance or 0) + 1
    codes = {problem.code for problem in await world.audit()}
    assert "chaine_soldes" in codes and "cfonb" in codes


async def test_audit_sees_a_lost_and_a_repeated_transaction(
    database: Database, keyring: KeyRing
) -> None:
    world = await _small_world(database, keyring)
    async with database.session() as session:
        line = await session.scalar(
            select(StatementLine)
            .where(StatementLine.kind == LineKind.MOVEMENT)
            .where(StatementLine.withdrawn_statement_id.is_(None))
            .order_by(StatementLine.id)
            .limit(1)
        )
        assert line is not None
        await session.delete(line)
    codes = {problem.code for problem in await world.audit()}
    assert {"manquante", "verite_banque"} <= codes

    async with database.session() as session:
        line = await session.scalar(
            select(StatementLine)
            .where(StatementLine.kind == LineKind.MOVEMENT)
            .where(StatementLine.withdrawn_statement_id.is_(None))
            .order_by(StatementLine.id.desc())
            .limit(1)
        )
        assert line is not None
        copy = StatementLine(
            **{
                column.key: getattr(line, column.key)
                for column in StatementLine.__table__.columns
                # An entry number is never given twice on an account (unique index).
                if column.key not in ("id", "entry_number")
            }
        )
        session.add(copy)
    codes = {problem.code for problem in await world.audit()}
    assert "doublon" in codes


async def test_audit_sees_an_unannounced_deletion(database: Database, keyring: KeyRing) -> None:
    world = await _small_world(database, keyring)
    async with database.session() as session:
        await session.execute(
            update(StatementLine)
            .where(StatementLine.kind == LineKind.CORRECTION)
            .values(kind=LineKind.MOVEMENT, withdraws_line_id=None)
        )
    problems = await world.audit()
    assert problems


async def test_deactivation_resumes_from_the_last_reported_date(
    database: Database, keyring: KeyRing
) -> None:
    from releves_mailer.collect.connections import set_redevable_accounts_active

    world = await make_world(database, keyring, (Spec(Periodicity.JOURNALIERE),), START)
    await world.simulate(START, START + dt.timedelta(days=6))
    off = dt.datetime.combine(START + dt.timedelta(days=6), dt.time(12), tzinfo=PARIS)
    world.clock.set(off)
    await set_redevable_accounts_active(database, world.redevable_ids[0], False, clock=world.clock)
    await world.simulate(START + dt.timedelta(days=7), START + dt.timedelta(days=11))
    world.clock.set(off + dt.timedelta(days=5))
    await set_redevable_accounts_active(database, world.redevable_ids[0], True, clock=world.clock)
    await world.simulate(START + dt.timedelta(days=12), START + dt.timedelta(days=16))
    assert await world.audit() == []
    statements = await _statements(database)
    resumed = [s for s in statements if s.window is WindowKind.RESUMED]
    assert resumed
    for statement in resumed:
        assert statement.period_start == START + dt.timedelta(days=5)
        assert statement.due_date == START + dt.timedelta(days=11)
    # Nothing was produced for the days the account was off.
    account_dates = {(s.account_id, s.due_date) for s in statements}
    for account_id in {s.account_id for s in statements}:
        for offset in range(6, 11):
            assert (account_id, START + dt.timedelta(days=offset)) not in account_dates


async def test_waiting_then_failed_then_caught_up(database: Database, keyring: KeyRing) -> None:
    from releves_mailer.aggregators.testbank import parse_scheduled_error

    world = await make_world(database, keyring, (Spec(Periodicity.JOURNALIERE),), START)
    world.bank.errors = (
        parse_scheduled_error(
            f"websiteUnavailable@{START + dt.timedelta(days=3)}..{START + dt.timedelta(days=5)}"
        ),
    )
    await world.simulate(START, START + dt.timedelta(days=5))
    statements = await _statements(database)
    failed = [s for s in statements if s.state is StatementState.FAILED]
    assert failed and all("erreur" in s.reason for s in failed)
    assert not any(
        s.state is StatementState.PRODUCED and s.due_date >= failed[0].due_date
        for s in statements
        if s.account_id == failed[0].account_id
    )
    await world.simulate(START + dt.timedelta(days=6), START + dt.timedelta(days=8))
    statements = await _statements(database)
    assert {s.state for s in statements} == {StatementState.PRODUCED}
    assert await world.audit() == []


async def test_pending_reported_then_changed_goes_to_the_csv(
    database: Database, keyring: KeyRing
) -> None:
    await _small_world(database, keyring)
    async with database.session() as session:
        changed = (
            await session.execute(
                select(StatementLine, BankTransaction)
                .join(BankTransaction, BankTransaction.id == StatementLine.transaction_id)
                .where(StatementLine.kind == LineKind.MOVEMENT)
                .where(StatementLine.pending.is_(True))
                .where(StatementLine.withdrawn_statement_id.is_not(None))
            )
        ).all()
    assert changed
    for line, row in changed:
        gone = row.status in (TransactionStatus.DELETED, TransactionStatus.REPLACED)
        assert gone or row.amount != line.amount or row.booking_date != line.booking_date


async def test_catch_up_cuts_accounts_at_different_due_dates_together(
    database: Database, keyring: KeyRing
) -> None:
    """After downtime one chunk holds accounts at different due dates, some with pending
    movements: each statement gets its own account's movements and bank balance."""
    specs = (
        Spec(Periodicity.JOURNALIERE, include_pending=True),
        Spec(Periodicity.HEBDOMADAIRE, day=4),
        Spec(Periodicity.JOURNALIERE),
        Spec(Periodicity.MENSUELLE, day=10, include_pending=True),
    )
    world = await make_world(database, keyring, specs, START)
    await world.simulate(START, START + dt.timedelta(days=4))
    await world.simulate(START + dt.timedelta(days=12), START + dt.timedelta(days=14))
    assert await world.audit() == []

    statements = await _statements(database)
    caught_up = [s for s in statements if s.due_date > START + dt.timedelta(days=3)]
    first_round = min(s.created_at for s in caught_up)
    dues = {s.due_date for s in caught_up if s.created_at == first_round}
    assert len(dues) > 1  # the scenario really mixes due dates in one pass
    assert all(not s.balance_mismatch and s.bank_balance is not None for s in statements)


async def _world_with_a_mismatch(database: Database, keyring: KeyRing) -> None:
    """A movement the bank never had makes the computed closing balance differ from the
    bank's in the statements cut after it."""
    world = await make_world(database, keyring, (Spec(Periodicity.JOURNALIERE),), START)
    await world.simulate(START, START + dt.timedelta(days=2))
    async with database.session() as session:
        model = await session.scalar(
            select(BankTransaction)
            .where(BankTransaction.status == TransactionStatus.BOOKED)
            .order_by(BankTransaction.id.desc())
            .limit(1)
        )
        assert model is not None
        columns = BankTransaction.__table__.columns
        values = {column.key: getattr(model, column.key) for column in columns}
        values.update(
            id=None,
            provider_id="unknown-to-the-bank",
            booking_date=START + dt.timedelta(days=3),
            value_date=START + dt.timedelta(days=3),
            amount=1050,
            reported_statement_id=None,
            correction_pending=False,
            correction_statement_id=None,
        )
        session.add(BankTransaction(**values))
    await world.simulate(START + dt.timedelta(days=3), START + dt.timedelta(days=4))


async def test_balance_mismatch_is_recorded_as_its_own_event(
    database: Database, keyring: KeyRing
) -> None:
    """The statement is flagged and the account's history says "balance mismatch", not a
    connection error."""
    await _world_with_a_mismatch(database, keyring)
    statements = await _statements(database)
    flagged = [s for s in statements if s.balance_mismatch]
    assert flagged
    async with database.session() as session:
        events = (
            await session.scalars(
                select(BankEvent).where(BankEvent.error_code == "balance_mismatch")
            )
        ).all()
        assert [event.kind for event in events] == [BankEventKind.BALANCE_MISMATCH] * len(flagged)
        assert not await session.scalar(
            select(func.count())
            .select_from(BankEvent)
            .where(BankEvent.kind == BankEventKind.CONNECTION_ERROR)
        )


def _downgrade(connection: Connection, revision: str) -> None:
    command.downgrade(alembic_config(connection), revision)


#: The columns migration 0011 rewrites.
STORED_ENUMS = (("statement", "state"), ("secure_link", "kind"), ("bank_event", "kind"))


async def _stored_values(database: Database) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    async with database.engine.connect() as connection:
        for table, column in STORED_ENUMS:
            result = await connection.execute(text(f"SELECT DISTINCT {column} FROM {table}"))
            found |= {(table, value) for (value,) in result}
    return found


async def test_migration_0011_renames_the_stored_values_both_ways(
    database: Database, keyring: KeyRing
) -> None:
    """Statement states and link kinds were stored in French, balance mismatches as
    connection errors: the migration renames the rows, and its downgrade restores them."""
    await _world_with_a_mismatch(database, keyring)
    async with database.session() as session:
        redevable_id = await session.scalar(select(Redevable.id).limit(1))
        assert redevable_id is not None
        now = dt.datetime(2026, 1, 10, tzinfo=dt.UTC)
        for kind, token in ((LinkKind.ENTRY, "a"), (LinkKind.UPDATE, "b")):
            session.add(
                SecureLink(
                    redevable_id=redevable_id,
                    kind=kind,
                    token_hash=token * 64,
                    created_by="manual",
                    reason="",
                    recipient="client@example.com",
                    created_at=now,
                    expires_at=now,
                )
            )
    current = await _stored_values(database)
    assert {
        ("statement", "produced"),
        ("secure_link", "entry"),
        ("secure_link", "update"),
        ("bank_event", "balance_mismatch"),
    } <= current

    async with database.engine.begin() as connection:
        await connection.run_sync(_downgrade, "0010")
    old = await _stored_values(database)
    assert {("secure_link", "saisie"), ("secure_link", "maj")} <= old
    assert {value for table, value in old if table == "statement"} == {"succes"}
    assert ("bank_event", "connection_error") in old
    assert ("bank_event", "balance_mismatch") not in old

    await upgrade(database)
    assert await _stored_values(database) == current

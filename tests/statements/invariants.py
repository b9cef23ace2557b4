"""The statement invariants, checked explicitly against the test bank's ground truth.

Independent of :mod:`releves_mailer.statements.audit` (which the tests run as well): the bank's
rows are recomputed here from the connection's token, and every claim is counted.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from sqlalchemy import select

from releves_mailer import cfonb
from releves_mailer.aggregators.testbank import TestBank, TestBankToken
from releves_mailer.aggregators.testbank.generator import DayCache, RowState
from releves_mailer.clock import PARIS
from releves_mailer.db import Database
from releves_mailer.db.models import (
    BankAccount,
    BankConnection,
    LineKind,
    Redevable,
    Statement,
    StatementFile,
    StatementLine,
    StatementState,
    WindowKind,
)
from releves_mailer.portfolio.periodicity import Schedule
from releves_mailer.signing.secrets import KeyRing
from releves_mailer.statements.plan import due_dates, month_before


@dataclass
class Summary:
    """What the check saw (the tests assert on these counts)."""

    accounts: int = 0
    statements: int = 0
    booked_checked: int = 0
    pending_settled: int = 0
    late_postings: int = 0
    deleted_after_report: int = 0
    changed_after_report: int = 0
    resumed: int = 0
    #: 04 records whose entry number was checked (7 digits, never twice on an account).
    entry_numbers: int = 0
    statements_by_periodicity: Counter[str] = field(default_factory=Counter)
    files: dict[tuple[str, str, dt.date, str], bytes] = field(default_factory=dict)


def _local(provider_id: str) -> str:
    return provider_id.rsplit(".", 1)[-1]


def _amount(amount: int) -> str:
    sign = "-" if amount < 0 else ""
    units, cents = divmod(abs(amount), 100)
    return f"{sign}{units},{cents:02d}"


def expected_dues(
    schedule: Schedule,
    activated: dt.date,
    until: dt.date,
    off: tuple[dt.date, dt.date] | None = None,
) -> list[dt.date]:
    """Due dates from the activation to ``until`` (included), minus those while switched off.

    ``off`` = (date of the deactivation, date of the reactivation): the due date of the
    deactivation day and those until the day before the reactivation get no statement.
    """
    dates = list(
        due_dates(schedule, after=None, not_before=activated, before=until + dt.timedelta(1))
    )
    if off is not None:
        dates = [d for d in dates if d < off[0] or d >= off[1]]
    return dates


async def check_invariants(
    database: Database,
    bank: TestBank,
    keyring: KeyRing,
    *,
    until: dt.date,
    off: dict[int, tuple[dt.date, dt.date]] | None = None,
    complete: bool = True,
) -> Summary:
    """Assert every invariant; ``complete``: every due date up to ``until`` has its statement
    (otherwise the statements must be a prefix of them: no gap)."""
    off = off or {}
    summary = Summary()
    cache = DayCache(50_000)
    async with database.session() as session:
        accounts = (
            await session.execute(
                select(BankAccount, Redevable, BankConnection)
                .join(Redevable, Redevable.id == BankAccount.redevable_id)
                .join(BankConnection, BankConnection.id == BankAccount.connection_id)
                .order_by(BankAccount.id)
            )
        ).all()
        for account, redevable, connection in accounts:
            statements = list(
                (
                    await session.scalars(
                        select(Statement)
                        .where(Statement.account_id == account.id)
                        .order_by(Statement.due_date)
                    )
                ).all()
            )
            lines = list(
                (
                    await session.scalars(
                        select(StatementLine).where(StatementLine.account_id == account.id)
                    )
                ).all()
            )
            files = {
                (file.statement_id, file.kind): file.content
                for file in await session.scalars(
                    select(StatementFile).where(
                        StatementFile.statement_id.in_([s.id for s in statements])
                    )
                )
            }
            summary.accounts += 1
            _check_account(
                summary,
                cache,
                bank,
                keyring,
                connection,
                account,
                redevable,
                statements,
                lines,
                files,
                until=until,
                off=off.get(redevable.id),
                complete=complete,
            )
    return summary


def _check_account(
    summary: Summary,
    cache: DayCache,
    bank: TestBank,
    keyring: KeyRing,
    connection: BankConnection,
    account: BankAccount,
    redevable: Redevable,
    statements: list[Statement],
    lines: list[StatementLine],
    files: dict[tuple[int, str], bytes],
    *,
    until: dt.date,
    off: tuple[dt.date, dt.date] | None,
    complete: bool,
) -> None:
    where = f"account {account.id} ({redevable.periodicity} {redevable.month} {redevable.day})"
    schedule = Schedule.for_redevable(redevable)
    done = [s for s in statements if s.state is StatementState.PRODUCED]
    if complete:
        assert len(done) == len(statements), f"{where}: statements not produced"

    # Due dates, periods and windows.
    activated = account.created_at.astimezone(PARIS).date()
    expected = expected_dues(schedule, activated, until, off)
    got = [s.due_date for s in done]
    if complete:
        assert got == expected, f"{where}: due dates {got} != {expected}"
    else:
        assert got == expected[: len(got)], f"{where}: gap in {got}"
    assert [s.sequence for s in statements] == list(range(1, len(statements) + 1)), where
    summary.statements += len(done)
    summary.statements_by_periodicity[str(redevable.periodicity)] += len(done)

    by_statement: dict[int, list[StatementLine]] = defaultdict(list)
    for line in lines:
        by_statement[line.statement_id].append(line)
    previous: Statement | None = None
    numbers_seen: set[str] = set()
    for statement in done:
        mine = by_statement[statement.id]
        movements = sorted(
            (line for line in mine if line.kind is LineKind.MOVEMENT), key=lambda x: x.position
        )
        corrections = [line for line in mine if line.kind is LineKind.CORRECTION]
        assert statement.period_end == statement.due_date
        if previous is None:
            assert statement.window is WindowKind.FIRST, where
            # The manual's first window: (activation - 1 month, first due date].
            assert statement.period_start == month_before(activated), where
        else:
            assert statement.period_start == previous.due_date, f"{where}: gap"
            assert statement.opening_balance == previous.closing_balance, f"{where}: chain"
            resumed = off is not None and previous.due_date < off[0] <= statement.due_date
            expected_window = WindowKind.RESUMED if resumed else WindowKind.NEXT
            assert statement.window is expected_window, f"{where}: {statement.window}"
            summary.resumed += resumed
            late = [line for line in movements if line.booking_date <= statement.period_start]
            summary.late_postings += len(late)
        assert statement.opening_balance is not None and statement.closing_balance is not None
        total = sum(line.amount for line in movements)
        assert statement.closing_balance == statement.opening_balance + total, where
        assert not statement.balance_mismatch, f"{where}: balance gap {statement.balance_gap}"
        (read,) = cfonb.read(files[(statement.id, "cfonb")].decode("ascii"), strict=True)
        assert (read.opening_date, read.closing_date) == (
            statement.period_start,
            statement.due_date,
        )
        assert (read.opening_balance, read.closing_balance) == (
            statement.opening_balance,
            statement.closing_balance,
        )
        assert [m.amount for m in read.movements] == [line.amount for line in movements]
        # Entry numbers: 7 digits, the ones stored on the lines, never twice on the account.
        numbers = [m.entry_number for m in read.movements]
        assert all(len(n) == 7 and n.isdigit() for n in numbers), f"{where}: {numbers}"
        assert numbers == [f"{line.entry_number:07d}" for line in movements], where
        assert numbers_seen.isdisjoint(numbers) and len(set(numbers)) == len(numbers), (
            f"{where}: entry number repeated in {numbers}"
        )
        numbers_seen.update(numbers)
        summary.entry_numbers += len(numbers)
        assert all(line.booking_date <= statement.due_date for line in movements)
        key = (redevable.siren, account.provider_account_id, statement.due_date)
        summary.files[(*key, "cfonb")] = files[(statement.id, "cfonb")]
        csv_content = files.get((statement.id, "csv"))
        assert (csv_content is not None) == bool(corrections), where
        if csv_content is not None:
            summary.files[(*key, "csv")] = csv_content
        previous = statement
    # The account's counter gave 1, 2, 3... one number per movement line, none skipped.
    assert numbers_seen == {f"{n:07d}" for n in range(1, len(numbers_seen) + 1)}, where
    if not done:
        return
    _check_truth(
        summary,
        cache,
        bank,
        keyring,
        connection,
        account,
        redevable,
        done,
        lines,
        files,
        floor=month_before(activated),
    )


def _first_booked(states: tuple[RowState, ...]) -> RowState | None:
    for state in states:
        if not state.coming and not state.deleted:
            return state
    return None


def _check_truth(
    summary: Summary,
    cache: DayCache,
    bank: TestBank,
    keyring: KeyRing,
    connection: BankConnection,
    account: BankAccount,
    redevable: Redevable,
    done: list[Statement],
    lines: list[StatementLine],
    files: dict[tuple[int, str], bytes],
    *,
    floor: dt.date,
) -> None:
    """Every booked row with a booking date after ``floor`` (activation - 1 month) is in
    exactly one standing movement line; older ones booked by the first collection are the
    first opening balance and in none."""
    where = f"account {account.id}"
    first, last = done[0], done[-1]
    assert first.data_as_of is not None and last.data_as_of is not None
    token = TestBankToken.decode(keyring.decrypt(connection.token_encrypted))
    index = int(account.provider_account_id.rsplit(".", 1)[-1])
    profile = bank.plans(token.seed, token.customer)[index].profile
    as_of_first = int(first.data_as_of.timestamp())
    as_of = int(last.data_as_of.timestamp())
    produced_ids = {s.id for s in done}
    standing: dict[str, list[StatementLine]] = defaultdict(list)
    reported: dict[str, list[StatementLine]] = defaultdict(list)
    withdrawals: dict[str, list[StatementLine]] = defaultdict(list)
    for line in lines:
        assert line.statement_id in produced_ids
        local = _local(line.provider_id)
        if line.kind is LineKind.MOVEMENT:
            reported[local].append(line)
            if line.withdrawn_statement_id is None:
                standing[local].append(line)
        else:
            withdrawals[local].append(line)
    due_of = {s.id: s.due_date for s in done}

    day = max(token.epoch, floor - dt.timedelta(days=70))
    end = last.data_as_of.astimezone(PARIS).date()
    booked_expected: set[str] = set()
    while day <= end:
        for row in cache.get(profile, day):
            state = row.state_at(as_of)
            if state is None:
                continue
            local = row.local_id
            if state.deleted:
                if reported.get(local):
                    # Deleted after having been reported: withdrawn by exactly one CSV line,
                    # of a statement after the one that reported it, and nothing standing.
                    assert not standing.get(local), f"{where}: {local} deleted, still standing"
                    found = withdrawals.get(local, [])
                    assert len(found) == len(reported[local]), f"{where}: {local} CSV lines"
                    last_line = max(found, key=lambda line: due_of[line.statement_id])
                    content = files[(last_line.statement_id, "csv")].decode("utf-8")
                    records = list(
                        csv.reader(io.StringIO(content.removeprefix("\ufeff")), delimiter=";")
                    )
                    wanted = [
                        r
                        for r in records[1:]
                        if r[4] == _amount(last_line.amount)
                        and r[1] == last_line.booking_date.strftime("%d/%m/%Y")
                        and r[3] == last_line.label
                        and r[9] == "supprimée"
                    ]
                    assert len(wanted) >= 1, f"{where}: {local} not in its CSV"
                    summary.deleted_after_report += 1
                continue
            if state.coming:
                continue
            if state.booking_date > last.due_date:
                continue
            booked = _first_booked(row.states)
            opening = (
                booked is not None and booked.at <= as_of_first and state.booking_date <= floor
            )
            if opening:
                assert not reported.get(local), f"{where}: opening row {local} reported"
                continue
            booked_expected.add(local)
            mine = standing.get(local, [])
            assert len(mine) == 1, f"{where}: booked row {local} in {len(mine)} statements"
            line = mine[0]
            if line.pending:
                assert line.amount == state.amount, f"{where}: {local} settled otherwise"
                summary.pending_settled += 1
            else:
                assert (line.amount, line.booking_date) == (state.amount, state.booking_date), (
                    f"{where}: {local} reported otherwise"
                )
            summary.booked_checked += 1
            earlier = len(reported[local]) - 1
            summary.changed_after_report += earlier
            assert len(withdrawals.get(local, [])) == earlier, f"{where}: {local} withdrawals"
        day += dt.timedelta(days=1)
    # Nothing standing that the bank does not show booked (pending ones aside).
    for local, mine in standing.items():
        if local in booked_expected:
            continue
        assert redevable.include_pending and all(line.pending for line in mine), (
            f"{where}: {local} reported without being booked"
        )

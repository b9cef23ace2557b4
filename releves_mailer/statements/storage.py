"""Statement storage: the due accounts, what a cut reads (in a few queries) and writes.

Reads lock the connections first (a cut never interleaves with a sync); writes put the
statement rows, their lines and files, the transactions' reporting marks and the mismatch
events in the caller's transaction, in bulk.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Date, Select, Table, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from releves_mailer.db import Database
from releves_mailer.db.models.collect import (
    BankAccount,
    BankConnection,
    BankEvent,
    BankEventKind,
    BankTransaction,
    TransactionStatus,
)
from releves_mailer.db.models.portfolio import Redevable
from releves_mailer.db.models.statements import (
    LineKind,
    Statement,
    StatementFile,
    StatementLine,
    StatementState,
    WindowKind,
)
from releves_mailer.statements.build import (
    Built,
    Facts,
    MovementRow,
    Target,
    balance_check,
    dmy,
    first_entry_number,
    floors,
    format_amount,
)
from releves_mailer.statements.plan import StatementTiming, checked_schedule, due_dates, paris_date

__all__ = [
    "CutOutcome",
    "CutReport",
    "CutResult",
    "DueAccount",
    "load_facts",
    "load_targets",
    "lock_connections",
    "plan_due_accounts",
    "upsert_row",
    "write_statements",
]

log = logging.getLogger(__name__)


MISMATCH_ERROR_CODE = "balance_mismatch"


#: Every state but ``produced``, as an ``IN`` list: the index on (state, account, due date)
#: serves it, where ``state != 'produced'`` reads every statement of the account.
NOT_PRODUCED = tuple(state for state in StatementState if state is not StatementState.PRODUCED)


# -- planning --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DueAccount:
    """An account with statements to cut (or to keep waiting), in due date order."""

    account_id: int
    redevable_id: int
    dates: tuple[dt.date, ...]
    fresh_until: dt.date | None


async def plan_due_accounts(
    database: Database,
    *,
    now: dt.datetime,
    timing: StatementTiming,
    redevable_id: int | None = None,
) -> list[DueAccount]:
    """Every active account whose due dates before today (Paris) are not all cut.

    One query for the whole portfolio. Accounts without fresh data whose night is not over
    are left out (nothing to do yet). Deactivated accounts or redevables, and accounts the
    provider no longer lists, get no statement.
    """
    today = paris_date(now)
    last_due = (
        select(func.max(Statement.due_date))
        .where(Statement.account_id == BankAccount.id)
        .scalar_subquery()
    )
    first_open = (
        select(func.min(Statement.due_date))
        .where(Statement.state.in_(NOT_PRODUCED))
        .where(Statement.account_id == BankAccount.id)
        .scalar_subquery()
    )
    query = (
        select(
            BankAccount.id,
            BankAccount.redevable_id,
            BankAccount.activated_at,
            BankAccount.last_collected_at,
            Redevable.periodicity,
            Redevable.month,
            Redevable.day,
            last_due,
            first_open,
        )
        .join(Redevable, Redevable.id == BankAccount.redevable_id)
        .where(BankAccount.active.is_(True))
        .where(BankAccount.gone_at.is_(None))
        .where(Redevable.active.is_(True))
        .order_by(BankAccount.id)
    )
    if redevable_id is not None:
        query = query.where(Redevable.id == redevable_id)
    async with database.session() as session:
        rows = (await session.execute(query)).all()
        open_rows: dict[int, list[dt.date]] = {}
        if any(row[8] is not None for row in rows):
            pending = await session.execute(
                select(Statement.account_id, Statement.due_date)
                .where(Statement.state.in_(NOT_PRODUCED))
                .order_by(Statement.account_id, Statement.due_date)
            )
            for account_id, due in pending:
                open_rows.setdefault(account_id, []).append(due)
    found: list[DueAccount] = []
    for (
        account_id,
        owner_id,
        activated_at,
        collected_at,
        periodicity,
        month,
        day,
        last,
        _first_open,
    ) in rows:
        try:
            schedule = checked_schedule(periodicity, month, day)
        except Exception:  # a broken schedule must not stop the others
            log.warning("account %s: invalid schedule, no statement", account_id)
            continue
        dates = list(open_rows.get(account_id, ()))
        dates.extend(
            due_dates(schedule, after=last, not_before=paris_date(activated_at), before=today)
        )
        if not dates:
            continue
        fresh_until = None if collected_at is None else paris_date(collected_at) - dt.timedelta(1)
        first = dates[0]
        if (fresh_until is None or fresh_until < first) and now < timing.deadline(first):
            continue
        found.append(DueAccount(account_id, owner_id, tuple(dates), fresh_until))
    return found


# -- results ---------------------------------------------------------------------------------


class CutOutcome:
    """What :func:`releves_mailer.statements.cut.cut_statement` did."""

    CUT = "cut"  # a statement was produced now
    ALREADY = "already"  # it existed (another process or an earlier run)
    WAITING = "waiting"  # no fresh data yet: nothing written, or a waiting row kept
    FAILED = "failed"  # the file could not be built: ``failed`` row
    SKIPPED = "skipped"  # the account or the redevable is no longer active


@dataclass(slots=True)
class CutResult:
    account_id: int
    due_date: dt.date
    outcome: str
    statement_id: int | None = None
    movements: int = 0
    corrections: int = 0
    mismatch: bool = False
    reason: str = ""


@dataclass(slots=True)
class CutReport:
    """Totals of one :func:`releves_mailer.statements.cut.cut_due_statements` pass."""

    results: list[CutResult] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(1 for result in self.results if result.outcome == outcome)


# -- reading ---------------------------------------------------------------------------------


_MOVEMENT_COLUMNS = tuple(getattr(BankTransaction, name) for name in MovementRow._fields)


async def lock_connections(
    session: AsyncSession, database: Database, connection_ids: Sequence[int]
) -> None:
    """The refresh takes the same locks first: a cut never interleaves with a sync."""
    if not connection_ids:
        return
    if database.is_sqlite:
        # Any write takes SQLite's database lock; writing first avoids upgrading a read
        # snapshot later (which fails at once instead of waiting for busy_timeout).
        await session.execute(
            update(BankConnection)
            .where(BankConnection.id.in_(connection_ids))
            .values(updated_at=BankConnection.updated_at)
        )
    else:
        await session.execute(
            select(BankConnection.id)
            .where(BankConnection.id.in_(connection_ids))
            .order_by(BankConnection.id)
            .with_for_update()
        )


async def load_targets(
    session: AsyncSession, database: Database, wanted: dict[int, dt.date]
) -> dict[int, Target]:
    """Lock the connections, read the accounts, redevables and the statements that matter."""
    ids = sorted(wanted)
    connection_ids = sorted(
        set(await session.scalars(select(BankAccount.connection_id).where(BankAccount.id.in_(ids))))
    )
    await lock_connections(session, database, connection_ids)
    # Per account: every statement not produced, the first and the last produced ones, and
    # the one at the wanted due date (the numbering's maximum is among them: nothing is
    # produced after a statement that is not).
    first_done, last_done = (
        select(Statement.id)
        .where(Statement.state == StatementState.PRODUCED)
        .where(Statement.account_id == BankAccount.id)
        .order_by(order)
        .limit(1)
        .scalar_subquery()
        for order in (Statement.due_date, Statement.due_date.desc())
    )
    targets: dict[int, Target] = {}
    produced: set[int] = set()
    for account, redevable, first_id, last_id in await session.execute(
        select(BankAccount, Redevable, first_done, last_done)
        .join(Redevable, Redevable.id == BankAccount.redevable_id)
        .where(BankAccount.id.in_(ids))
        .execution_options(populate_existing=True)
    ):
        targets[account.id] = Target(account, redevable, wanted[account.id])
        produced.update(sid for sid in (first_id, last_id) if sid is not None)
    if not targets:
        return targets
    # One query of a fixed shape (a query with a term per account costs more to build than
    # to run); the rows at another account's due date are dropped below.
    accounts = list(targets)
    loaded = await session.scalars(
        select(Statement)
        .where(
            or_(
                Statement.id.in_(sorted(produced)),
                and_(Statement.state.in_(NOT_PRODUCED), Statement.account_id.in_(accounts)),
                and_(
                    Statement.account_id.in_(accounts),
                    Statement.due_date.in_(sorted({target.due for target in targets.values()})),
                ),
            )
        )
        .execution_options(populate_existing=True)
    )
    statements = [
        statement
        for statement in loaded
        if statement.id in produced
        or statement.state is not StatementState.PRODUCED
        or statement.due_date == targets[statement.account_id].due
    ]
    last: dict[int, Statement] = {}
    for statement in statements:
        target = targets[statement.account_id]
        target.max_sequence = max(target.max_sequence, statement.sequence)
        if statement.due_date == target.due:
            target.existing = statement
        if statement.state is StatementState.PRODUCED:
            if target.first is None or statement.due_date < target.first.due_date:
                target.first = statement
            if (
                statement.account_id not in last
                or statement.due_date > last[statement.account_id].due_date
            ):
                last[statement.account_id] = statement
        elif statement.due_date < target.due:
            target.earlier_open = True
    for account_id, statement in last.items():
        target = targets[account_id]
        if statement.due_date < target.due:
            target.previous = statement
        elif target.existing is None or target.existing.state is not StatementState.PRODUCED:
            # A statement produced after this due date while this one is not: never happens
            # (dates are cut in order); refuse rather than guess.
            raise RuntimeError(
                f"account {account_id}: a statement after {target.due} exists already"
            )
    return targets


def _padded(targets: list[Target]) -> list[Target]:
    """``targets`` repeated at the end up to a power of two (a term repeated in an OR changes
    nothing): the queries below then come in a dozen shapes, not in every combination of
    chunk sizes, and SQLAlchemy's caches of statements and compiled forms stay small (they
    grew by some 40 MB over a 90-night simulation of 2,000 accounts)."""
    if not targets:
        return targets
    size = 1 << (len(targets) - 1).bit_length()
    return targets + [targets[-1]] * (size - len(targets))


@functools.lru_cache(maxsize=64)
def _movements_query(booked: int, pending: int) -> Select[Any]:
    """The rows reportable by ``booked`` statements, ``pending`` of them with pending rows.

    One term per (account, status), each a range of the ``to_report`` index: unreported rows
    of other statuses (deleted, replaced) are never read. ``reported_statement_id IS NULL``
    is in every term: outside, SQLite would read every unreported row of the table. Built
    once per shape with named parameters: building it per chunk cost more than running it.
    """
    column = BankTransaction
    operation_date = func.coalesce(column.real_date, column.booking_date)
    terms = [
        and_(
            column.account_id == bindparam(f"b{index}_account"),
            column.status == TransactionStatus.BOOKED,
            column.reported_statement_id.is_(None),
            column.booking_date <= bindparam(f"b{index}_due"),
            or_(
                column.booking_date > bindparam(f"b{index}_floor_date"),
                column.booked_at > bindparam(f"b{index}_floor_time"),
            ),
        )
        for index in range(booked)
    ]
    terms.extend(
        and_(
            column.account_id == bindparam(f"p{index}_account"),
            column.status == TransactionStatus.PENDING,
            column.reported_statement_id.is_(None),
            operation_date <= bindparam(f"p{index}_due", type_=Date),
            operation_date > bindparam(f"p{index}_floor_date", type_=Date),
        )
        for index in range(pending)
    )
    return select(*_MOVEMENT_COLUMNS).where(or_(*terms))


@functools.lru_cache(maxsize=16)
def _after_due_query(accounts: int) -> Select[int, int]:
    """Per account, the sum of the booked movements dated after its D (index ranges)."""
    column = BankTransaction
    terms = (
        and_(
            column.account_id == bindparam(f"a{index}_account"),
            column.booking_date > bindparam(f"a{index}_due"),
        )
        for index in range(accounts)
    )
    return (
        select(column.account_id, func.sum(column.amount))
        .where(column.status == TransactionStatus.BOOKED)
        .where(or_(*terms))
        .group_by(column.account_id)
    )


async def load_facts(session: AsyncSession, targets: Sequence[Target]) -> Facts:
    """Rows to report, corrections to make and balances, for every target at once."""
    facts = Facts()
    ids = [target.account.id for target in targets]
    for row in await session.scalars(
        select(BankTransaction)
        .where(BankTransaction.account_id.in_(ids))
        .where(BankTransaction.correction_pending.is_(True))
    ):
        facts.flagged.setdefault(row.account_id, []).append(row)
    for line, row in await session.execute(
        select(StatementLine, BankTransaction)
        .join(BankTransaction, BankTransaction.id == StatementLine.transaction_id)
        .where(StatementLine.account_id.in_(ids))
        .where(StatementLine.pending_open.is_(True))
    ):
        facts.open_pending.setdefault(line.account_id, []).append((line, row))
    pending_ids = {row.id for pairs in facts.open_pending.values() for _line, row in pairs}
    missing = [
        row.id for rows in facts.flagged.values() for row in rows if row.id not in pending_ids
    ]
    if missing:
        for line in await session.scalars(
            select(StatementLine)
            .where(StatementLine.transaction_id.in_(missing))
            .where(StatementLine.kind == LineKind.MOVEMENT)
            .where(StatementLine.withdrawn_statement_id.is_(None))
        ):
            facts.open_lines[line.transaction_id] = line
    origin_ids = {line.statement_id for line in facts.open_lines.values()}
    origin_ids.update(
        line.statement_id for pairs in facts.open_pending.values() for line, _row in pairs
    )
    if origin_ids:
        for statement in await session.scalars(
            select(Statement).where(Statement.id.in_(sorted(origin_ids)))
        ):
            facts.origins[statement.id] = statement

    # Movements: everything reportable up to D (see ``is_reportable``), per account.
    params: dict[str, Any] = {}
    booked = _padded(list(targets))
    pending = _padded([target for target in targets if target.redevable.include_pending])
    for prefix, chosen in (("b", booked), ("p", pending)):
        for index, target in enumerate(chosen):
            floor_date, floor_time = floors(target)
            params[f"{prefix}{index}_account"] = target.account.id
            params[f"{prefix}{index}_due"] = target.due
            params[f"{prefix}{index}_floor_date"] = floor_date
            params[f"{prefix}{index}_floor_time"] = floor_time
    for values in await session.execute(_movements_query(len(booked), len(pending)), params):
        movement = MovementRow(*values)
        facts.rows.setdefault(movement.account_id, []).append(movement)

    # The booked movements dated after D (the bank's balance at D).
    params = {}
    padded = _padded(list(targets))
    for index, target in enumerate(padded):
        params[f"a{index}_account"] = target.account.id
        params[f"a{index}_due"] = target.due
    after = await session.execute(_after_due_query(len(padded)), params)
    facts.after_due = {account_id: int(total or 0) for account_id, total in after}
    return facts


# -- writing ---------------------------------------------------------------------------------


def _row_values(
    account: BankAccount, redevable: Redevable, due: dt.date, sequence: int, now: dt.datetime
) -> dict[str, Any]:
    """The columns of a new statement row, before it is cut (``waiting``)."""
    return {
        "account_id": account.id,
        "redevable_id": account.redevable_id,
        "sequence": sequence,
        "due_date": due,
        "period_start": due,
        "period_end": due,
        "window": WindowKind.NEXT,
        "periodicity": str(redevable.periodicity),
        "created_at": now,
        "updated_at": now,
        "state": StatementState.WAITING,
        "reason": "",
        "iban": account.iban,
        "currency": account.currency or "EUR",
        "movement_count": 0,
        "deleted_count": 0,
        "withdrawn_total": 0,
        "balance_mismatch": False,
    }


async def upsert_row(
    session: AsyncSession,
    account: BankAccount,
    existing: Statement | None,
    due: dt.date,
    now: dt.datetime,
    redevable: Redevable,
) -> Statement:
    if existing is not None:
        return existing
    sequence = await session.scalar(
        select(func.coalesce(func.max(Statement.sequence), 0)).where(
            Statement.account_id == account.id
        )
    )
    statement = Statement(**_row_values(account, redevable, due, int(sequence or 0) + 1, now))
    session.add(statement)
    await session.flush()
    return statement


def _table(model: type[Any]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


#: Core tables of the bulk writes of a cut.
_STATEMENTS = _table(Statement)
_LINES = _table(StatementLine)
_FILES = _table(StatementFile)
_TRANSACTIONS = _table(BankTransaction)


def _cut_values(item: Built, now: dt.datetime) -> dict[str, Any]:
    """The columns a cut sets on its statement row (a new one, or one completed in place)."""
    cfonb_bytes, csv_bytes = item.cfonb_bytes, item.csv_bytes
    bank_balance, closing = item.bank_balance, item.closing
    explained, mismatch = balance_check(item)
    return {
        "period_start": item.period_start,
        "period_end": item.target.due,
        "window": item.window,
        "state": StatementState.PRODUCED,
        "reason": "",
        "updated_at": now,
        "data_as_of": item.collected,
        "iban": item.iban,
        "currency": item.currency,
        "movement_count": len(item.lines),
        "deleted_count": len(item.corrections),
        "opening_balance": item.opening,
        "closing_balance": closing,
        "movements_total": item.movements_total,
        "withdrawn_total": item.withdrawn_total,
        "cfonb_sha256": hashlib.sha256(cfonb_bytes).hexdigest(),
        "cfonb_size": len(cfonb_bytes),
        "csv_sha256": None if csv_bytes is None else hashlib.sha256(csv_bytes).hexdigest(),
        "csv_size": None if csv_bytes is None else len(csv_bytes),
        "bank_balance": bank_balance,
        "balance_gap": None if bank_balance is None else closing - bank_balance,
        "explained_gap": explained,
        "balance_mismatch": mismatch,
        "last_entry_number": first_entry_number(item.target) + len(item.lines) - 1,
    }


async def _write_rows(session: AsyncSession, built: Sequence[Built], now: dt.datetime) -> list[int]:
    """Insert or complete the statement rows; their ids, in the order of ``built``."""
    ids: dict[int, int] = {}
    new: list[dict[str, Any]] = []
    completed: list[dict[str, Any]] = []
    for item in built:
        target, values = item.target, _cut_values(item, now)
        if target.existing is None:
            target.max_sequence += 1
            start = _row_values(
                target.account, target.redevable, target.due, target.max_sequence, now
            )
            new.append(start | values)
        else:
            ids[target.account.id] = target.existing.id
            completed.append({"id": target.existing.id} | values)
    if new:
        # One multi-row INSERT; a chunk has one statement per account, so the returned rows
        # are matched by account.
        inserted = await session.execute(
            insert(_STATEMENTS).returning(_STATEMENTS.c.account_id, _STATEMENTS.c.id), new
        )
        ids.update((account_id, sid) for account_id, sid in inserted)
    if completed:
        await session.execute(update(Statement), completed)
    return [ids[item.target.account.id] for item in built]


def _mismatch_event(item: Built, now: dt.datetime) -> BankEvent:
    account, due, currency = item.target.account, item.target.due, item.currency
    bank_balance, closing = item.bank_balance, item.closing
    assert bank_balance is not None
    explained, _mismatch = balance_check(item)
    unexplained = closing - bank_balance - explained
    return BankEvent(
        at=now,
        kind=BankEventKind.BALANCE_MISMATCH,
        connection_id=account.connection_id,
        account_id=account.id,
        old_value=str(bank_balance),
        new_value=str(closing),
        error_code=MISMATCH_ERROR_CODE,
        message=(
            f"Relevé du {dmy(due)} : écart de solde inexpliqué de "
            f"{format_amount(unexplained, currency)} {currency} entre le solde "
            f"calculé ({format_amount(closing, currency)}) et le solde de la "
            f"banque ({format_amount(bank_balance, currency)})"
        ),
    )


async def write_statements(
    session: AsyncSession, built: Sequence[Built], now: dt.datetime
) -> list[CutResult]:
    """The statement rows, their lines and files, the transactions' marks: one transaction.

    Rows are written in bulk (a few statements per chunk, whatever its size); the few loaded
    objects the corrections changed are written by the session.
    """
    # The corrections unmarked the rows they withdraw; that must reach the database before
    # the marks below, which report some of them again.
    await session.flush()
    statement_ids = await _write_rows(session, built, now)
    line_rows: list[dict[str, Any]] = []
    marks: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    results: list[CutResult] = []
    for item, sid in zip(built, statement_ids, strict=True):
        account = item.target.account
        account_id, due = account.id, item.target.due
        first_entry = first_entry_number(item.target)
        for position, line in enumerate(item.lines, 1):
            line_rows.append(
                {
                    "statement_id": sid,
                    "account_id": account_id,
                    "transaction_id": line.transaction_id,
                    "kind": LineKind.MOVEMENT,
                    "position": position,
                    "entry_number": first_entry + position - 1,
                    "provider_id": line.provider_id,
                    "booking_date": line.booking_date,
                    "value_date": line.value_date,
                    "amount": line.amount,
                    "label": line.label,
                    "reference": line.reference,
                    "pending": line.pending,
                    "pending_open": line.pending,
                    "withdrawn_statement_id": None,
                    "withdraws_line_id": None,
                    "reason": "",
                    "seen_at": None,
                }
            )
            marks.append(
                {
                    "b_id": line.transaction_id,
                    "b_statement": sid,
                    "b_amount": line.amount,
                    "b_booking_date": line.booking_date,
                }
            )
        for position, correction in enumerate(item.corrections, 1):
            line_rows.append(
                {
                    "statement_id": sid,
                    "account_id": account_id,
                    "transaction_id": correction.transaction_id,
                    "kind": LineKind.CORRECTION,
                    "position": position,
                    "entry_number": None,
                    "provider_id": correction.provider_id,
                    "booking_date": correction.booking_date,
                    "value_date": correction.value_date,
                    "amount": correction.amount,
                    "label": correction.label,
                    "reference": correction.reference,
                    "pending": correction.pending,
                    "pending_open": False,
                    "withdrawn_statement_id": None,
                    "withdraws_line_id": correction.withdraws_line_id,
                    "reason": correction.reason,
                    "seen_at": correction.seen_at,
                }
            )
            row, withdrawn_line = item.correction_rows[correction.withdraws_line_id]
            withdrawn_line.withdrawn_statement_id = sid
            row.correction_statement_id = sid
        files.append({"statement_id": sid, "kind": "cfonb", "content": item.cfonb_bytes})
        if item.csv_bytes is not None:
            files.append({"statement_id": sid, "kind": "csv", "content": item.csv_bytes})
        account.last_reported_date = due
        _explained, mismatch = balance_check(item)
        if mismatch:
            session.add(_mismatch_event(item, now))
        results.append(
            CutResult(
                account_id,
                due,
                CutOutcome.CUT,
                sid,
                movements=len(item.lines),
                corrections=len(item.corrections),
                mismatch=mismatch,
            )
        )
    # Core statements with one parameter set per row (executemany): the ORM's bulk insert
    # would split the lines into runs of the same NULL columns.
    if line_rows:
        await session.execute(insert(_LINES), line_rows)
        await session.execute(
            update(_TRANSACTIONS)
            .where(_TRANSACTIONS.c.id == bindparam("b_id"))
            .values(
                reported_statement_id=bindparam("b_statement"),
                reported_at=now,
                reported_amount=bindparam("b_amount"),
                reported_booking_date=bindparam("b_booking_date"),
            ),
            marks,
        )
    await session.execute(insert(_FILES), files)
    return results

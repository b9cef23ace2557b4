"""Statement builder: plans the due statements of each bank account and cuts each one exactly once.

The rules (``docs/statements.md`` has the long version):

- The statement due on D covers the period (period_start, D]: period_start is the previous
  statement's due date (the chain), or the account's activation - 1 month for its first
  statement (the manual: activated 05/09, first quarterly due 01/10 -> 06/08..01/10). It
  is cut in the night after D, once the account has been collected after the end of D (Paris
  time): the data must be "as of" a moment after D.
- It reports every transaction of the account not yet reported, booked (or pending when the
  redevable has ``include_pending``), with booking date <= D, except the *opening set*: rows
  already booked at the first statement's collection with booking date <= the first period
  start, which make up the first opening balance. Late postings land in the next statement
  with their true dates (CFONB allows a booking date before the 01's date).
- Corrections: a reported transaction the bank deleted, replaced or changed (amount, dates,
  label) since it was reported goes to the deleted-transactions CSV of the next statement,
  which *withdraws* the reported line; a changed transaction that is still reportable is
  reported again in the same statement with its new values. A transaction reported while
  pending that gets booked unchanged is simply settled (no CSV line).
- Balances: the first opening balance is the bank's balance at D (the balance the bank reported
  at the collection, minus the booked movements dated after D) minus the booked movements of
  the statement; afterwards opening = previous closing; closing = opening + movements. The
  closing balance is compared with the bank's balance at D; the gap explained by the files
  (amounts withdrawn by CSVs so far, reported pending movements) is subtracted, and what
  remains is a mismatch: recorded on the statement and as a bank event, never hidden.
- One database transaction per statement: the statement row, its lines, its files (CFONB and
  CSV bytes, a pure function of the statement's data), the transactions' reporting marks and
  the account's ``last_reported_date``. A crash leaves nothing or everything; the unique
  (account, due date) constraint makes a second cut impossible.
- Entry numbers (04 positions 82-88): a counter per account, given to the movement lines in
  the statement's order when it is cut and stored on the lines in the same transaction; the
  next statement goes on from the previous one's last number, so a retry gives the same
  numbers and no number comes twice on an account. A movement withdrawn by a CSV and
  reported again is a new line with a new number.
- When the night is over and the account has no fresh data, a row is kept ``en_cours``
  (no failure known: the collection is late) or ``echec`` (the connection failed, reason in
  French); it is completed in place as soon as fresh data arrives, in due date order.
"""

from __future__ import annotations

import asyncio
import calendar
import csv
import datetime as dt
import functools
import hashlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import Date, Select, Table, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from releves_mailer import cfonb
from releves_mailer.clock import PARIS, Clock
from releves_mailer.collect.errors import describe_error
from releves_mailer.db import Database
from releves_mailer.db.models.collect import (
    BankAccount,
    BankConnection,
    BankEvent,
    BankEventKind,
    BankTransaction,
    ConnectionState,
    TransactionStatus,
)
from releves_mailer.db.models.portfolio import Periodicity, Redevable
from releves_mailer.db.models.statements import (
    LineKind,
    Statement,
    StatementFile,
    StatementLine,
    StatementState,
    WindowKind,
)
from releves_mailer.portfolio.periodicity import Schedule

__all__ = [
    "CSV_HEADER",
    "CutOutcome",
    "CutResult",
    "DueAccount",
    "StatementTiming",
    "cut_due_statements",
    "cut_statement",
    "due_dates",
    "first_period_start",
    "is_reportable",
    "month_before",
    "plan_due_accounts",
    "render_cfonb",
    "render_csv",
]

log = logging.getLogger(__name__)

#: Above this many movements the CFONB file is rendered in a worker thread.
THREAD_THRESHOLD = 500

#: The bank event kind of a balance mismatch: a dedicated kind when the enum has one.
MISMATCH_EVENT_KIND: BankEventKind = getattr(
    BankEventKind, "BALANCE_MISMATCH", BankEventKind.CONNECTION_ERROR
)
MISMATCH_ERROR_CODE = "balance_mismatch"

CSV_HEADER = (
    "IBAN",
    "Date de comptabilisation",
    "Date de valeur",
    "Libellé",
    "Montant",
    "Devise",
    "Référence",
    "Date de suppression constatée",
    "Relevé d'origine",
    "Motif",
)

_CARD_TYPES = frozenset({"card", "deferred_card"})

#: Every state but ``succes``, as an ``IN`` list: the index on (state, account, due date)
#: serves it, where ``state != 'succes'`` reads every statement of the account.
NOT_PRODUCED = tuple(state for state in StatementState if state is not StatementState.SUCCES)


# -- dates -----------------------------------------------------------------------------------


def month_before(day: dt.date) -> dt.date:
    """The same day one month earlier, clamped to the month's length (31/03 -> 28/02)."""
    year, month = (day.year, day.month - 1) if day.month > 1 else (day.year - 1, 12)
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def paris_date(moment: dt.datetime) -> dt.date:
    return moment.astimezone(PARIS).date()


def first_period_start(activated_at: dt.datetime, due: dt.date) -> dt.date:
    """Where the first statement of an account starts: one month before its activation.

    The manual ("Premiers relevés"): monthly, activated 05/09, due 05/09 -> 06/08..05/09;
    quarterly [Mois=1][Jour=1], activated 05/09, first due 01/10 -> 06/08..01/10. Everything
    booked after that start is in exactly one statement, whatever the periodicity. A due
    date before the activation (never planned, but a reactivation may race a cut) still
    gets a month.
    """
    return month_before(min(paris_date(activated_at), due))


def paris_midnight(day: dt.date) -> dt.datetime:
    """The UTC instant at which ``day`` starts in Paris."""
    return dt.datetime.combine(day, dt.time(), tzinfo=PARIS).astimezone(dt.UTC)


@dataclass(frozen=True, slots=True)
class StatementTiming:
    """When the night after a due date ends (from ``[collection]``)."""

    window_end: dt.time = dt.time(6, 0)

    def deadline(self, due: dt.date) -> dt.datetime:
        """After this instant a statement still without fresh data is reported as late."""
        moment = dt.datetime.combine(due + dt.timedelta(days=1), self.window_end, tzinfo=PARIS)
        return moment.astimezone(dt.UTC)


@functools.lru_cache(maxsize=65_536)
def due_dates(
    schedule: Schedule, *, after: dt.date | None, not_before: dt.date, before: dt.date
) -> tuple[dt.date, ...]:
    """Due dates D of ``schedule`` with ``after`` < D, ``not_before`` <= D < ``before``.

    Memoised: the runner asks for every account every few minutes, with the same answer all
    day long (and the same for every account of a redevable).
    """
    start = not_before - dt.timedelta(days=1)
    if after is not None and after > start:
        start = after
    found: list[dt.date] = []
    current = schedule.next_due(start)
    while current < before:
        found.append(current)
        current = schedule.next_due(current)
    return tuple(found)


@functools.lru_cache(maxsize=4_096)
def _schedule(periodicity: Periodicity, month: int | None, day: int | None) -> Schedule:
    return Schedule.checked(periodicity, month, day)


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
            schedule = _schedule(periodicity, month, day)
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
    """What :func:`cut_statement` did."""

    CUT = "cut"  # a statement was produced now
    ALREADY = "already"  # it existed (another process or an earlier run)
    WAITING = "waiting"  # no fresh data yet: nothing written, or a waiting row kept
    FAILED = "failed"  # the file could not be built: ``echec`` row
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
    """Totals of one :func:`cut_due_statements` pass."""

    results: list[CutResult] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(1 for result in self.results if result.outcome == outcome)


# -- rendering -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LineData:
    """The values a statement line reports (copied from the transaction at the cut)."""

    transaction_id: int
    provider_id: str
    booking_date: dt.date
    value_date: dt.date | None
    amount: int
    label: str
    reference: str | None
    type: str
    counterparty_label: str | None
    counterparty_iban: str | None
    pending: bool

    @property
    def sort_key(self) -> tuple[dt.date, dt.date, str]:
        return (self.booking_date, self.value_date or self.booking_date, self.provider_id)


@dataclass(frozen=True, slots=True)
class CorrectionData:
    """One CSV line: a reported movement the bank deleted or changed."""

    transaction_id: int
    withdraws_line_id: int
    provider_id: str
    booking_date: dt.date
    value_date: dt.date | None
    amount: int
    label: str
    reference: str | None
    pending: bool
    seen_at: dt.datetime
    reason: str
    origin: str

    @property
    def sort_key(self) -> tuple[dt.date, str, int]:
        return (self.booking_date, self.provider_id, self.withdraws_line_id)


def _movement(line: LineData, entry_number: int) -> cfonb.Movement:
    complements: list[cfonb.Complement] = []
    reference_zone = ""
    builders = cfonb.complements
    if line.counterparty_label:
        complements.append(builders.counterparty(line.counterparty_label, line.amount))
    if line.counterparty_iban:
        account = line.counterparty_iban[:35]
        complements.append(
            builders.payer_account(account)
            if line.amount > 0
            else builders.beneficiary_account(account)
        )
    if line.reference:
        if line.type == "order":
            complements.append(builders.mandate(cfonb.clean_text(line.reference)[:35]))
        elif line.type in ("check", "deposit"):
            reference_zone = cfonb.clean_text(line.reference)[:16]
        else:
            complements.extend(builders.remittance_information(line.reference))
    return cfonb.Movement(
        booking_date=line.booking_date,
        amount=line.amount,
        label=line.label,
        op_code=cfonb.op_code_for(
            line.type or None, line.amount, line.label, card=line.type in _CARD_TYPES
        ),
        value_date=line.value_date,
        entry_number=cfonb.complements.entry_number_from_counter(entry_number),
        reference=reference_zone,
        complements=tuple(complements),
    )


def render_cfonb(
    iban: str,
    currency: str,
    period_start: dt.date,
    opening_balance: int,
    due: dt.date,
    lines: Sequence[LineData],
    first_entry: int = 1,
) -> bytes:
    """The CFONB120 file of a statement: a pure function of its data (no clock, no ids).

    The movements carry the entry numbers ``first_entry``, ``first_entry + 1``... in order.
    """
    statement = cfonb.Statement.build(
        cfonb.Account.from_iban(iban, currency),
        period_start,
        opening_balance,
        due,
        (_movement(line, first_entry + index) for index, line in enumerate(lines)),
    )
    return cfonb.dumps([statement]).encode("ascii")


def _format_amount(amount: int, currency: str) -> str:
    try:
        decimals = cfonb.minor_unit(currency)
    except (KeyError, ValueError):
        decimals = 2
    sign = "-" if amount < 0 else ""
    magnitude = abs(amount)
    if decimals == 0:
        return f"{sign}{magnitude}"
    units, minor = divmod(magnitude, 10**decimals)
    return f"{sign}{units},{minor:0{decimals}d}"


def _dmy(day: dt.date | None) -> str:
    return "" if day is None else day.strftime("%d/%m/%Y")


def render_csv(iban: str, currency: str, corrections: Sequence[CorrectionData]) -> bytes:
    """The deleted-transactions CSV: ``;``-separated, UTF-8 with a BOM (Excel), CRLF."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    for line in corrections:
        writer.writerow(
            (
                iban,
                _dmy(line.booking_date),
                _dmy(line.value_date or line.booking_date),
                line.label,
                _format_amount(line.amount, currency),
                currency,
                line.reference or "",
                _dmy(paris_date(line.seen_at)),
                line.origin,
                line.reason,
            )
        )
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")


def describe_origin(statement: Statement) -> str:
    """How a CSV names the statement a withdrawn line was reported in."""
    start = statement.period_start + dt.timedelta(days=1)
    return f"n° {statement.sequence} du {_dmy(start)} au {_dmy(statement.due_date)}"


# -- cutting ---------------------------------------------------------------------------------


class _Movement(NamedTuple):
    """A transaction to report, as the cut reads it (not the provider's payload)."""

    id: int
    account_id: int
    provider_id: str
    status: TransactionStatus
    booking_date: dt.date
    value_date: dt.date | None
    real_date: dt.date | None
    booked_at: dt.datetime | None
    amount: int
    raw_label: str
    reference: str | None
    type: str
    counterparty_label: str | None
    counterparty_iban: str | None


_MOVEMENT_COLUMNS = tuple(getattr(BankTransaction, name) for name in _Movement._fields)


def _values(row: BankTransaction) -> tuple[int, dt.date, dt.date, str]:
    return (row.amount, row.booking_date, row.value_date or row.booking_date, row.raw_label[:500])


def _line_values(line: StatementLine) -> tuple[int, dt.date, dt.date, str]:
    return (line.amount, line.booking_date, line.value_date or line.booking_date, line.label)


def is_reportable(
    row: BankTransaction | _Movement,
    due: dt.date,
    include_pending: bool,
    floor_date: dt.date,
    floor_time: dt.datetime,
) -> bool:
    """Whether the statement due on ``due`` may report ``row`` (if not reported yet).

    Booked rows: booking date <= D, outside the opening set (booked at the first statement's
    collection ``floor_time`` with booking date <= the first period start ``floor_date``).
    Pending rows (``include_pending``): operation date (real date, else booking date) in
    (floor_date, D].
    """
    if row.status is TransactionStatus.BOOKED:
        return row.booking_date <= due and (
            row.booking_date > floor_date
            or (row.booked_at is not None and row.booked_at > floor_time)
        )
    if row.status is TransactionStatus.PENDING and include_pending:
        operation = row.real_date or row.booking_date
        return floor_date < operation <= due
    return False


def _line_data(row: BankTransaction | _Movement, due: dt.date) -> LineData:
    pending = row.status is TransactionStatus.PENDING
    return LineData(
        transaction_id=row.id,
        provider_id=row.provider_id,
        # A pending row's booking date is the bank's forecast, often after D: it is written
        # at D at the latest (CFONB refuses movements after the period end).
        booking_date=min(row.booking_date, due) if pending else row.booking_date,
        value_date=row.value_date,
        amount=row.amount,
        label=row.raw_label[:500],
        reference=row.reference,
        type=row.type,
        counterparty_label=row.counterparty_label,
        counterparty_iban=row.counterparty_iban,
        pending=pending,
    )


#: Statements the runner cuts in one database transaction (each one complete: a crash keeps
#: all of them or none, never part of one).
CUT_BATCH = 50


async def _lock_connections(
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


async def cut_statement(
    database: Database,
    account_id: int,
    due: dt.date,
    *,
    clock: Clock,
    timing: StatementTiming | None = None,
) -> CutResult:
    """Produce the statement of ``account_id`` due on ``due``, or record why it must wait.

    Idempotent: a statement that exists is left alone. Call in due date order for one account
    (the runner does); a due date after a waiting one is refused (``waiting``).
    """
    return await _cut_one(database, account_id, due, clock.now(), timing or StatementTiming())


async def _cut_one(
    database: Database, account_id: int, due: dt.date, now: dt.datetime, timing: StatementTiming
) -> CutResult:
    try:
        async with database.session() as session:
            (result,) = await _cut_many(
                session, database, {account_id: due}, now, timing, strict=True
            )
        return result
    except IntegrityError:
        # Another process cut it between our check and our insert (unique constraint).
        return CutResult(account_id, due, CutOutcome.ALREADY)
    except _BuildFailed as failure:
        return await _record_failure(database, account_id, due, now, failure.reason)


async def _record_failure(
    database: Database, account_id: int, due: dt.date, now: dt.datetime, reason: str
) -> CutResult:
    """Everything the attempt changed was rolled back; only the failure is recorded."""
    async with database.session() as session:
        account = await session.get(BankAccount, account_id)
        assert account is not None
        await _lock_connections(session, database, [account.connection_id])
        redevable = await session.get(Redevable, account.redevable_id)
        assert redevable is not None
        existing = await session.scalar(
            select(Statement).where(Statement.account_id == account_id, Statement.due_date == due)
        )
        statement = await _upsert_row(session, account, existing, due, now, redevable)
        statement.state = StatementState.ECHEC
        statement.reason = reason
        statement.updated_at = now
        return CutResult(account_id, due, CutOutcome.FAILED, statement.id, reason=reason)


class _BuildFailed(Exception):
    def __init__(self, reason: str, account_id: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.account_id = account_id


@dataclass(slots=True)
class _Target:
    """One account to cut at one due date, with the statements the cut depends on."""

    account: BankAccount
    redevable: Redevable
    due: dt.date
    existing: Statement | None = None
    previous: Statement | None = None
    first: Statement | None = None
    max_sequence: int = 0
    earlier_open: bool = False


@dataclass(slots=True)
class _Facts:
    """What the database says about the accounts to cut (loaded in a few queries)."""

    flagged: dict[int, list[BankTransaction]] = field(default_factory=dict)
    open_pending: dict[int, list[tuple[StatementLine, BankTransaction]]] = field(
        default_factory=dict
    )
    open_lines: dict[int, StatementLine] = field(default_factory=dict)
    origins: dict[int, Statement] = field(default_factory=dict)
    rows: dict[int, list[_Movement]] = field(default_factory=dict)
    after_due: dict[int, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Built:
    """A statement computed in memory, ready to be written."""

    target: _Target
    period_start: dt.date
    window: WindowKind
    collected: dt.datetime
    lines: list[LineData]
    corrections: list[CorrectionData]
    correction_rows: dict[int, tuple[BankTransaction, StatementLine]]
    open_pending: list[StatementLine]
    opening: int
    closing: int
    movements_total: int
    withdrawn_total: int
    bank_balance: int | None
    iban: str
    currency: str
    cfonb_bytes: bytes
    csv_bytes: bytes | None


async def _load_targets(
    session: AsyncSession, database: Database, wanted: dict[int, dt.date]
) -> dict[int, _Target]:
    """Lock the connections, read the accounts, redevables and the statements that matter."""
    ids = sorted(wanted)
    connection_ids = sorted(
        set(await session.scalars(select(BankAccount.connection_id).where(BankAccount.id.in_(ids))))
    )
    await _lock_connections(session, database, connection_ids)
    # Per account: every statement not produced, the first and the last produced ones, and
    # the one at the wanted due date (the numbering's maximum is among them: nothing is
    # produced after a statement that is not).
    first_done, last_done = (
        select(Statement.id)
        .where(Statement.state == StatementState.SUCCES)
        .where(Statement.account_id == BankAccount.id)
        .order_by(order)
        .limit(1)
        .scalar_subquery()
        for order in (Statement.due_date, Statement.due_date.desc())
    )
    targets: dict[int, _Target] = {}
    produced: set[int] = set()
    for account, redevable, first_id, last_id in await session.execute(
        select(BankAccount, Redevable, first_done, last_done)
        .join(Redevable, Redevable.id == BankAccount.redevable_id)
        .where(BankAccount.id.in_(ids))
        .execution_options(populate_existing=True)
    ):
        targets[account.id] = _Target(account, redevable, wanted[account.id])
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
        or statement.state is not StatementState.SUCCES
        or statement.due_date == targets[statement.account_id].due
    ]
    last: dict[int, Statement] = {}
    for statement in statements:
        target = targets[statement.account_id]
        target.max_sequence = max(target.max_sequence, statement.sequence)
        if statement.due_date == target.due:
            target.existing = statement
        if statement.state is StatementState.SUCCES:
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
        elif target.existing is None or target.existing.state is not StatementState.SUCCES:
            # A statement produced after this due date while this one is not: never happens
            # (dates are cut in order); refuse rather than guess.
            raise RuntimeError(
                f"account {account_id}: a statement after {target.due} exists already"
            )
    return targets


def _padded(targets: list[_Target]) -> list[_Target]:
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


def _floors(target: _Target) -> tuple[dt.date, dt.datetime]:
    """The opening set's bounds: (first period start, first statement's collection)."""
    if target.previous is None:
        collected = target.account.last_collected_at
        assert collected is not None
        return first_period_start(target.account.activated_at, target.due), collected
    first = target.first
    assert first is not None and first.data_as_of is not None
    return first.period_start, first.data_as_of


async def _load_facts(session: AsyncSession, targets: Sequence[_Target]) -> _Facts:
    """Rows to report, corrections to make and balances, for every target at once."""
    facts = _Facts()
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
            floor_date, floor_time = _floors(target)
            params[f"{prefix}{index}_account"] = target.account.id
            params[f"{prefix}{index}_due"] = target.due
            params[f"{prefix}{index}_floor_date"] = floor_date
            params[f"{prefix}{index}_floor_time"] = floor_time
    for values in await session.execute(_movements_query(len(booked), len(pending)), params):
        movement = _Movement(*values)
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


async def _cut_many(
    session: AsyncSession,
    database: Database,
    wanted: dict[int, dt.date],
    now: dt.datetime,
    timing: StatementTiming,
    *,
    strict: bool = False,
) -> list[CutResult]:
    """Cut the statement of each account at its due date, in the session's transaction.

    Every statement is complete in the transaction; a failure to build one raises
    :class:`_BuildFailed` (naming the account) before anything is written.
    """
    targets = await _load_targets(session, database, wanted)
    results: list[CutResult] = []
    to_build: list[_Target] = []
    for account_id, due in wanted.items():
        target = targets.get(account_id)
        if target is None:
            if strict:
                raise LookupError(f"bank account {account_id} not found")
            results.append(CutResult(account_id, due, CutOutcome.FAILED, reason="compte absent"))
            continue
        account, existing = target.account, target.existing
        if existing is not None and existing.state is StatementState.SUCCES:
            results.append(CutResult(account_id, due, CutOutcome.ALREADY, existing.id))
        elif not account.active or not target.redevable.active:
            results.append(CutResult(account_id, due, CutOutcome.SKIPPED))
        elif target.earlier_open:
            results.append(
                CutResult(account_id, due, CutOutcome.WAITING, reason="relevé précédent en attente")
            )
        elif account.last_collected_at is None or account.last_collected_at < paris_midnight(
            due + dt.timedelta(days=1)
        ):
            results.append(
                await _wait(session, account, target.redevable, existing, due, now, timing)
            )
        else:
            to_build.append(target)
    if not to_build:
        return results
    facts = await _load_facts(session, to_build)
    built = [await _build(target, facts, now) for target in to_build]
    results.extend(await _write(session, built, now))
    return results


def _row_values(
    account: BankAccount, redevable: Redevable, due: dt.date, sequence: int, now: dt.datetime
) -> dict[str, Any]:
    """The columns of a new statement row, before it is cut (``en_cours``)."""
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
        "state": StatementState.EN_COURS,
        "reason": "",
        "iban": account.iban,
        "currency": account.currency or "EUR",
        "movement_count": 0,
        "deleted_count": 0,
        "withdrawn_total": 0,
        "balance_mismatch": False,
    }


async def _upsert_row(
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


async def _wait(
    session: AsyncSession,
    account: BankAccount,
    redevable: Redevable,
    existing: Statement | None,
    due: dt.date,
    now: dt.datetime,
    timing: StatementTiming,
) -> CutResult:
    """No data collected after D yet: keep (or create, once the night is over) a waiting row."""
    if now < timing.deadline(due):
        return CutResult(account.id, due, CutOutcome.WAITING, reason="collecte à venir")
    connection = await session.get(BankConnection, account.connection_id)
    state = StatementState.EN_COURS
    since = (
        "jamais collecté"
        if account.last_collected_at is None
        else f"dernière collecte le {account.last_collected_at.astimezone(PARIS):%d/%m/%Y %H:%M}"
    )
    reason = f"en attente de la collecte bancaire ({since})"
    if connection is not None and connection.state is ConnectionState.ERROR:
        state = StatementState.ECHEC
        message = describe_error(connection.error_code or "bug").message
        reason = f"connexion bancaire en erreur : {message} ({since})"
    elif connection is not None and not connection.active:
        state = StatementState.ECHEC
        reason = f"connexion bancaire fermée ({since})"
    statement = await _upsert_row(session, account, existing, due, now, redevable)
    if statement.state is not state or statement.reason != reason:
        statement.state = state
        statement.reason = reason
        statement.updated_at = now
    return CutResult(account.id, due, CutOutcome.WAITING, statement.id, reason=reason)


def _corrections(
    target: _Target, facts: _Facts, now: dt.datetime
) -> tuple[
    list[CorrectionData], list[BankTransaction], dict[int, tuple[BankTransaction, StatementLine]]
]:
    """CSV lines for reported rows that changed, and the rows to report again.

    A movement reported as booked is withdrawn when the bank deletes it or changes its amount,
    dates or label. A movement reported as pending is compared on amount and label only (its
    dates were the bank's forecast): it is *settled* once booked unchanged with a booking date
    <= D, withdrawn when deleted, replaced or changed.
    """
    account_id, due = target.account.id, target.due
    include_pending = target.redevable.include_pending
    flagged = facts.flagged.get(account_id, [])
    open_pending = facts.open_pending.get(account_id, [])
    if not flagged and not open_pending:
        return [], [], {}
    candidates: dict[int, tuple[BankTransaction, StatementLine | None]] = {}
    for line, row in open_pending:
        candidates[row.id] = (row, line)
    for row in flagged:
        if row.id not in candidates:
            candidates[row.id] = (row, facts.open_lines.get(row.id))

    corrections: list[CorrectionData] = []
    again: list[BankTransaction] = []
    withdrawn: dict[int, tuple[BankTransaction, StatementLine]] = {}
    for row, found in candidates.values():
        row.correction_pending = False
        if found is None:
            continue
        line = found
        gone = row.status in (TransactionStatus.DELETED, TransactionStatus.REPLACED)
        if line.pending:
            same = (row.amount, row.raw_label[:500]) == (line.amount, line.label)
        else:
            same = _values(row) == _line_values(line)
        if not gone and same:
            if (
                line.pending_open
                and row.status is TransactionStatus.BOOKED
                and row.booking_date <= due
            ):
                line.pending_open = False  # settled: booked as reported
            continue
        corrections.append(
            CorrectionData(
                transaction_id=row.id,
                withdraws_line_id=line.id,
                provider_id=line.provider_id,
                booking_date=line.booking_date,
                value_date=line.value_date,
                amount=line.amount,
                label=line.label,
                reference=line.reference,
                pending=line.pending,
                seen_at=(row.deleted_at if gone else None) or row.last_change_seen_at or now,
                reason="supprimée" if gone else "modifiée",
                origin=describe_origin(facts.origins[line.statement_id]),
            )
        )
        withdrawn[line.id] = (row, line)
        line.pending_open = False
        row.reported_statement_id = None
        if not gone and (row.status is TransactionStatus.BOOKED or include_pending):
            again.append(row)
    corrections.sort(key=lambda c: c.sort_key)
    return corrections, again, withdrawn


def _first_entry(target: _Target) -> int:
    """The entry number of the statement's first movement: the account's counter goes on
    from the previous statement's last number (1 for the first statement). A retry or a
    rebuild of the same statement has the same previous statement, hence the same numbers."""
    previous = target.previous
    if previous is None:
        return 1
    # Every produced statement has its counter (migration 0010 numbered the older ones).
    assert previous.last_entry_number is not None
    return previous.last_entry_number + 1


async def _build(target: _Target, facts: _Facts, now: dt.datetime) -> _Built:
    """Compute one statement in memory (raises :class:`_BuildFailed`, nothing written)."""
    account, redevable, due = target.account, target.redevable, target.due
    collected = account.last_collected_at
    assert collected is not None
    previous = target.previous
    floor_date, floor_time = _floors(target)
    if previous is None:
        period_start = floor_date
        window = WindowKind.FIRST
    else:
        period_start = previous.due_date
        assert previous.data_as_of is not None
        resumed = account.activated_at > previous.data_as_of
        window = WindowKind.RESUMED if resumed else WindowKind.NEXT
    include_pending = redevable.include_pending

    # 1. Corrections of what earlier statements reported.
    corrections, again, withdrawn = _corrections(target, facts, now)

    # 2. Movements: everything reportable up to D (see ``is_reportable``).
    rows: list[BankTransaction | _Movement] = [*facts.rows.get(account.id, ())]
    seen = {row.id for row in rows}
    for row in again:
        if row.id not in seen and is_reportable(row, due, include_pending, floor_date, floor_time):
            rows.append(row)
            seen.add(row.id)
    lines = sorted((_line_data(row, due) for row in rows), key=lambda line: line.sort_key)

    # 3. Balances.
    movements_total = sum(line.amount for line in lines)
    after_due = facts.after_due.get(account.id, 0)
    bank_balance = None if account.balance is None else account.balance - after_due
    if previous is None:
        booked_total = sum(line.amount for line in lines if not line.pending)
        opening = (bank_balance or 0) - booked_total
    else:
        assert previous.closing_balance is not None
        opening = previous.closing_balance
    closing = opening + movements_total
    withdrawn_amount = sum(line.amount for line in corrections)
    withdrawn_total = (previous.withdrawn_total if previous is not None else 0) + withdrawn_amount

    # 4. Files (pure functions of the data above).
    currency = account.currency or "EUR"
    iban = account.iban
    if iban is None:
        raise _BuildFailed(
            "IBAN inconnu : le fichier CFONB120 ne peut pas être produit", account.id
        )
    first_entry = _first_entry(target)
    try:
        if len(lines) > THREAD_THRESHOLD:
            cfonb_bytes = await asyncio.to_thread(
                render_cfonb, iban, currency, period_start, opening, due, lines, first_entry
            )
        else:
            cfonb_bytes = render_cfonb(
                iban, currency, period_start, opening, due, lines, first_entry
            )
    except (cfonb.CfonbWriteError, ValueError) as error:
        raise _BuildFailed(f"fichier CFONB120 impossible : {error}", account.id) from None
    csv_bytes = render_csv(iban, currency, corrections) if corrections else None
    open_pending = [line for line, _row in facts.open_pending.get(account.id, [])]
    return _Built(
        target=target,
        period_start=period_start,
        window=window,
        collected=collected,
        lines=lines,
        corrections=corrections,
        correction_rows=withdrawn,
        open_pending=open_pending,
        opening=opening,
        closing=closing,
        movements_total=movements_total,
        withdrawn_total=withdrawn_total,
        bank_balance=bank_balance,
        iban=iban,
        currency=currency,
        cfonb_bytes=cfonb_bytes,
        csv_bytes=csv_bytes,
    )


def _table(model: type[Any]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


#: Core tables of the bulk writes of a cut.
_STATEMENTS = _table(Statement)
_LINES = _table(StatementLine)
_FILES = _table(StatementFile)
_TRANSACTIONS = _table(BankTransaction)


def _balance_check(item: _Built) -> tuple[int, bool]:
    """The gap the files explain and whether the closing balance is a mismatch.

    Explained: every amount withdrawn by a CSV so far plus the pending movements still open
    once this statement is written (its own, and earlier ones neither settled nor withdrawn).
    """
    open_pending = sum(line.amount for line in item.open_pending if line.pending_open)
    open_pending += sum(line.amount for line in item.lines if line.pending)
    explained = item.withdrawn_total + open_pending
    bank_balance = item.bank_balance
    return explained, bank_balance is not None and item.closing - bank_balance != explained


def _cut_values(item: _Built, now: dt.datetime) -> dict[str, Any]:
    """The columns a cut sets on its statement row (a new one, or one completed in place)."""
    cfonb_bytes, csv_bytes = item.cfonb_bytes, item.csv_bytes
    bank_balance, closing = item.bank_balance, item.closing
    explained, mismatch = _balance_check(item)
    return {
        "period_start": item.period_start,
        "period_end": item.target.due,
        "window": item.window,
        "state": StatementState.SUCCES,
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
        "last_entry_number": _first_entry(item.target) + len(item.lines) - 1,
    }


async def _write_statements(
    session: AsyncSession, built: Sequence[_Built], now: dt.datetime
) -> list[int]:
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


def _mismatch_event(item: _Built, now: dt.datetime) -> BankEvent:
    account, due, currency = item.target.account, item.target.due, item.currency
    bank_balance, closing = item.bank_balance, item.closing
    assert bank_balance is not None
    explained, _mismatch = _balance_check(item)
    unexplained = closing - bank_balance - explained
    return BankEvent(
        at=now,
        kind=MISMATCH_EVENT_KIND,
        connection_id=account.connection_id,
        account_id=account.id,
        old_value=str(bank_balance),
        new_value=str(closing),
        error_code=MISMATCH_ERROR_CODE,
        message=(
            f"Relevé du {_dmy(due)} : écart de solde inexpliqué de "
            f"{_format_amount(unexplained, currency)} {currency} entre le solde "
            f"calculé ({_format_amount(closing, currency)}) et le solde de la "
            f"banque ({_format_amount(bank_balance, currency)})"
        ),
    )


async def _write(
    session: AsyncSession, built: Sequence[_Built], now: dt.datetime
) -> list[CutResult]:
    """The statement rows, their lines and files, the transactions' marks: one transaction.

    Rows are written in bulk (a few statements per chunk, whatever its size); the few loaded
    objects the corrections changed are written by the session.
    """
    # The corrections unmarked the rows they withdraw; that must reach the database before
    # the marks below, which report some of them again.
    await session.flush()
    statement_ids = await _write_statements(session, built, now)
    line_rows: list[dict[str, Any]] = []
    marks: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    results: list[CutResult] = []
    for item, sid in zip(built, statement_ids, strict=True):
        account = item.target.account
        account_id, due = account.id, item.target.due
        first_entry = _first_entry(item.target)
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
        _explained, mismatch = _balance_check(item)
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


async def _cut_chunk(
    database: Database, wanted: dict[int, dt.date], now: dt.datetime, timing: StatementTiming
) -> list[CutResult]:
    """Cut a chunk of (account, due date) in one transaction; on trouble, one by one."""
    wanted = dict(wanted)
    results: list[CutResult] = []
    while wanted:
        try:
            async with database.session() as session:
                done = await _cut_many(session, database, wanted, now, timing)
        except _BuildFailed as failure:
            # Rolled back; the account that cannot be built gets its failure, the others
            # are cut again without it.
            due = wanted.pop(failure.account_id)
            results.append(
                await _record_failure(database, failure.account_id, due, now, failure.reason)
            )
            continue
        except Exception:
            log.warning("statements of %s: batch failed, one by one", sorted(wanted), exc_info=True)
            for account_id, due in wanted.items():
                try:
                    results.append(await _cut_one(database, account_id, due, now, timing))
                except Exception as error:  # one account never sinks the batch
                    log.exception("statement of account %s due %s failed", account_id, due)
                    results.append(CutResult(account_id, due, CutOutcome.FAILED, reason=str(error)))
            return results
        results.extend(done)
        return results
    return results


async def cut_due_statements(
    database: Database,
    *,
    clock: Clock,
    timing: StatementTiming | None = None,
    redevable_id: int | None = None,
    batch: int = CUT_BATCH,
) -> CutReport:
    """Cut every statement due before today (Paris) and not produced yet, oldest first.

    After downtime the missed due dates are caught up in order. An account whose data is not
    fresh waits (a row says so once the night is over); the others go on. The statements are
    cut ``batch`` accounts per transaction (each statement complete in its transaction), one
    due date per account per round, rounds until every account is done or must wait.
    """
    timing = timing or StatementTiming()
    now = clock.now()
    report = CutReport()
    plan = await plan_due_accounts(database, now=now, timing=timing, redevable_id=redevable_id)
    queue = {item.account_id: list(item.dates) for item in plan}
    while queue:
        items = [(account_id, dates[0]) for account_id, dates in queue.items()]
        results: list[CutResult] = []
        for start in range(0, len(items), max(1, batch)):
            chunk = dict(items[start : start + max(1, batch)])
            results.extend(await _cut_chunk(database, chunk, now, timing))
        following: dict[int, list[dt.date]] = {}
        for result in results:
            report.results.append(result)
            dates = queue[result.account_id]
            if result.outcome in (CutOutcome.CUT, CutOutcome.ALREADY) and len(dates) > 1:
                following[result.account_id] = dates[1:]
        queue = following
    return report

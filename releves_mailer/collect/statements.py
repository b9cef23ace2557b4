"""Statement builder: plans the due statements of each bank account and cuts each one exactly once.

The rules (``docs/statements.md`` has the long version):

- The statement due on D covers the period (period_start, D]: period_start is the previous
  statement's due date (the chain), or D - 1 month for the first statement of an account. It
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
- When the night is over and the account has no fresh data, a row is kept ``en_cours``
  (no failure known: the collection is late) or ``echec`` (the connection failed, reason in
  French); it is completed in place as soon as fresh data arrives, in due date order.
"""

from __future__ import annotations

import asyncio
import calendar
import csv
import datetime as dt
import hashlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
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
from releves_mailer.db.models.portfolio import Redevable
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


# -- dates -----------------------------------------------------------------------------------


def month_before(day: dt.date) -> dt.date:
    """The same day one month earlier, clamped to the month's length (31/03 -> 28/02)."""
    year, month = (day.year, day.month - 1) if day.month > 1 else (day.year - 1, 12)
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def paris_date(moment: dt.datetime) -> dt.date:
    return moment.astimezone(PARIS).date()


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


def due_dates(
    schedule: Schedule, *, after: dt.date | None, not_before: dt.date, before: dt.date
) -> list[dt.date]:
    """Due dates D of ``schedule`` with ``after`` < D, ``not_before`` <= D < ``before``."""
    start = not_before - dt.timedelta(days=1)
    if after is not None and after > start:
        start = after
    found: list[dt.date] = []
    current = schedule.next_due(start)
    while current < before:
        found.append(current)
        current = schedule.next_due(current)
    return found


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
        .where(Statement.account_id == BankAccount.id)
        .where(Statement.state != StatementState.SUCCES)
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
                .where(Statement.state != StatementState.SUCCES)
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
            schedule = Schedule.checked(periodicity, month, day)
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


def _movement(line: LineData) -> cfonb.Movement:
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
        entry_number=cfonb.complements.entry_number_from_id(line.provider_id),
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
) -> bytes:
    """The CFONB120 file of a statement: a pure function of its data (no clock, no ids)."""
    statement = cfonb.Statement.build(
        cfonb.Account.from_iban(iban, currency),
        period_start,
        opening_balance,
        due,
        (_movement(line) for line in lines),
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


def _values(row: BankTransaction) -> tuple[int, dt.date, dt.date, str]:
    return (row.amount, row.booking_date, row.value_date or row.booking_date, row.raw_label[:500])


def _line_values(line: StatementLine) -> tuple[int, dt.date, dt.date, str]:
    return (line.amount, line.booking_date, line.value_date or line.booking_date, line.label)


def is_reportable(
    row: BankTransaction,
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


def _line_data(row: BankTransaction, due: dt.date) -> LineData:
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


async def _lock_connection(session: AsyncSession, connection_id: int) -> None:
    # The refresh takes the same lock first: a cut never interleaves with a sync.
    await session.execute(
        update(BankConnection)
        .where(BankConnection.id == connection_id)
        .values(updated_at=BankConnection.updated_at)
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
    timing = timing or StatementTiming()
    now = clock.now()
    try:
        async with database.session() as session:
            return await _cut(session, account_id, due, now, timing)
    except IntegrityError:
        # Another process cut it between our check and our insert (unique constraint).
        return CutResult(account_id, due, CutOutcome.ALREADY)
    except _BuildFailed as failure:
        # Everything the attempt changed was rolled back; only the failure is recorded.
        async with database.session() as session:
            account = await session.get(BankAccount, account_id)
            assert account is not None
            await _lock_connection(session, account.connection_id)
            redevable = await session.get(Redevable, account.redevable_id)
            assert redevable is not None
            existing = await session.scalar(
                select(Statement).where(
                    Statement.account_id == account_id, Statement.due_date == due
                )
            )
            statement = await _upsert_row(session, account, existing, due, now, redevable)
            statement.state = StatementState.ECHEC
            statement.reason = failure.reason
            statement.updated_at = now
            return CutResult(
                account_id, due, CutOutcome.FAILED, statement.id, reason=failure.reason
            )


class _BuildFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def _cut(
    session: AsyncSession,
    account_id: int,
    due: dt.date,
    now: dt.datetime,
    timing: StatementTiming,
) -> CutResult:
    connection_id = await session.scalar(
        select(BankAccount.connection_id).where(BankAccount.id == account_id)
    )
    if connection_id is None:
        raise LookupError(f"bank account {account_id} not found")
    await _lock_connection(session, connection_id)
    account = await session.get(BankAccount, account_id, populate_existing=True)
    assert account is not None
    redevable = await session.get(Redevable, account.redevable_id)
    assert redevable is not None
    existing = await session.scalar(
        select(Statement).where(Statement.account_id == account_id, Statement.due_date == due)
    )
    if existing is not None and existing.state is StatementState.SUCCES:
        return CutResult(account_id, due, CutOutcome.ALREADY, existing.id)
    if not account.active or not redevable.active:
        return CutResult(account_id, due, CutOutcome.SKIPPED)
    earlier_open = await session.scalar(
        select(func.count())
        .select_from(Statement)
        .where(Statement.account_id == account_id)
        .where(Statement.due_date < due)
        .where(Statement.state != StatementState.SUCCES)
    )
    if earlier_open:
        return CutResult(account_id, due, CutOutcome.WAITING, reason="relevé précédent en attente")
    collected = account.last_collected_at
    if collected is None or collected < paris_midnight(due + dt.timedelta(days=1)):
        return await _wait(session, account, redevable, existing, due, now, timing)

    previous = await session.scalar(
        select(Statement)
        .where(Statement.account_id == account_id)
        .where(Statement.state == StatementState.SUCCES)
        .where(Statement.due_date < due)
        .order_by(Statement.due_date.desc())
        .limit(1)
    )
    first = previous
    if previous is not None and previous.sequence != 1:
        first = await session.scalar(
            select(Statement)
            .where(Statement.account_id == account_id)
            .where(Statement.state == StatementState.SUCCES)
            .order_by(Statement.due_date)
            .limit(1)
        )
    if previous is None:
        period_start = month_before(due)
        window = WindowKind.FIRST
        floor_date, floor_time = period_start, collected
    else:
        assert first is not None and first.data_as_of is not None
        period_start = previous.due_date
        assert previous.data_as_of is not None
        resumed = account.activated_at > previous.data_as_of
        window = WindowKind.RESUMED if resumed else WindowKind.NEXT
        floor_date, floor_time = first.period_start, first.data_as_of

    include_pending = redevable.include_pending

    # 1. Corrections of what earlier statements reported.
    corrections, again = await _corrections(session, account_id, include_pending, due, now)

    # 2. Movements: everything reportable up to D (see ``is_reportable``).
    operation_date = func.coalesce(BankTransaction.real_date, BankTransaction.booking_date)
    booked = and_(
        BankTransaction.status == TransactionStatus.BOOKED,
        BankTransaction.booking_date <= due,
        or_(
            BankTransaction.booking_date > floor_date,
            BankTransaction.booked_at > floor_time,
        ),
    )
    pending = and_(
        BankTransaction.status == TransactionStatus.PENDING,
        operation_date <= due,
        operation_date > floor_date,
    )
    rows = list(
        (
            await session.scalars(
                select(BankTransaction)
                .where(BankTransaction.account_id == account_id)
                .where(BankTransaction.reported_statement_id.is_(None))
                .where(or_(booked, pending) if include_pending else booked)
            )
        ).all()
    )
    seen = {row.id for row in rows}
    for row in again:
        if row.id not in seen and is_reportable(row, due, include_pending, floor_date, floor_time):
            rows.append(row)
            seen.add(row.id)
    lines = sorted((_line_data(row, due) for row in rows), key=lambda line: line.sort_key)
    by_id = {row.id: row for row in rows}

    # 3. Balances.
    movements_total = sum(line.amount for line in lines)
    after_due = await session.scalar(
        select(func.coalesce(func.sum(BankTransaction.amount), 0))
        .where(BankTransaction.account_id == account_id)
        .where(BankTransaction.status == TransactionStatus.BOOKED)
        .where(BankTransaction.booking_date > due)
    )
    bank_balance = None if account.balance is None else account.balance - int(after_due or 0)
    if previous is None:
        booked_total = sum(line.amount for line in lines if not line.pending)
        opening = (bank_balance or 0) - booked_total
    else:
        assert previous.closing_balance is not None
        opening = previous.closing_balance
    closing = opening + movements_total
    withdrawn = sum(line.amount for line in corrections)
    withdrawn_total = (previous.withdrawn_total if previous is not None else 0) + withdrawn

    # 4. Files (pure functions of the data above).
    currency = account.currency or "EUR"
    iban = account.iban
    failure = ""
    cfonb_bytes = b""
    if iban is None:
        failure = "IBAN inconnu : le fichier CFONB120 ne peut pas être produit"
    else:
        try:
            if len(lines) > THREAD_THRESHOLD:
                cfonb_bytes = await asyncio.to_thread(
                    render_cfonb, iban, currency, period_start, opening, due, lines
                )
            else:
                cfonb_bytes = render_cfonb(iban, currency, period_start, opening, due, lines)
        except (cfonb.CfonbWriteError, ValueError) as error:
            failure = f"fichier CFONB120 impossible : {error}"
    if failure:
        raise _BuildFailed(failure)
    assert iban is not None
    csv_bytes = render_csv(iban, currency, corrections) if corrections else None

    # 5. The statement row, its lines and files, the transactions' marks: one transaction.
    statement = await _upsert_row(session, account, existing, due, now, redevable)
    statement.period_start = period_start
    statement.period_end = due
    statement.window = window
    statement.state = StatementState.SUCCES
    statement.reason = ""
    statement.updated_at = now
    statement.data_as_of = collected
    statement.iban = iban
    statement.currency = currency
    statement.movement_count = len(lines)
    statement.deleted_count = len(corrections)
    statement.opening_balance = opening
    statement.closing_balance = closing
    statement.movements_total = movements_total
    statement.withdrawn_total = withdrawn_total
    statement.cfonb_sha256 = hashlib.sha256(cfonb_bytes).hexdigest()
    statement.cfonb_size = len(cfonb_bytes)
    statement.csv_sha256 = None if csv_bytes is None else hashlib.sha256(csv_bytes).hexdigest()
    statement.csv_size = None if csv_bytes is None else len(csv_bytes)
    await session.flush()
    sid = statement.id

    line_rows: list[dict[str, Any]] = []
    for position, line in enumerate(lines, 1):
        line_rows.append(
            {
                "statement_id": sid,
                "account_id": account_id,
                "transaction_id": line.transaction_id,
                "kind": LineKind.MOVEMENT,
                "position": position,
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
        row = by_id[line.transaction_id]
        row.reported_statement_id = sid
        row.reported_at = now
        row.reported_amount = line.amount
        row.reported_booking_date = line.booking_date
    for position, correction in enumerate(corrections, 1):
        line_rows.append(
            {
                "statement_id": sid,
                "account_id": account_id,
                "transaction_id": correction.transaction_id,
                "kind": LineKind.CORRECTION,
                "position": position,
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
    if corrections:
        await session.execute(
            update(StatementLine)
            .where(StatementLine.id.in_([c.withdraws_line_id for c in corrections]))
            .values(withdrawn_statement_id=sid, pending_open=False)
        )
        await session.execute(
            update(BankTransaction)
            .where(BankTransaction.id.in_([c.transaction_id for c in corrections]))
            .values(correction_statement_id=sid)
        )
    if line_rows:
        await session.execute(insert(StatementLine), line_rows)
    files = [{"statement_id": sid, "kind": "cfonb", "content": cfonb_bytes}]
    if csv_bytes is not None:
        files.append({"statement_id": sid, "kind": "csv", "content": csv_bytes})
    await session.execute(insert(StatementFile), files)
    account.last_reported_date = due

    open_pending = await session.scalar(
        select(func.coalesce(func.sum(StatementLine.amount), 0))
        .where(StatementLine.account_id == account_id)
        .where(StatementLine.pending_open.is_(True))
    )
    explained = withdrawn_total + int(open_pending or 0)
    statement.bank_balance = bank_balance
    statement.balance_gap = None if bank_balance is None else closing - bank_balance
    statement.explained_gap = explained
    mismatch = bank_balance is not None and closing - bank_balance != explained
    statement.balance_mismatch = mismatch
    if mismatch:
        assert bank_balance is not None
        unexplained = closing - bank_balance - explained
        session.add(
            BankEvent(
                at=now,
                kind=MISMATCH_EVENT_KIND,
                connection_id=account.connection_id,
                account_id=account_id,
                old_value=str(bank_balance),
                new_value=str(closing),
                error_code=MISMATCH_ERROR_CODE,
                message=(
                    f"Relevé du {_dmy(due)} : écart de solde inexpliqué de "
                    f"{_format_amount(unexplained, currency)} {currency} entre le solde calculé "
                    f"({_format_amount(closing, currency)}) et le solde de la banque "
                    f"({_format_amount(bank_balance, currency)})"
                ),
            )
        )
    return CutResult(
        account_id,
        due,
        CutOutcome.CUT,
        sid,
        movements=len(lines),
        corrections=len(corrections),
        mismatch=mismatch,
    )


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
    statement = Statement(
        account_id=account.id,
        redevable_id=account.redevable_id,
        sequence=int(sequence or 0) + 1,
        due_date=due,
        period_start=due,
        period_end=due,
        window=WindowKind.NEXT,
        periodicity=str(redevable.periodicity),
        created_at=now,
        updated_at=now,
        state=StatementState.EN_COURS,
        reason="",
        iban=account.iban,
        currency=account.currency or "EUR",
        movement_count=0,
        deleted_count=0,
        withdrawn_total=0,
        balance_mismatch=False,
    )
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


async def _corrections(
    session: AsyncSession,
    account_id: int,
    include_pending: bool,
    due: dt.date,
    now: dt.datetime,
) -> tuple[list[CorrectionData], list[BankTransaction]]:
    """CSV lines for reported rows that changed, and the rows to report again.

    A movement reported as booked is withdrawn when the bank deletes it or changes its amount,
    dates or label. A movement reported as pending is compared on amount and label only (its
    dates were the bank's forecast): it is *settled* once booked unchanged with a booking date
    <= D, withdrawn when deleted, replaced or changed.
    """
    flagged = list(
        (
            await session.scalars(
                select(BankTransaction)
                .where(BankTransaction.account_id == account_id)
                .where(BankTransaction.correction_pending.is_(True))
            )
        ).all()
    )
    open_pending = list(
        (
            await session.execute(
                select(StatementLine, BankTransaction)
                .join(BankTransaction, BankTransaction.id == StatementLine.transaction_id)
                .where(StatementLine.account_id == account_id)
                .where(StatementLine.pending_open.is_(True))
            )
        ).all()
    )
    if not flagged and not open_pending:
        return [], []
    candidates: dict[int, tuple[BankTransaction, StatementLine | None]] = {}
    for line, row in open_pending:
        candidates[row.id] = (row, line)
    missing = [row for row in flagged if row.id not in candidates]
    if missing:
        lines = await session.scalars(
            select(StatementLine)
            .where(StatementLine.transaction_id.in_([row.id for row in missing]))
            .where(StatementLine.kind == LineKind.MOVEMENT)
            .where(StatementLine.withdrawn_statement_id.is_(None))
        )
        open_lines = {line.transaction_id: line for line in lines}
        for row in missing:
            candidates[row.id] = (row, open_lines.get(row.id))
    origins: dict[int, Statement] = {}
    statement_ids = {line.statement_id for _row, line in candidates.values() if line is not None}
    if statement_ids:
        for statement in await session.scalars(
            select(Statement).where(Statement.id.in_(statement_ids))
        ):
            origins[statement.id] = statement

    corrections: list[CorrectionData] = []
    again: list[BankTransaction] = []
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
                origin=describe_origin(origins[line.statement_id]),
            )
        )
        row.reported_statement_id = None
        if not gone and (row.status is TransactionStatus.BOOKED or include_pending):
            again.append(row)
    corrections.sort(key=lambda c: c.sort_key)
    return corrections, again


async def cut_due_statements(
    database: Database,
    *,
    clock: Clock,
    timing: StatementTiming | None = None,
    redevable_id: int | None = None,
) -> CutReport:
    """Cut every statement due before today (Paris) and not produced yet, oldest first.

    After downtime the missed due dates are caught up in order. An account whose data is not
    fresh waits (a row says so once the night is over); the others go on.
    """
    timing = timing or StatementTiming()
    report = CutReport()
    plan = await plan_due_accounts(
        database, now=clock.now(), timing=timing, redevable_id=redevable_id
    )
    for item in plan:
        for due in item.dates:
            try:
                result = await cut_statement(
                    database, item.account_id, due, clock=clock, timing=timing
                )
            except Exception as error:  # one account never sinks the batch
                log.exception("statement of account %s due %s failed", item.account_id, due)
                result = CutResult(item.account_id, due, CutOutcome.FAILED, reason=str(error))
            report.results.append(result)
            if result.outcome not in (CutOutcome.CUT, CutOutcome.ALREADY):
                break
    return report

"""Statement build: rows in, lines, corrections, balances and the CFONB120/CSV bytes out.

Pure: no database session here. The rows and statements come loaded by :mod:`.storage`; the
build decides what a statement reports, what it withdraws and its balances, and renders its
files (pure functions of its data).
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from releves_mailer import cfonb
from releves_mailer.enums import TransactionStatus, WindowKind
from releves_mailer.statements.plan import first_period_start, paris_date

if TYPE_CHECKING:
    from releves_mailer.db.models.collect import BankAccount, BankTransaction
    from releves_mailer.db.models.portfolio import Redevable
    from releves_mailer.db.models.statements import Statement, StatementLine

__all__ = [
    "CSV_HEADER",
    "BuildFailed",
    "Built",
    "CorrectionData",
    "Facts",
    "LineData",
    "MovementRow",
    "Target",
    "balance_check",
    "build_statement",
    "describe_origin",
    "dmy",
    "first_entry_number",
    "floors",
    "format_amount",
    "is_reportable",
    "render_cfonb",
    "render_csv",
]


#: Above this many movements the CFONB file is rendered in a worker thread.
THREAD_THRESHOLD = 500

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


def format_amount(amount: int, currency: str) -> str:
    """Minor units as CSV/message text, through the one formatter, ``cfonb.format_amount``."""
    # A stored account's currency is a known one; two decimals are the safe reading otherwise.
    return cfonb.format_amount(amount, cfonb.CURRENCIES.get(currency, 2))


def dmy(day: dt.date | None) -> str:
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
                dmy(line.booking_date),
                dmy(line.value_date or line.booking_date),
                line.label,
                format_amount(line.amount, currency),
                currency,
                line.reference or "",
                dmy(paris_date(line.seen_at)),
                line.origin,
                line.reason,
            )
        )
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")


def describe_origin(statement: Statement) -> str:
    """How a CSV names the statement a withdrawn line was reported in."""
    start = statement.period_start + dt.timedelta(days=1)
    return f"n° {statement.sequence} du {dmy(start)} au {dmy(statement.due_date)}"


# -- building --------------------------------------------------------------------------------


class MovementRow(NamedTuple):
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


def _values(row: BankTransaction) -> tuple[int, dt.date, dt.date, str]:
    return (row.amount, row.booking_date, row.value_date or row.booking_date, row.raw_label[:500])


def _line_values(line: StatementLine) -> tuple[int, dt.date, dt.date, str]:
    return (line.amount, line.booking_date, line.value_date or line.booking_date, line.label)


def is_reportable(
    row: BankTransaction | MovementRow,
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


def _line_data(row: BankTransaction | MovementRow, due: dt.date) -> LineData:
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


class BuildFailed(Exception):
    def __init__(self, reason: str, account_id: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.account_id = account_id


@dataclass(slots=True)
class Target:
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
class Facts:
    """What the database says about the accounts to cut (loaded in a few queries)."""

    flagged: dict[int, list[BankTransaction]] = field(default_factory=dict)
    open_pending: dict[int, list[tuple[StatementLine, BankTransaction]]] = field(
        default_factory=dict
    )
    open_lines: dict[int, StatementLine] = field(default_factory=dict)
    origins: dict[int, Statement] = field(default_factory=dict)
    rows: dict[int, list[MovementRow]] = field(default_factory=dict)
    after_due: dict[int, int] = field(default_factory=dict)


@dataclass(slots=True)
class Built:
    """A statement computed in memory, ready to be written."""

    target: Target
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


def floors(target: Target) -> tuple[dt.date, dt.datetime]:
    """The opening set's bounds: (first period start, first statement's collection)."""
    if target.previous is None:
        collected = target.account.last_collected_at
        assert collected is not None
        return first_period_start(target.account.activated_at, target.due), collected
    first = target.first
    assert first is not None and first.data_as_of is not None
    return first.period_start, first.data_as_of


def _corrections(
    target: Target, facts: Facts, now: dt.datetime
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


def first_entry_number(target: Target) -> int:
    """The entry number of the statement's first movement: the account's counter goes on
    from the previous statement's last number (1 for the first statement). A retry or a
    rebuild of the same statement has the same previous statement, hence the same numbers."""
    previous = target.previous
    if previous is None:
        return 1
    # Every produced statement has its counter (migration 0010 numbered the older ones).
    assert previous.last_entry_number is not None
    return previous.last_entry_number + 1


async def build_statement(target: Target, facts: Facts, now: dt.datetime) -> Built:
    """Compute one statement in memory (raises :class:`BuildFailed`, nothing written)."""
    account, redevable, due = target.account, target.redevable, target.due
    collected = account.last_collected_at
    assert collected is not None
    previous = target.previous
    floor_date, floor_time = floors(target)
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
    rows: list[BankTransaction | MovementRow] = [*facts.rows.get(account.id, ())]
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
        raise BuildFailed("IBAN inconnu : le fichier CFONB120 ne peut pas être produit", account.id)
    first_entry = first_entry_number(target)
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
        raise BuildFailed(f"fichier CFONB120 impossible : {error}", account.id) from None
    csv_bytes = render_csv(iban, currency, corrections) if corrections else None
    open_pending = [line for line, _row in facts.open_pending.get(account.id, [])]
    return Built(
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


def balance_check(item: Built) -> tuple[int, bool]:
    """The gap the files explain and whether the closing balance is a mismatch.

    Explained: every amount withdrawn by a CSV so far plus the pending movements still open
    once this statement is written (its own, and earlier ones neither settled nor withdrawn).
    """
    open_pending = sum(line.amount for line in item.open_pending if line.pending_open)
    open_pending += sum(line.amount for line in item.lines if line.pending)
    explained = item.withdrawn_total + open_pending
    bank_balance = item.bank_balance
    return explained, bank_balance is not None and item.closing - bank_balance != explained

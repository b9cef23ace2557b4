"""CFONB120 writer: statements to 120-character records on a caller-given text stream.

Every record is built whole and checked before it is written; an invalid value raises
:class:`CfonbWriteError` (a ``ValueError``) naming the movement. Streaming writes go out
in batches, so when an error interrupts a statement the stream holds its beginning: write
to a temporary file and rename it, or use :func:`dumps`, which is all or nothing.

Open files with ``newline=""``: the writer puts the terminators itself, and text mode
would otherwise turn each LF into the platform's (CRLF on Windows).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date
from typing import Final, Protocol

from .amounts import AMOUNT_LIMIT, CURRENCIES
from .complements import ONE_FIELD, QUALIFIERS, SEQUENCE_TYPES
from .model import Account, Complement, Movement, Statement
from .opcodes import OP_CODES
from .text import clean_text, clean_zone

__all__ = [
    "FIRST_DATE",
    "LAST_DATE",
    "CfonbWriteError",
    "SupportsWrite",
    "dumps",
    "iter_records",
    "stream_statement",
    "write_statement",
    "write_statements",
]

#: Dates the two-digit year can carry without ambiguity for the readers (Python's
#: ``%y`` pivot, used by python-cfonb and by our reader: 69-99 -> 19xx, 00-68 -> 20xx).
FIRST_DATE: Final = date(1969, 1, 1)
LAST_DATE: Final = date(2068, 12, 31)

_POSITIVE: Final = "{ABCDEFGHI"
_NEGATIVE: Final = "}JKLMNOPQR"
_NEWLINES: Final = ("\n", "\r\n")
_LIMIT: Final = AMOUNT_LIMIT
_BLANK50: Final = " " * 50
_BLANK16: Final = " " * 16
_FLAGS: Final[dict[bool | None, str]] = {None: " ", True: "1", False: "0"}
# Known qualifiers whose clean data needs no further layout check (LIB is the label's).
_PLAIN_QUALIFIERS: Final = frozenset(QUALIFIERS) - ONE_FIELD - {"LIB", "RUM", "MMO"}


class SupportsWrite(Protocol):
    """Any text stream: ``io.StringIO``, a file opened in text mode, a socket wrapper..."""

    def write(self, s: str, /) -> object: ...


class CfonbWriteError(ValueError):
    """A value cannot be written as a valid CFONB120 record."""


def _check_newline(newline: str) -> None:
    if newline not in _NEWLINES:
        raise CfonbWriteError(f"newline must be LF or CRLF, not {newline!r}")


def _ddmmyy(day: date, cache: dict[date, str]) -> str:
    if type(day) is not date:  # a datetime would compare badly with the period dates
        raise CfonbWriteError(f"dates must be datetime.date, not {day!r}")
    if not FIRST_DATE <= day <= LAST_DATE:
        raise CfonbWriteError(
            f"date {day.isoformat()} outside {FIRST_DATE.isoformat()}..{LAST_DATE.isoformat()}"
            " (JJMMAA would be ambiguous)"
        )
    text = f"{day.day:02d}{day.month:02d}{day.year % 100:02d}"
    cache[day] = text
    return text


def _amount(amount: int) -> str:
    if type(amount) is not int:
        raise CfonbWriteError(f"amount must be an int of minor units, not {amount!r}")
    magnitude = amount if amount >= 0 else -amount
    if magnitude > AMOUNT_LIMIT:
        raise CfonbWriteError(f"amount {amount} beyond the CFONB limit of ±{AMOUNT_LIMIT} units")
    last = (_POSITIVE if amount >= 0 else _NEGATIVE)[magnitude % 10]
    return f"{magnitude // 10:013d}{last}"


def _is_alnum(text: str) -> bool:
    return text.isascii() and text.isalnum()


def _check_account(account: Account) -> tuple[str, str, str, str]:
    bank, branch = account.bank_code, account.branch_code
    number, currency = account.number.upper(), account.currency.upper()
    if len(bank) != 5 or not (bank.isascii() and bank.isdigit()):
        raise CfonbWriteError(f"bank code must be 5 digits, not {bank!r}")
    if len(branch) != 5 or not (branch.isascii() and branch.isdigit()):
        raise CfonbWriteError(f"branch code must be 5 digits, not {branch!r}")
    if len(number) != 11 or not _is_alnum(number):
        raise CfonbWriteError(f"account number must be 11 letters or digits, not {number!r}")
    if currency not in CURRENCIES:
        raise CfonbWriteError(f"unknown ISO 4217 currency {currency!r}")
    return bank, branch, number, currency


def _complement_data(complement: Complement) -> str:
    qualifier = complement.qualifier
    if len(qualifier) != 3 or not _is_alnum(qualifier) or not qualifier.isupper():
        raise CfonbWriteError(f"qualifier must be 3 upper-case letters or digits: {qualifier!r}")
    if qualifier == "LIB":
        raise CfonbWriteError("LIB complements carry the label continuation: extend the label")
    if qualifier not in QUALIFIERS:
        # The strict reader reports qualifiers outside the CFONB list: never write one.
        raise CfonbWriteError(f"qualifier {qualifier!r} is not in the CFONB list")
    data = clean_zone(complement.data)
    if len(data) > 70:
        raise CfonbWriteError(f"{qualifier} data longer than 70 characters: {data!r}")
    if qualifier in ONE_FIELD and len(data) > 35:
        raise CfonbWriteError(f"{qualifier} data longer than 35 characters: {data!r}")
    if qualifier == "RUM" and (len(data) > 39 or data[35:] not in SEQUENCE_TYPES | {""}):
        raise CfonbWriteError(f"RUM sequence type must be OOFF, FRST, RCUR or FNAL: {data!r}")
    if qualifier == "MMO" and not _valid_mmo(data):
        raise CfonbWriteError(
            f"MMO must be currency, decimals, 14-digit amount, optional rate: {data!r}"
        )
    return data


def _valid_mmo(data: str) -> bool:
    rate = data[18:31]
    return (
        data[:3] in CURRENCIES
        and data[3:18].isdigit()
        and len(data[3:18]) == 15
        and (rate == "" or (len(rate) == 13 and rate.isdigit()))
        and len(data) <= 31
    )


class _Renderer:
    """Renders the records of one account; holds the zones shared by every record."""

    __slots__ = ("bank", "booking_dates", "dates", "middle", "newline", "prefix04", "tail")

    def __init__(self, account: Account, newline: str) -> None:
        bank, branch, number, currency = _check_account(account)
        self.bank = bank
        # Positions 12-32: branch, currency, decimals, reserved blank, account number.
        self.middle = f"{branch}{currency}{CURRENCIES[currency]} {number}"
        self.newline = newline
        # Positions 1-32 of a 04 without bank internal code; 105-120 blank + newline.
        self.prefix04 = f"04{bank}    {self.middle}"
        self.tail = f"{_BLANK16}{newline}"
        self.dates: dict[date, str] = {}
        self.booking_dates: dict[date, str] = {}

    def balance(self, code: str, day: date, amount: int) -> str:
        text = self.dates.get(day) or _ddmmyy(day, self.dates)
        return (
            f"{code}{self.bank}    {self.middle}  {text}{_BLANK50}"
            f"{_amount(amount)}{_BLANK16}{self.newline}"
        )

    def movement(self, m: Movement, seq: int, period_end: date) -> str:
        """The 04 record of ``m`` and its 05 records, each followed by the newline."""
        # The hot path of the writer. Every substitution in an f-string costs, so the
        # common movement (short label, no optional zone, no complement) takes one
        # f-string with the constant zones pre-joined; anything else takes _full().
        op = m.op_code
        if op not in OP_CODES:
            raise CfonbWriteError(f"unknown operation code {op!r}")
        day = m.booking_date
        booking = self.booking_dates.get(day) or self.booking_date(day, period_end)
        value_day = m.value_date
        if value_day is None:
            value = booking
        else:
            value = self.dates.get(value_day) or _ddmmyy(value_day, self.dates)
        label = m.label
        if label.isascii() and label.isprintable():
            label = " ".join(label.upper().split())
        else:
            label = clean_text(label)
        amount = m.amount
        if type(amount) is not int or not -_LIMIT <= amount <= _LIMIT:
            _amount(amount)  # raises the precise error
        if amount >= 0:
            tens, last = divmod(amount, 10)
            sign = _POSITIVE[last]
        else:
            tens, last = divmod(-amount, 10)
            sign = _NEGATIVE[last]
        if (
            m.entry_number
            or m.complements
            or len(label) > 31
            or m.internal_code
            or m.reject_code
            or m.reference
            or m.exempt is not None
            or m.unavailable is not None
            or seq >= 10_000_000
        ):
            return self._full(m, seq, op, booking, value, label, f"{tens:013d}{sign}")
        return (
            f"{self.prefix04}{op}{booking}  {value}{label:<31}  {seq:07d}  {tens:013d}{sign}"
            f"{self.tail}"
        )

    def _full(
        self, m: Movement, seq: int, op: str, booking: str, value: str, label: str, zone: str
    ) -> str:
        entry = m.entry_number
        entry = _entry_number(entry) if entry else f"{seq % 10_000_000:07d}"
        internal = m.internal_code
        if internal:
            internal = _internal_code(internal)
        reject = m.reject_code
        if reject and (len(reject) != 2 or not (reject.isascii() and reject.isdigit())):
            raise CfonbWriteError(f"reject reason code must be 2 digits: {reject!r}")
        reference = m.reference
        if reference:
            reference = _reference(reference)
        nl = self.newline
        head = f"{self.bank}{internal:<4}{self.middle}{op}{booking}"
        parts = [
            f"04{head}{reject:<2}{value}{label[:31]:<31}  {entry}"
            f"{_FLAGS[m.exempt]}{_FLAGS[m.unavailable]}{zone}{reference:<16}{nl}"
        ]
        prefix = f"05{head}     "
        for start in range(31, len(label), 70):
            parts.append(f"{prefix}LIB{label[start : start + 70]:<70}  {nl}")
        for complement in m.complements:
            qualifier, data = complement.qualifier, complement.data
            if not (
                qualifier in _PLAIN_QUALIFIERS
                and len(data) <= 70
                and data.isascii()
                and data.isprintable()
                and data == data.upper()
            ):
                data = _complement_data(complement)
            parts.append(f"{prefix}{qualifier}{data:<70}  {nl}")
        return "".join(parts)

    def booking_date(self, day: date, period_end: date) -> str:
        """JJMMAA of a booking date, refused after the period end (cached once checked)."""
        text = self.dates.get(day) or _ddmmyy(day, self.dates)
        if day > period_end:
            raise CfonbWriteError(
                f"booked {day.isoformat()}, after the period end {period_end.isoformat()}"
            )
        self.booking_dates[day] = text
        return text


def _entry_number(entry: str) -> str:
    entry = entry.upper()
    if len(entry) > 7 or not _is_alnum(entry):
        raise CfonbWriteError(f"entry number must be 1-7 letters or digits: {entry!r}")
    return entry.zfill(7) if entry.isdigit() else f"{entry:<7}"


def _internal_code(internal: str) -> str:
    internal = internal.upper()
    if len(internal) > 4 or not _is_alnum(internal):
        raise CfonbWriteError(f"bank internal code must be 1-4 letters or digits: {internal!r}")
    return internal


def _reference(reference: str) -> str:
    reference = clean_text(reference)
    if len(reference) > 16:
        raise CfonbWriteError(f"reference zone longer than 16 characters: {reference!r}")
    return reference


def _check_dates(opening_date: date, closing_date: date) -> None:
    for day in (opening_date, closing_date):
        if type(day) is not date:
            raise CfonbWriteError(f"dates must be datetime.date, not {day!r}")
    if opening_date > closing_date:
        raise CfonbWriteError(
            f"opening date {opening_date.isoformat()} after closing date {closing_date.isoformat()}"
        )


def _chunks(
    account: Account,
    opening_date: date,
    opening_balance: int,
    closing_date: date,
    movements: Iterable[Movement],
    newline: str,
    closing: list[int],
) -> Iterator[str]:
    """Yield the statement as batches of records; store the closing balance in ``closing``."""
    _check_newline(newline)
    _check_dates(opening_date, closing_date)
    renderer = _Renderer(account, newline)
    buffer = [renderer.balance("01", opening_date, opening_balance)]
    total = opening_balance
    seq = 0
    try:
        for seq, movement in enumerate(movements, 1):
            buffer.append(renderer.movement(movement, seq, closing_date))
            total += movement.amount
            if len(buffer) >= 512:
                yield "".join(buffer)
                buffer.clear()
    except CfonbWriteError as exc:
        raise CfonbWriteError(f"movement {seq}: {exc}") from None
    buffer.append(renderer.balance("07", closing_date, total))
    closing.append(total)
    yield "".join(buffer)


def stream_statement(
    out: SupportsWrite,
    account: Account,
    opening_date: date,
    opening_balance: int,
    closing_date: date,
    movements: Iterable[Movement],
    *,
    newline: str = "\n",
) -> int:
    """Write one statement whose movements come from any iterable (a generator, a
    database cursor...) without holding them; return the closing balance written in the
    07 (opening balance + sum of the movements)."""
    closing: list[int] = []
    for chunk in _chunks(
        account, opening_date, opening_balance, closing_date, movements, newline, closing
    ):
        out.write(chunk)
    return closing[0]


def _check_statement(statement: Statement) -> None:
    computed = statement.opening_balance + sum(m.amount for m in statement.movements)
    if computed != statement.closing_balance:
        raise CfonbWriteError(
            f"closing balance {statement.closing_balance} differs from opening balance +"
            f" movements = {computed} (account {statement.account.number})"
        )


def _statement_chunks(statement: Statement, newline: str) -> Iterator[str]:
    _check_statement(statement)
    closing: list[int] = []
    yield from _chunks(
        statement.account,
        statement.opening_date,
        statement.opening_balance,
        statement.closing_date,
        statement.movements,
        newline,
        closing,
    )


def _file_chunks(statements: Iterable[Statement], newline: str) -> Iterator[str]:
    # The 07 of a period must be the 01 of the next one for the same account.
    last: dict[Account, Statement] = {}
    for statement in statements:
        previous = last.get(statement.account)
        if previous is not None and (
            previous.closing_balance != statement.opening_balance
            or previous.closing_date != statement.opening_date
        ):
            raise CfonbWriteError(
                f"account {statement.account.number}: the statement opening on"
                f" {statement.opening_date.isoformat()} does not continue the one closing on"
                f" {previous.closing_date.isoformat()} (date and balance must match)"
            )
        last[statement.account] = statement
        yield from _statement_chunks(statement, newline)


def write_statement(out: SupportsWrite, statement: Statement, *, newline: str = "\n") -> None:
    """Write one statement (01, 04 + 05..., 07) to ``out``."""
    for chunk in _statement_chunks(statement, newline):
        out.write(chunk)


def write_statements(
    out: SupportsWrite, statements: Iterable[Statement], *, newline: str = "\n"
) -> None:
    """Write several statements (accounts, consecutive periods) as one file to ``out``.

    Consecutive statements of the same account must chain: the closing date and balance
    of one are the opening date and balance of the next.
    """
    for chunk in _file_chunks(statements, newline):
        out.write(chunk)


def dumps(statements: Iterable[Statement], *, newline: str = "\n") -> str:
    """Return the whole file as one string (for small files); raises before returning
    anything if one value is invalid."""
    return "".join(_file_chunks(statements, newline))


def iter_records(statements: Iterable[Statement]) -> Iterator[str]:
    """Yield the 120-character records of ``statements``, without line terminators."""
    for chunk in _file_chunks(statements, "\n"):
        yield from chunk.split("\n")[:-1]

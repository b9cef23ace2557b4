"""Frozen dataclasses of a CFONB120 file: account, statement, movement, complement."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from .account import bban_fields

__all__ = ["Account", "Complement", "Movement", "Statement"]


@dataclass(frozen=True, slots=True)
class Account:
    """The account zones repeated in every record of a statement.

    ``bank_code`` and ``branch_code`` are 5 digits, ``number`` 11 alphanumerics,
    ``currency`` an ISO 4217 code. The writer validates them; the reader fills them with
    what the file holds.
    """

    bank_code: str
    branch_code: str
    number: str
    currency: str

    @classmethod
    def from_iban(cls, iban: str, currency: str) -> Account:
        """Build the account from an IBAN (see :mod:`.account` for non-French IBANs)."""
        bank, branch, number = bban_fields(iban)
        return cls(bank, branch, number, currency.upper())


@dataclass(frozen=True, slots=True)
class Complement:
    """One ``05`` record: a 3-letter qualifier and its 70-character data zone (49-118).

    ``data`` is the zone content without trailing blanks; for the 35+35 layouts (RCN, REF,
    IBE, IPY, RUM...) the second field starts at offset 35. Build them with the helpers of
    :mod:`.complements` rather than by hand.
    """

    qualifier: str
    data: str

    @property
    def first(self) -> str:
        """The first 35-character field of a 35+35 layout, without trailing blanks."""
        return self.data[:35].rstrip()

    @property
    def second(self) -> str:
        """The second 35-character field of a 35+35 layout, without trailing blanks."""
        return self.data[35:].rstrip()


@dataclass(frozen=True, slots=True)
class Movement:
    """One ``04`` record and its ``05`` complements.

    ``amount`` is a signed ``int`` of minor units of the account currency (positive =
    credit). ``label`` is the full label, of any length and script: the writer puts its
    first 31 characters (transliterated, upper-cased) in the 04 and continues it in ``LIB``
    complements. ``value_date`` ``None`` means the booking date. ``entry_number`` empty
    means "let the writer number the movement" (its 1-based position in the statement);
    give a stable one (e.g. :func:`.complements.entry_number_from_id`) when the same
    movement may be written again. ``exempt``/``unavailable`` are the commission-exemption
    and unavailability indexes (``None`` = blank).
    """

    booking_date: date
    amount: int
    label: str
    op_code: str
    value_date: date | None = None
    entry_number: str = ""
    reject_code: str = ""
    internal_code: str = ""
    exempt: bool | None = None
    unavailable: bool | None = None
    reference: str = ""
    complements: tuple[Complement, ...] = ()


@dataclass(frozen=True, slots=True)
class Statement:
    """One ``01`` .. ``07`` block: an account over a period.

    ``opening_date`` is the closing date of the previous period (date of the 01),
    ``closing_date`` the end of this period (date of the 07). Balances are signed ``int``
    minor units (positive = in the customer's favour). The writer refuses a statement
    whose closing balance is not ``opening_balance + sum(amounts)``; use :meth:`build` to
    compute it.
    """

    account: Account
    opening_date: date
    opening_balance: int
    closing_date: date
    closing_balance: int
    movements: tuple[Movement, ...] = ()

    @classmethod
    def build(
        cls,
        account: Account,
        opening_date: date,
        opening_balance: int,
        closing_date: date,
        movements: Iterable[Movement] = (),
    ) -> Statement:
        """Build a statement whose closing balance is the opening plus the movements."""
        movements = tuple(movements)
        closing = opening_balance + sum(m.amount for m in movements)
        return cls(account, opening_date, opening_balance, closing_date, closing, movements)

    @property
    def is_balanced(self) -> bool:
        """Tell whether opening balance + sum of the movements == closing balance."""
        return self.opening_balance + sum(m.amount for m in self.movements) == (
            self.closing_balance
        )

"""Tables of the statements: one row per (bank account, due date), its lines and its files.

A ``statement`` is cut once per bank account and due date (unique constraint), in one database
transaction that also writes its ``statement_line`` rows (what it reported, and what its
deleted-transactions CSV withdrew) and its ``statement_file`` rows (the CFONB120 bytes and the
CSV bytes). The rules are in ``docs/statements.md`` and :mod:`releves_mailer.statements`.
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from releves_mailer.db.base import Base, UTCDateTime
from releves_mailer.db.claims import Claimable
from releves_mailer.enums import LineKind, StatementState, WindowKind

__all__ = [
    "LineKind",
    "Statement",
    "StatementFile",
    "StatementLine",
    "StatementState",
    "WindowKind",
]


def _enum_values(enum_type: type[enum.Enum]) -> list[str]:
    return [str(member.value) for member in enum_type]


def _enum(enum_type: type[enum.Enum], name: str) -> Enum:
    return Enum(enum_type, name=name, values_callable=_enum_values, native_enum=False, length=16)


class Statement(Claimable, Base):
    """One statement of one bank account for one due date."""

    __tablename__ = "statement"
    __table_args__ = (
        UniqueConstraint("account_id", "due_date", name="uq_statement_account_due"),
        UniqueConstraint("account_id", "sequence", name="uq_statement_account_sequence"),
        Index("ix_statement_redevable_due", "redevable_id", "due_date"),
        Index("ix_statement_created", "created_at"),
        # The builder's questions per account: its first and last ``produced`` statements
        # (min/max of the index), its statements not produced yet (few, whatever the age).
        Index("ix_statement_state_account_due", "state", "account_id", "due_date"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("bank_account.id", ondelete="RESTRICT"))
    redevable_id: Mapped[int] = mapped_column(ForeignKey("redevable.id", ondelete="RESTRICT"))
    #: 1, 2, 3... per account, in due date order.
    sequence: Mapped[int] = mapped_column(Integer)
    #: D: the date the redevable's periodicity makes the statement due.
    due_date: Mapped[dt.date] = mapped_column(Date)
    #: Exclusive start (the 01's date = the previous closing date) and inclusive end (= D).
    period_start: Mapped[dt.date] = mapped_column(Date)
    period_end: Mapped[dt.date] = mapped_column(Date)
    window: Mapped[WindowKind] = mapped_column(_enum(WindowKind, "statement_window"))
    #: The periodicity in force when the statement was planned (JOURNALIERE...).
    periodicity: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    state: Mapped[StatementState] = mapped_column(_enum(StatementState, "statement_state"))
    #: French reason of ``failed`` (or of a wait in ``waiting``); empty on success.
    reason: Mapped[str] = mapped_column(Text, default="")
    #: The account's last successful collection used by the cut (the data's "as of").
    data_as_of: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    iban: Mapped[str | None] = mapped_column(String(34))
    currency: Mapped[str] = mapped_column(String(3))
    movement_count: Mapped[int] = mapped_column(Integer, default=0)
    deleted_count: Mapped[int] = mapped_column(Integer, default=0)
    #: Balances in minor units of ``currency``; closing = opening + the movements.
    opening_balance: Mapped[int | None] = mapped_column(BigInteger)
    closing_balance: Mapped[int | None] = mapped_column(BigInteger)
    #: Sum of the movement amounts (debits negative).
    movements_total: Mapped[int | None] = mapped_column(BigInteger)
    #: The bank's balance at the end of D, reconstructed from the balance it reported at
    #: ``data_as_of`` minus the booked movements dated after D.
    bank_balance: Mapped[int | None] = mapped_column(BigInteger)
    #: closing_balance - bank_balance.
    balance_gap: Mapped[int | None] = mapped_column(BigInteger)
    #: The part of the gap the files explain: amounts withdrawn by the CSVs so far plus
    #: reported pending movements the bank does not count yet.
    explained_gap: Mapped[int | None] = mapped_column(BigInteger)
    #: Running total of the amounts withdrawn by CSVs, this statement included.
    withdrawn_total: Mapped[int] = mapped_column(BigInteger, default=0)
    #: The gap is not fully explained: shown on the statement and as a bank event.
    balance_mismatch: Mapped[bool] = mapped_column(Boolean, default=False)
    cfonb_sha256: Mapped[str | None] = mapped_column(String(64))
    cfonb_size: Mapped[int | None] = mapped_column(Integer)
    csv_sha256: Mapped[str | None] = mapped_column(String(64))
    csv_size: Mapped[int | None] = mapped_column(Integer)
    #: The account's entry-number counter once this statement is cut: its movements carry
    #: ``last_entry_number - movement_count + 1`` .. ``last_entry_number`` (None until cut).
    #: The next statement of the account goes on from it.
    last_entry_number: Mapped[int | None] = mapped_column(BigInteger)
    #: Filled by the delivery step (next issue).
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    message_id: Mapped[str | None] = mapped_column(String(250))
    delivery_box: Mapped[str | None] = mapped_column(String(250))


class StatementLine(Base):
    """What a statement said about one transaction: a movement, or a CSV withdrawal.

    Values are copied as reported, so a statement's files can be explained (and re-rendered)
    whatever happens to the transaction afterwards.
    """

    __tablename__ = "statement_line"
    __table_args__ = (
        Index("ix_statement_line_statement", "statement_id", "position"),
        Index("ix_statement_line_transaction", "transaction_id"),
        Index("ix_statement_line_open_pending", "account_id", "pending_open"),
        # An entry number is given once per account for the life of the account (NULL on
        # correction lines: NULLs never collide in a unique index, SQLite and PostgreSQL).
        Index("uq_statement_line_entry_number", "account_id", "entry_number", unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    statement_id: Mapped[int] = mapped_column(ForeignKey("statement.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(ForeignKey("bank_account.id", ondelete="RESTRICT"))
    transaction_id: Mapped[int] = mapped_column(
        ForeignKey("bank_transaction.id", ondelete="RESTRICT")
    )
    kind: Mapped[LineKind] = mapped_column(_enum(LineKind, "statement_line_kind"))
    #: Order within the statement's file (CFONB movements, or CSV lines).
    position: Mapped[int] = mapped_column(Integer)
    provider_id: Mapped[str] = mapped_column(String(64))
    booking_date: Mapped[dt.date] = mapped_column(Date)
    value_date: Mapped[dt.date | None] = mapped_column(Date)
    amount: Mapped[int] = mapped_column(BigInteger)
    label: Mapped[str] = mapped_column(String(500))
    reference: Mapped[str | None] = mapped_column(String(200))
    #: Movement lines: the entry number of the 04 record (positions 82-88), from a counter per
    #: account that only goes up (a re-posted correction is a new line with a new number);
    #: the file carries it modulo 10^7, zero-padded to 7 digits. None on correction lines.
    entry_number: Mapped[int | None] = mapped_column(BigInteger)
    #: The movement was reported while pending (redevable option ``include_pending``).
    pending: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Reported pending and not yet settled (booked unchanged) nor withdrawn: the builder
    #: compares it with the transaction at every cut.
    pending_open: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Movement lines: the statement whose CSV withdrew it (None while it stands).
    withdrawn_statement_id: Mapped[int | None] = mapped_column(Integer)
    #: Correction lines: the movement line withdrawn, and why (``supprimée``/``modifiée``).
    withdraws_line_id: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(16), default="")
    #: Correction lines: when the deletion or change was seen.
    seen_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class StatementFile(Base):
    """The bytes of a statement's CFONB120 file or CSV, kept in the database.

    Stored with the statement in the same transaction, so that no statement exists without
    its files and a crash leaves neither.
    """

    __tablename__ = "statement_file"

    statement_id: Mapped[int] = mapped_column(
        ForeignKey("statement.id", ondelete="CASCADE"), primary_key=True
    )
    #: ``cfonb`` or ``csv``.
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    content: Mapped[bytes] = mapped_column(LargeBinary)

"""Tables of the collection: bank connections, bank accounts, their events and transactions."""

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
from releves_mailer.enums import BankEventKind, ConnectionState, TransactionStatus

__all__ = [
    "BankAccount",
    "BankConnection",
    "BankEvent",
    "BankEventKind",
    "BankTransaction",
    "BankTransactionVersion",
    "ConnectionState",
    "TransactionStatus",
]


def _enum_values(enum_type: type[enum.Enum]) -> list[str]:
    return [str(member.value) for member in enum_type]


def _enum(enum_type: type[enum.Enum], name: str) -> Enum:
    return Enum(enum_type, name=name, values_callable=_enum_values, native_enum=False, length=24)


class BankConnection(Claimable, Base):
    """A redevable's access to one bank through one provider."""

    __tablename__ = "bank_connection"

    id: Mapped[int] = mapped_column(primary_key=True)
    redevable_id: Mapped[int] = mapped_column(
        ForeignKey("redevable.id", ondelete="RESTRICT"), index=True
    )
    provider: Mapped[str] = mapped_column(String(32))
    #: The provider's ids of the connection and of its user (Powens ``id_user``).
    provider_connection_id: Mapped[str] = mapped_column(String(64))
    provider_user_id: Mapped[str] = mapped_column(String(64), default="")
    #: The provider's access token, encrypted with the secrets key ring; never in clear.
    token_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    bank_name: Mapped[str] = mapped_column(String(100), default="")
    state: Mapped[ConnectionState] = mapped_column(
        _enum(ConnectionState, "connection_state"), default=ConnectionState.NEW
    )
    error_code: Mapped[str | None] = mapped_column(String(40))
    error_detail: Mapped[str] = mapped_column(Text, default="")
    last_check_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_success_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    #: Incremental cursor: the newest ``last_update`` received from the provider.
    cursor: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class BankAccount(Claimable, Base):
    """A bank account of a redevable; identity is the normalised IBAN within the redevable."""

    __tablename__ = "bank_account"
    __table_args__ = (
        UniqueConstraint("redevable_id", "iban", name="uq_bank_account_redevable_iban"),
        Index("ix_bank_account_provider", "connection_id", "provider_account_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    redevable_id: Mapped[int] = mapped_column(
        ForeignKey("redevable.id", ondelete="RESTRICT"), index=True
    )
    #: The connection that currently brings this account (it changes on reconnection).
    connection_id: Mapped[int] = mapped_column(
        ForeignKey("bank_connection.id", ondelete="RESTRICT")
    )
    provider_account_id: Mapped[str] = mapped_column(String(64))
    #: Normalised (compact, upper case); None when the bank gives none.
    iban: Mapped[str | None] = mapped_column(String(34))
    bic: Mapped[str] = mapped_column(String(11), default="")
    label: Mapped[str] = mapped_column(String(200), default="")
    type: Mapped[str] = mapped_column(String(40), default="")
    currency: Mapped[str] = mapped_column(String(3), default="EUR")
    number: Mapped[str] = mapped_column(String(64), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    activated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    deactivated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: Set when the provider stops listing the account (or lists it as deleted).
    gone_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: Last successful transaction pull for this account.
    last_collected_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: Last booking date covered by a delivered statement (written by the statement builder).
    last_reported_date: Mapped[dt.date | None] = mapped_column(Date)
    #: Last re-attachment to a new connection: rows under the previous provider ids are
    #: re-keyed (not inserted again) for a while after it.
    reattached_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: Re-read transactions from this date at the next refresh (set on reactivation).
    backfill_from: Mapped[dt.date | None] = mapped_column(Date)
    #: Last balance reported by the bank, in minor units, and when it was read.
    balance: Mapped[int | None] = mapped_column(BigInteger)
    balance_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class BankEvent(Base):
    """One line of a connection's or an account's history (seed: "Détail d'un compte")."""

    __tablename__ = "bank_event"
    __table_args__ = (
        Index("ix_bank_event_account_at", "account_id", "at"),
        Index("ix_bank_event_connection_at", "connection_id", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    kind: Mapped[BankEventKind] = mapped_column(_enum(BankEventKind, "bank_event_kind"))
    connection_id: Mapped[int | None] = mapped_column(
        ForeignKey("bank_connection.id", ondelete="CASCADE")
    )
    account_id: Mapped[int | None] = mapped_column(
        ForeignKey("bank_account.id", ondelete="CASCADE")
    )
    old_value: Mapped[str | None] = mapped_column(String(200))
    new_value: Mapped[str | None] = mapped_column(String(200))
    error_code: Mapped[str | None] = mapped_column(String(40))
    #: French text shown in the history.
    message: Mapped[str] = mapped_column(Text, default="")


class BankTransaction(Base):
    """The current state of one transaction of a bank account, plus its reporting marks.

    Queries the statement builder relies on (each served by an index below):

    - to report: ``status = 'booked' AND reported_statement_id IS NULL AND booking_date <= D``;
    - the bank's balance at D: ``status = 'booked' AND booking_date > D`` (reported or not);
    - reported in S: ``reported_statement_id = S``;
    - corrections to announce: ``correction_pending`` (set by the sync when a reported row is
      deleted or changed; the builder clears it and sets ``correction_statement_id``).
    """

    __tablename__ = "bank_transaction"
    __table_args__ = (
        UniqueConstraint("account_id", "provider_id", name="uq_bank_transaction_provider"),
        Index(
            "ix_bank_transaction_to_report",
            "account_id",
            "status",
            "reported_statement_id",
            "booking_date",
        ),
        Index("ix_bank_transaction_booked", "account_id", "status", "booking_date"),
        Index("ix_bank_transaction_reported", "reported_statement_id"),
        Index("ix_bank_transaction_corrections", "account_id", "correction_pending"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("bank_account.id", ondelete="RESTRICT"))
    provider_id: Mapped[str] = mapped_column(String(64))
    #: The provider's account id the row was last seen under (changes on reconnection).
    provider_account_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[TransactionStatus] = mapped_column(
        _enum(TransactionStatus, "transaction_status")
    )
    booking_date: Mapped[dt.date] = mapped_column(Date)
    value_date: Mapped[dt.date | None] = mapped_column(Date)
    real_date: Mapped[dt.date | None] = mapped_column(Date)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    raw_label: Mapped[str] = mapped_column(String(500))
    type: Mapped[str] = mapped_column(String(40), default="")
    counterparty_label: Mapped[str | None] = mapped_column(String(200))
    counterparty_iban: Mapped[str | None] = mapped_column(String(34))
    reference: Mapped[str | None] = mapped_column(String(200))
    coming: Mapped[bool] = mapped_column(Boolean)
    #: The provider's deletion timestamp.
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    provider_last_update: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    first_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    #: When the latest version of the payload was received.
    last_change_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    #: When the row first became booked at our side.
    booked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: Last change of a reportable field (amount, dates, label) after the row was booked.
    changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: A pending row replaced by a booked row with another provider id.
    replaced_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("bank_transaction.id", ondelete="SET NULL")
    )
    #: The pending row this booked row replaces (the other end of ``replaced_by_id``).
    replaces_id: Mapped[int | None] = mapped_column(Integer)
    #: Latest provider payload (older ones are in ``bank_transaction_version``).
    raw: Mapped[str] = mapped_column(Text)
    payload_hash: Mapped[str] = mapped_column(String(64))
    #: Statement that reported the row (no foreign key yet: the statements table comes later).
    reported_statement_id: Mapped[int | None] = mapped_column(Integer)
    reported_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: Values as reported, to describe a later change (before/after).
    reported_amount: Mapped[int | None] = mapped_column(BigInteger)
    reported_booking_date: Mapped[dt.date | None] = mapped_column(Date)
    #: The row was deleted or changed after it was reported and no statement said so yet.
    correction_pending: Mapped[bool] = mapped_column(Boolean, default=False)
    correction_statement_id: Mapped[int | None] = mapped_column(Integer)


class BankTransactionVersion(Base):
    """Append-only archive: every distinct payload received for a transaction, when seen."""

    __tablename__ = "bank_transaction_version"
    __table_args__ = (Index("ix_bank_transaction_version_tx", "transaction_id", "seen_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    transaction_id: Mapped[int] = mapped_column(
        ForeignKey("bank_transaction.id", ondelete="CASCADE")
    )
    seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    provider_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[TransactionStatus] = mapped_column(
        _enum(TransactionStatus, "transaction_status")
    )
    booking_date: Mapped[dt.date] = mapped_column(Date)
    value_date: Mapped[dt.date | None] = mapped_column(Date)
    amount: Mapped[int] = mapped_column(BigInteger)
    raw_label: Mapped[str] = mapped_column(String(500))
    coming: Mapped[bool] = mapped_column(Boolean)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: True when the row had already been reported when this version was seen.
    after_report: Mapped[bool] = mapped_column(Boolean, default=False)
    raw: Mapped[str] = mapped_column(Text)

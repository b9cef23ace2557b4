"""Tables of EDI deposits: the files kept per account, what was read in them, the analyses."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Date, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from releves_mailer.db.base import Base, UTCDateTime

__all__ = [
    "EdiAnalysis",
    "EdiAnalysisLock",
    "EdiAutoDiscovery",
    "EdiDeclaration",
    "EdiDeposit",
]


class EdiDeposit(Base):
    """One deposit file of an account, kept once per content (its SHA-256)."""

    __tablename__ = "edi_deposit"
    __table_args__ = (UniqueConstraint("account_id", "sha256"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("portal_account.id", ondelete="CASCADE"), index=True
    )
    sha256: Mapped[str] = mapped_column(String(64))
    file_name: Mapped[str] = mapped_column(String(255))
    #: ``upload``, ``command`` or ``mail``.
    source: Mapped[str] = mapped_column(String(16))
    size: Mapped[int] = mapped_column(Integer)
    #: The interchange's reference (UNB 0020) and preparation date (UNB S004).
    reference: Mapped[str] = mapped_column(String(35))
    prepared_on: Mapped[dt.date] = mapped_column(Date)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class EdiDeclaration(Base):
    """One declaration read in a deposit: the company, the procedure, the period, the date."""

    __tablename__ = "edi_declaration"

    id: Mapped[int] = mapped_column(primary_key=True)
    deposit_id: Mapped[int] = mapped_column(
        ForeignKey("edi_deposit.id", ondelete="CASCADE"), index=True
    )
    #: The deposit's account, repeated so the analysis reads one table.
    account_id: Mapped[int] = mapped_column(ForeignKey("portal_account.id", ondelete="CASCADE"))
    procedure: Mapped[str] = mapped_column(String(16))
    form: Mapped[str] = mapped_column(String(35))
    siren: Mapped[str] = mapped_column(String(9))
    nic: Mapped[str] = mapped_column(String(5))
    company_name: Mapped[str] = mapped_column(String(350))
    period_start: Mapped[dt.date | None] = mapped_column(Date)
    period_end: Mapped[dt.date | None] = mapped_column(Date)
    deposited_on: Mapped[dt.date] = mapped_column(Date)


EDI_DECLARATION_WINDOW_INDEX = Index(
    "ix_edi_declaration_account_deposited",
    EdiDeclaration.account_id,
    EdiDeclaration.deposited_on,
)


class EdiAnalysis(Base):
    """One discovery run of an account: its window and what it did."""

    __tablename__ = "edi_analysis"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("portal_account.id", ondelete="CASCADE"), index=True
    )
    analysed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    #: First deposit date looked at (the previous analysis's date, or 18 months back).
    window_start: Mapped[dt.date] = mapped_column(Date)
    created: Mapped[int] = mapped_column(Integer)
    already_present: Mapped[int] = mapped_column(Integer)
    refused: Mapped[int] = mapped_column(Integer)


class EdiAnalysisLock(Base):
    """Held while an analysis of the account runs: two analyses of one account never overlap."""

    __tablename__ = "edi_analysis_lock"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("portal_account.id", ondelete="CASCADE"), primary_key=True
    )
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class EdiAutoDiscovery(Base):
    """The subscription option: the daemon analyses the account's new deposits by itself."""

    __tablename__ = "edi_auto_discovery"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("portal_account.id", ondelete="CASCADE"), primary_key=True
    )
    enabled_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

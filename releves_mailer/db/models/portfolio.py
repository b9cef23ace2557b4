"""Tables of the portfolio: portal accounts (primary and secondary) and their redevables."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Enum,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from releves_mailer.db.base import Base, UTCDateTime
from releves_mailer.enums import Periodicity, ReceptionMode

__all__ = ["Periodicity", "PortalAccount", "ReceptionMode", "Redevable"]


def _enum_values(enum_type: type[enum.Enum]) -> list[str]:
    return [str(member.value) for member in enum_type]


class PortalAccount(Base):
    """A login of the portal: a firm's primary account or one of its secondaries."""

    __tablename__ = "portal_account"

    id: Mapped[int] = mapped_column(primary_key=True)
    login: Mapped[str] = mapped_column(String(64), unique=True)
    company_name: Mapped[str] = mapped_column(String(70))
    siret: Mapped[str] = mapped_column(String(14))
    contact_name: Mapped[str] = mapped_column(String(100), default="")
    email: Mapped[str] = mapped_column(String(250))
    phone: Mapped[str] = mapped_column(String(30), default="")
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("portal_account.id", ondelete="RESTRICT"), index=True
    )
    subscribed: Mapped[bool] = mapped_column(Boolean, default=False)
    terms_accepted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    reception_mode: Mapped[ReceptionMode] = mapped_column(
        Enum(
            ReceptionMode,
            name="reception_mode",
            values_callable=_enum_values,
            native_enum=False,
            length=16,
        ),
        default=ReceptionMode.DEFAULT,
    )
    password_hash: Mapped[str] = mapped_column(String(200))
    #: False once deactivated (by its primary account): no login on any protocol.
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    parent: Mapped[PortalAccount | None] = relationship(remote_side=[id], lazy="raise")

    @property
    def is_primary(self) -> bool:
        return self.parent_id is None

    @property
    def family_id(self) -> int:
        """The primary account whose family (itself and its secondaries) this one is in."""
        return self.id if self.parent_id is None else self.parent_id


class Redevable(Base):
    """A client company whose bank statements are collected (Annexe 1 fields)."""

    __tablename__ = "redevable"
    __table_args__ = (
        # One SIRET at most once across a primary account and its secondaries.
        UniqueConstraint("family_id", "siren", "nic", name="uq_redevable_family_siret"),
        CheckConstraint("month IS NULL OR (month >= 1 AND month <= 12)", name="month_range"),
        CheckConstraint("day IS NULL OR (day >= 0 AND day <= 31)", name="day_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("portal_account.id", ondelete="RESTRICT"), index=True
    )
    #: The primary account of ``account_id``'s family, kept here so the SIRET rule is a
    #: database constraint and not a race between two writers.
    family_id: Mapped[int] = mapped_column(ForeignKey("portal_account.id", ondelete="RESTRICT"))
    siren: Mapped[str] = mapped_column(String(9), index=True)
    #: Empty string when absent, so that the uniqueness constraint sees it.
    nic: Mapped[str] = mapped_column(String(5), default="")
    company_name: Mapped[str] = mapped_column(String(35))
    company_name_2: Mapped[str] = mapped_column(String(35), default="")
    email: Mapped[str] = mapped_column(String(250), default="")
    periodicity: Mapped[Periodicity] = mapped_column(
        Enum(
            Periodicity,
            name="periodicity",
            values_callable=_enum_values,
            native_enum=False,
            length=16,
        )
    )
    month: Mapped[int | None] = mapped_column(Integer)
    day: Mapped[int | None] = mapped_column(Integer)
    remote_entry: Mapped[bool] = mapped_column(Boolean, default=False)
    no_auto_link: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Report pending ("coming") transactions too, as the seed does for daily statements;
    #: a later change or deletion of one of them then goes to the deleted-transactions CSV.
    include_pending: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Do not mail statements without movement (they are still produced and downloadable).
    skip_empty_mail: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    deactivated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    account: Mapped[PortalAccount] = relationship(foreign_keys=[account_id], lazy="raise")

    @property
    def siret(self) -> str:
        return self.siren + self.nic

    @property
    def full_company_name(self) -> str:
        return f"{self.company_name} {self.company_name_2}".strip()

"""Tables of the web portal: the server-side login sessions, the login guard's attempts, and
the indexes of its lists."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from releves_mailer.db.base import Base, UTCDateTime
from releves_mailer.db.models.statements import Statement

__all__ = ["LoginAttempt", "PortalSession"]


class PortalSession(Base):
    """A logged-in browser: only the SHA-256 of the cookie's random value is stored.

    A session ends at logout (row deleted), after ``IDLE_TIMEOUT`` without a request, or at
    ``expires_at`` (absolute limit), whichever comes first.
    """

    __tablename__ = "portal_session"

    #: SHA-256 (hex) of the cookie value.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("portal_account.id", ondelete="CASCADE"), index=True
    )
    #: The synchronizer token every form of this session must send back.
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class LoginAttempt(Base):
    """A failed login, or one being checked (``pending``), counted by the login guard.

    Kept in the database so that every daemon sharing it counts the same attempts. Rows
    older than the guard's window are deleted as new failures come; a ``pending`` row left
    by a worker that died is ignored after a few minutes.
    """

    __tablename__ = "login_attempt"
    __table_args__ = (Index("ix_login_attempt_key_at", "key", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    #: ``ip:ADDRESS``, ``ip:ADDRESS login:LOGIN`` or ``login:LOGIN``.
    key: Mapped[str] = mapped_column(String(400))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    pending: Mapped[bool] = mapped_column(Boolean, default=False)


#: The tracking page: newest first, filtered by redevable and state, read from the index alone
#: (SQLite keeps ``id`` last in every index; naming it keeps the order (created_at, id)).
STATEMENT_TRACKING_INDEX = Index(
    "ix_statement_tracking",
    Statement.created_at,
    Statement.id,
    Statement.redevable_id,
    Statement.state,
)

#: Statements not yet decided by the delivery (``delivery_box`` NULL; the produced ones among
#: them wait for their box): the delivery's queue, the home page's figure and the "non
#: déposé" filter read this partial index, a handful of rows in a running installation.
STATEMENT_UNDELIVERED_INDEX = Index(
    "ix_statement_undelivered",
    Statement.created_at,
    Statement.id,
    Statement.redevable_id,
    Statement.state,
    sqlite_where=Statement.delivery_box.is_(None),
    postgresql_where=Statement.delivery_box.is_(None),
)

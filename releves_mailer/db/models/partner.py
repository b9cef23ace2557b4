"""Tables of the partner mode: secure links sent to redevables and the watch of connections."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from releves_mailer.db.base import Base, UTCDateTime

__all__ = ["ConnectionWatch", "SecureLink"]


class SecureLink(Base):
    """A secure link ("jeton"): add bank accounts (``saisie``) or update a connection (``maj``).

    Only the SHA-256 of the token is stored. The state shown to users (valide / utilisé /
    expiré) derives from ``used_at`` and ``expires_at``.
    """

    __tablename__ = "secure_link"
    __table_args__ = (Index("ix_secure_link_redevable_created", "redevable_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    redevable_id: Mapped[int] = mapped_column(ForeignKey("redevable.id", ondelete="RESTRICT"))
    #: The connection to update (``maj``), or the one a ``saisie`` link created once used.
    connection_id: Mapped[int | None] = mapped_column(
        ForeignKey("bank_connection.id", ondelete="SET NULL"), index=True
    )
    #: ``saisie`` (add bank accounts) or ``maj`` (update a connection's credentials).
    kind: Mapped[str] = mapped_column(String(8))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: Who asked: ``auto`` (broken connection, consent renewal), ``manual`` (the account
    #: holder sent it) or ``login`` (the holder opens the webview himself, nothing is mailed).
    created_by: Mapped[str] = mapped_column(String(8))
    #: Why: an error code, ``consent`` (renewal before expiry) or empty.
    reason: Mapped[str] = mapped_column(String(40), default="")
    recipient: Mapped[str] = mapped_column(String(250))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    #: When the mail carrying the link was queued (None for ``login`` links).
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: Last opening (each opening mints a new aggregator code and a new ``state``).
    opened_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: Random nonce sent as the webview's ``state``; binds the callback to this link.
    state_nonce: Mapped[str | None] = mapped_column(String(64), unique=True)
    #: The provider the webview was opened with, and what it needs back at the callback
    #: (e.g. an aggregator user token), encrypted with the secrets key ring.
    partner: Mapped[str | None] = mapped_column(String(32))
    partner_data: Mapped[bytes | None] = mapped_column(LargeBinary)


class ConnectionWatch(Base):
    """What the alerts remember about one connection: the current error episode, consent."""

    __tablename__ = "connection_watch"

    connection_id: Mapped[int] = mapped_column(
        ForeignKey("bank_connection.id", ondelete="CASCADE"), primary_key=True
    )
    #: The connection's ``last_check_at`` already looked at (a replayed refresh is ignored).
    seen_check_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: Consecutive failures needing the client's action (reset by a success).
    action_failures: Mapped[int] = mapped_column(Integer, default=0)
    #: First failure of the current run of failures (None while the connection works).
    episode_started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: Last alert of the current episode and the error code it was about.
    alerted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    alerted_code: Mapped[str | None] = mapped_column(String(40))
    #: Last time the client went through the webview for this connection (consent given).
    credentials_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: PSD2 consent expiry as the aggregator last reported it, and the expiry a renewal link
    #: was already sent for.
    consent_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    consent_notice_for: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

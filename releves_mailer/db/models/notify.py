"""Table of the persistent outbox of mails to outside addresses."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Enum, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from releves_mailer.db.base import Base, UTCDateTime
from releves_mailer.db.claims import Claimable
from releves_mailer.enums import OutboxState

__all__ = ["OutboxMessage", "OutboxState"]


class OutboxMessage(Claimable, Base):
    """One mail to send, kept until the relay accepts it; survives restarts."""

    __tablename__ = "outbox_message"
    __table_args__ = (Index("ix_outbox_message_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    #: What the mail is about (``secure_link``, ``alert``, ``accounts_added``...).
    kind: Mapped[str] = mapped_column(String(40))
    #: Makes enqueueing idempotent: a second enqueue with the same key is ignored.
    dedup_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    sender: Mapped[str] = mapped_column(String(250))
    recipient: Mapped[str] = mapped_column(String(250))
    #: The portal box that receives a copy when no relay is configured.
    fallback_address: Mapped[str | None] = mapped_column(String(250))
    message_id: Mapped[str] = mapped_column(String(250))
    subject: Mapped[str] = mapped_column(String(500))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[OutboxState] = mapped_column(
        Enum(
            OutboxState,
            name="outbox_state",
            values_callable=lambda e: [str(m.value) for m in e],
            native_enum=False,
            length=16,
        ),
        default=OutboxState.PENDING,
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_error: Mapped[str] = mapped_column(Text, default="")
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

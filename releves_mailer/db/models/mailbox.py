"""Tables of the message store (owned by the mailbox area): folders, messages, subscriptions,
the Message-IDs delivered into each box, the UIDs expunged from each folder."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from releves_mailer.db.base import Base, UTCDateTime

__all__ = ["MailDelivered", "MailExpunged", "MailFolder", "MailMessage", "MailSubscription"]


class MailFolder(Base):
    """One IMAP mailbox of one mail user (``owner`` is the canonical lowercase address)."""

    __tablename__ = "mail_folder"
    __table_args__ = (UniqueConstraint("owner", "name", name="uq_mail_folder_owner_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(320))
    #: The name as IMAP clients see it (modified UTF-7), ``/`` as hierarchy separator.
    name: Mapped[str] = mapped_column(String(1000))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uidnext: Mapped[int] = mapped_column(BigInteger, default=1)
    highestmodseq: Mapped[int] = mapped_column(BigInteger, default=1)
    #: MODSEQ of the last expunge: a watcher whose view is older must reload its UID list.
    expunge_modseq: Mapped[int] = mapped_column(BigInteger, default=0)
    #: UIDs at or above this one are still \Recent for the next session that selects.
    recent_uid: Mapped[int] = mapped_column(BigInteger, default=1)
    special_use: Mapped[str] = mapped_column(String(40), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class MailMessage(Base):
    """One message in one folder; the raw bytes live in a content-addressed file (``blob``)."""

    __tablename__ = "mail_message"
    __table_args__ = (
        UniqueConstraint("folder_id", "uid", name="uq_mail_message_folder_uid"),
        Index("ix_mail_message_folder_modseq", "folder_id", "modseq"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    folder_id: Mapped[int] = mapped_column(ForeignKey("mail_folder.id", ondelete="CASCADE"))
    uid: Mapped[int] = mapped_column(BigInteger)
    modseq: Mapped[int] = mapped_column(BigInteger)
    #: System flags and keywords, space-separated, in a stable order.
    flags: Mapped[str] = mapped_column(String(4000), default="")
    internal_date: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    size: Mapped[int] = mapped_column(Integer)
    #: SHA-256 (hex) of the raw message: the file name under the store's blob directory.
    blob: Mapped[str] = mapped_column(String(64))
    #: The header section, byte for byte, for header searches and header fetches.
    header: Mapped[bytes] = mapped_column(LargeBinary)
    #: ENVELOPE, BODYSTRUCTURE and BODY as ready-to-send IMAP bytes, computed at delivery.
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    bodystructure: Mapped[bytes] = mapped_column(LargeBinary)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    #: Date header's wall-clock time in the sender's zone, labelled UTC (SENT* searches
    #: ignore zones); NULL when absent or unreadable.
    sent_date: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class MailSubscription(Base):
    """A LSUB entry: RFC 3501 lets a user subscribe to names that do not exist (yet)."""

    __tablename__ = "mail_subscription"
    __table_args__ = (UniqueConstraint("owner", "name", name="uq_mail_subscription_owner_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(1000))


class MailDelivered(Base):
    """A Message-ID delivered into a box: the idempotency key of a delivery. Kept when the
    message is later moved or deleted, so that a replayed delivery never brings it back."""

    __tablename__ = "mail_delivery"
    __table_args__ = (
        UniqueConstraint("owner", "message_id", name="uq_mail_delivery_owner_message_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(320))
    message_id: Mapped[str] = mapped_column(String(1000))
    delivered_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class MailExpunged(Base):
    """A UID expunged (or moved away) from a folder, with the MODSEQ of its expunge: what
    QRESYNC (RFC 7162) reports as VANISHED to a client that last saw an older MODSEQ."""

    __tablename__ = "mail_expunged"
    __table_args__ = (Index("ix_mail_expunged_folder_modseq", "folder_id", "modseq"),)

    folder_id: Mapped[int] = mapped_column(
        ForeignKey("mail_folder.id", ondelete="CASCADE"), primary_key=True
    )
    uid: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    modseq: Mapped[int] = mapped_column(BigInteger)

"""The delivery contract of the mailboxes: what writes into a local box asks of a sink.

:class:`~releves_mailer.mailbox.store.MessageStore` implements it (and a Maildir writer in
the tests); statement delivery (:mod:`releves_mailer.delivery`) and the outbox's local sink
(:mod:`releves_mailer.notify`) call it, and the daemon hands them the store. No storage
detail crosses it: the message, its box and its Message-ID (the idempotency key).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import NamedTuple, Protocol

__all__ = ["DeliveryReceipt", "MailDelivery", "MessageSink", "UnknownBox"]


class MailDelivery(NamedTuple):
    """One message of :meth:`MessageSink.deliver_many`: the arguments of ``deliver``."""

    address: str
    raw: bytes
    #: The idempotency key: one message per Message-ID in a box, however often delivered.
    message_id: str
    folder: str = "INBOX"
    flags: Sequence[str] = ()
    internal_date: dt.datetime | None = None


class DeliveryReceipt(NamedTuple):
    """What a sink did with one message."""

    #: The box's canonical (lowercase) address.
    box: str
    message_id: str
    #: ``False``: the box already held this Message-ID, nothing was stored again.
    stored: bool
    #: The message's UID when the sink numbers messages and stored it, else ``None``.
    uid: int | None = None


class UnknownBox(Exception):
    """The sink serves no box of that address; nothing of the delivery was stored."""


class MessageSink(Protocol):
    """Delivers raw RFC 5322 messages into local mailboxes; holds no caller's transaction.

    A delivery is idempotent by Message-ID: delivering again a Message-ID the box holds
    stores nothing (the receipt says so), even from several processes at once. A caller can
    therefore deliver first and record it afterwards: a crash in between only means a
    second delivery, which the sink absorbs.
    """

    async def deliver(
        self,
        address: str,
        raw: bytes,
        message_id: str,
        *,
        folder: str = "INBOX",
        flags: Sequence[str] = (),
        internal_date: dt.datetime | None = None,
    ) -> DeliveryReceipt:
        """Store ``raw`` in ``folder`` of ``address`` (created when missing), durably,
        unless the box already holds ``message_id``; :class:`UnknownBox` if ``address``
        is not served here."""
        ...

    async def deliver_many(self, items: Sequence[MailDelivery]) -> list[DeliveryReceipt]:
        """:meth:`deliver` of each item; the receipts in the order of ``items``. A box that is
        not served here refuses the whole batch before anything is stored. Cheaper than one
        ``deliver`` per message."""
        ...

    async def prepare(self, raw: bytes) -> None:
        """Optional head start for a coming delivery of ``raw`` in this process (e.g. its
        file written, its structure analysed); the delivery stays correct without it."""
        ...

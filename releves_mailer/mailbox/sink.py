"""The delivery contract of the mailboxes: what writes into a local box asks of the store.

:class:`~releves_mailer.mailbox.store.MessageStore` implements it; statement delivery
(:mod:`releves_mailer.delivery`) and the outbox's local sink (:mod:`releves_mailer.notify`)
call it, and the daemon hands them the store.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import NamedTuple, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["MailDelivery", "MessageSink"]


class MailDelivery(NamedTuple):
    """One message of :meth:`MessageSink.deliver_many`: the arguments of ``deliver``."""

    address: str
    raw: bytes
    folder: str = "INBOX"
    flags: Sequence[str] = ()
    internal_date: dt.datetime | None = None


class MessageSink(Protocol):
    """Delivers a raw RFC 5322 message into a local mailbox."""

    async def deliver(
        self,
        session: AsyncSession,
        address: str,
        raw: bytes,
        *,
        folder: str = "INBOX",
        flags: Sequence[str] = (),
        internal_date: dt.datetime | None = None,
    ) -> int:
        """Store ``raw`` in ``folder`` of ``address`` inside the caller's transaction.

        Returns the new message's UID. Sessions watching the folder are told once the
        caller's transaction commits, never before (a rolled-back delivery is invisible).
        """
        ...

    async def prepare(self, raw: bytes) -> None:
        """Optional head start, outside any transaction, for a coming delivery of ``raw`` in
        this process (its file written, its structure analysed); the delivery stays correct
        without it, and a prepared message never delivered costs nothing but disk space."""
        ...

    async def deliver_many(self, session: AsyncSession, items: Sequence[MailDelivery]) -> list[int]:
        """:meth:`deliver` of each item, in order, inside the caller's transaction.

        Returns the new UIDs in the order of ``items``; cheaper than one ``deliver`` per
        message (each folder is resolved once, takes its UIDs at once, rows go in together).
        """
        ...

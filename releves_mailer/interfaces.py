"""Contracts between the areas of the daemon, as ``typing.Protocol`` classes.

Adapters (IMAP, SMTP, HTTP) call these; the composition root (``daemon.py``) hands them
implementations. Contracts private to one area live in that area's package.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import NamedTuple, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["Authenticator", "MailDelivery", "MessageSink"]


class Authenticator(Protocol):
    """Checks mailbox credentials (IMAP LOGIN/AUTHENTICATE, SMTP AUTH)."""

    async def authenticate(self, username: str, password: str) -> str | None:
        """Return the canonical mail address the credentials open, or ``None``.

        ``username`` may be a bare login (``demo``) or an address (``demo@domain``,
        ``releves.demo@domain``); the dedicated box shares its account's password.
        Slow password hashing runs off the event loop.
        """
        ...

    async def is_local_address(self, address: str) -> bool:
        """Whether mail for ``address`` can be delivered into one of our boxes."""
        ...


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

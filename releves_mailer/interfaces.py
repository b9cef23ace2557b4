"""Contracts between the areas of the daemon, as ``typing.Protocol`` classes.

Adapters (IMAP, SMTP, HTTP) call these; the composition root (``daemon.py``) hands them
implementations. Contracts private to one area live in that area's package.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple, Protocol, TypeVar

__all__ = [
    "Authenticator",
    "DeliveryReceipt",
    "LocalBox",
    "LoginGuard",
    "LoginThrottled",
    "MailDelivery",
    "MessageSink",
    "UnknownBox",
]

T = TypeVar("T")


class LocalBox(NamedTuple):
    """A mail address served here: its canonical form, its account family, its kind."""

    address: str
    #: The primary account whose family (itself and its secondaries) owns the box.
    family_id: int
    #: ``releves.<login>@``: holds only what the daemon itself wrote.
    dedicated: bool


class Authenticator(Protocol):
    """Checks mailbox credentials (IMAP LOGIN/AUTHENTICATE, SMTP AUTH)."""

    async def authenticate(self, username: str, password: str) -> str | None:
        """Return the canonical mail address the credentials open, or ``None``.

        ``username`` may be a bare login (``demo``) or an address (``demo@domain``,
        ``releves.demo@domain``); the dedicated box shares its account's password.
        Slow password hashing runs off the event loop.
        """
        ...

    async def local_box(self, address: str) -> LocalBox | None:
        """The box ``address`` names, or ``None`` when it is not one of ours."""
        ...


class LoginThrottled(Exception):
    """Too many failed or pending logins: refused without checking the password."""


class LoginGuard(Protocol):
    """Limits password guessing, the same way for every protocol (IMAP, SMTP, portal)."""

    async def attempt(
        self, peer: str, username: str, verify: Callable[[], Awaitable[T | None]]
    ) -> T | None:
        """Run ``verify`` (the password check) for ``username`` from client address ``peer``.

        Returns what ``verify`` returned (``None``: wrong credentials, counted as a
        failure). Raises :class:`LoginThrottled`, without calling ``verify``, when ``peer``
        has too many failed or pending attempts; may wait before calling ``verify`` when
        the login has failed often lately.
        """
        ...


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

"""Contracts between the areas of the daemon, as ``typing.Protocol`` classes.

Adapters (IMAP, SMTP, HTTP) call these; the composition root (``daemon.py``) hands them
implementations. Contracts private to one area live in that area's package.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

__all__ = [
    "Authenticator",
    "LocalBox",
    "LoginGuard",
    "LoginThrottled",
    "MailDelivery",
    "MessageSink",
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

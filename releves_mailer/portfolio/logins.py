"""The login contracts: what the protocol servers (IMAP, SMTP, portal) ask of the accounts.

:mod:`releves_mailer.portfolio.auth` implements them (account passwords, local boxes, one
guard against password guessing for every protocol); the mailbox servers and the portal
call them, and the daemon hands them the implementations.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import NamedTuple, Protocol, TypeVar

__all__ = ["Authenticator", "LocalBox", "LoginGuard", "LoginThrottled"]

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

    async def credential_stamps(self, addresses: Collection[str]) -> dict[str, bytes]:
        """An opaque stamp of the current credentials of each address (as ``authenticate``
        returned it); an address whose account is gone or deactivated is left out.

        A mailbox session keeps the stamp of its login and ends when it changes: a
        password changed or an account deactivated closes the sessions it had opened.
        """
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

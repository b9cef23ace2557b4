"""The webmail's open IMAP connections and the passwords that open them, per portal session.

The account's password is needed to log in to its boxes. At the portal login it is encrypted
with the key ring and kept in memory only, under the portal session's id, until the session
ends (logout, expiry) or the daemon stops: it is never written anywhere. A connection is
kept per (session, box) so that a page costs no login (an argon2 hash on our server); it is
closed after ``IDLE_CLOSE`` without use, at logout, and when too many are open.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass

from releves_mailer.clock import Clock
from releves_mailer.signing.secrets import KeyRing, KeyRingError
from releves_mailer.webmail.imap import ImapBox, ImapEndpoint, LoginRefused, WebmailError

__all__ = ["NoPassword", "PasswordVault", "WebmailPool"]

#: A connection unused this long is closed.
IDLE_CLOSE = dt.timedelta(minutes=5)
#: Longest a password is kept (the portal session's own maximum age).
KEEP_AT_MOST = dt.timedelta(hours=12)
#: Most connections open at once (the least recently used idle one is closed first).
MAX_CONNECTIONS = 200


class NoPassword(WebmailError):
    """The session has no stored password (the daemon restarted since the login)."""


@dataclass
class _Secret:
    token: bytes
    expires_at: dt.datetime


class PasswordVault:
    """Session id -> the account's password, encrypted with the key ring, in memory only."""

    def __init__(self, keyring: KeyRing, clock: Clock) -> None:
        self._keyring = keyring
        self._clock = clock
        self._secrets: dict[str, _Secret] = {}

    def remember(self, session_id: str, password: str) -> None:
        now = self._clock.now()
        self._secrets = {k: v for k, v in self._secrets.items() if v.expires_at > now}
        self._secrets[session_id] = _Secret(self._keyring.encrypt(password), now + KEEP_AT_MOST)

    def password(self, session_id: str) -> str:
        found = self._secrets.get(session_id)
        if found is None or found.expires_at <= self._clock.now():
            raise NoPassword(
                "La messagerie demande votre mot de passe : déconnectez-vous puis reconnectez-"
                "vous au portail pour l'ouvrir."
            )
        try:
            return self._keyring.decrypt(found.token)
        except KeyRingError:
            self.forget(session_id)
            raise NoPassword(
                "Mot de passe de la messagerie illisible : reconnectez-vous."
            ) from None

    def forget(self, session_id: str) -> None:
        self._secrets.pop(session_id, None)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._secrets


@dataclass
class _Open:
    box: ImapBox
    last_used: dt.datetime
    session_id: str


class WebmailPool:
    """Opens, reuses and closes the IMAP connections of the portal sessions."""

    def __init__(self, endpoint: ImapEndpoint, vault: PasswordVault, clock: Clock) -> None:
        self.endpoint = endpoint
        self.vault = vault
        self.clock = clock
        self._open: dict[tuple[str, str], _Open] = {}
        self._opening = asyncio.Lock()
        #: One lock per (session, box) while its connection is opened.
        self._keys: dict[tuple[str, str], asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def box(self, session_id: str, username: str) -> AsyncIterator[ImapBox]:
        """The connection of ``session_id`` to ``username``'s box, locked for the caller.

        Only bookkeeping is done under the pool's lock: a slow login to one box (a password
        hash on the server) holds up that box alone.
        """
        key = (session_id, username)
        async with self._opening:
            await self._close_idle()
            opening = self._keys.setdefault(key, asyncio.Lock())
        async with opening:
            found = self._open.get(key)
            if found is None or found.box.broken:
                if found is not None:
                    await self._drop(key)
                password = self.vault.password(session_id)
                try:
                    box = await ImapBox.open(self.endpoint, username, password)
                except LoginRefused:
                    self.vault.forget(session_id)
                    raise
                found = _Open(box, self.clock.now(), session_id)
                self._open[key] = found
            found.last_used = self.clock.now()
        async with found.box.lock:
            try:
                yield found.box
            finally:
                found.last_used = self.clock.now()
                if found.box.broken and self._open.get(key) is found:
                    await self._drop(key)

    async def _drop(self, key: tuple[str, str]) -> None:
        found = self._open.pop(key, None)
        if found is not None:
            await found.box.close()

    async def _close_idle(self) -> None:
        now = self.clock.now()
        stale = [k for k, v in self._open.items() if now - v.last_used >= IDLE_CLOSE]
        if len(self._open) - len(stale) >= MAX_CONNECTIONS:
            by_age = sorted(self._open.items(), key=lambda item: item[1].last_used)
            stale.extend(k for k, v in by_age[: len(self._open) - MAX_CONNECTIONS + 1])
        for key in dict.fromkeys(stale):
            if not self._open[key].box.lock.locked():
                await self._drop(key)
        for key in [k for k, lock in self._keys.items() if k not in self._open]:
            if not self._keys[key].locked():
                del self._keys[key]

    async def end_session(self, session_id: str) -> None:
        """Logout: forget the password and close the session's connections."""
        self.vault.forget(session_id)
        async with self._opening:
            for key in [k for k, v in self._open.items() if v.session_id == session_id]:
                await self._drop(key)

    async def close(self) -> None:
        async with self._opening:
            for key in list(self._open):
                await self._drop(key)

    @property
    def open_count(self) -> int:
        return len(self._open)

"""Login sessions of the portal: server-side rows named by a random cookie value.

The cookie holds 256 random bits; the database keeps only their SHA-256, so a database leak
opens no session. A session ends at logout, after ``IDLE_TIMEOUT`` without a request, or
``MAX_AGE`` after the login.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select

from releves_mailer.clock import Clock
from releves_mailer.db import Database
from releves_mailer.db.models import PortalAccount, PortalSession
from releves_mailer.services.portfolio import AccountView, account_view

__all__ = ["IDLE_TIMEOUT", "MAX_AGE", "SessionStore", "UserSession", "session_id_of"]

IDLE_TIMEOUT = dt.timedelta(minutes=30)
MAX_AGE = dt.timedelta(hours=12)
#: ``last_seen_at`` is written at most this often (not at every page).
TOUCH_EVERY = dt.timedelta(minutes=1)


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def session_id_of(cookie_value: str) -> str:
    """The id under which the session named by a cookie value is stored."""
    return _hash(cookie_value)


@dataclass(frozen=True, slots=True)
class UserSession:
    """The logged-in account of a request and its session's CSRF token."""

    account: AccountView
    session_id: str
    csrf_token: str


class SessionStore:
    """Creates, finds (sliding the idle timeout) and ends sessions."""

    def __init__(self, database: Database, clock: Clock) -> None:
        self.database = database
        self.clock = clock

    async def create(self, account_id: int) -> str:
        """Open a session; returns the cookie value (the only clear copy)."""
        value = secrets.token_urlsafe(32)
        now = self.clock.now()
        async with self.database.session() as session:
            # Expired sessions of this account are removed as it logs in again.
            await session.execute(
                delete(PortalSession).where(
                    PortalSession.account_id == account_id,
                    (PortalSession.expires_at <= now)
                    | (PortalSession.last_seen_at <= now - IDLE_TIMEOUT),
                )
            )
            session.add(
                PortalSession(
                    id=_hash(value),
                    account_id=account_id,
                    # The synchronizer token of the session's forms.
                    csrf_token=secrets.token_urlsafe(32),
                    created_at=now,
                    last_seen_at=now,
                    expires_at=now + MAX_AGE,
                )
            )
        return value

    async def find(self, value: str) -> UserSession | None:
        """The live session of a cookie value, or None (unknown, idle too long, too old)."""
        if not value or len(value) > 100:
            return None
        now = self.clock.now()
        async with self.database.session() as session:
            row = (
                await session.execute(
                    select(PortalSession, PortalAccount)
                    .join(PortalAccount, PortalAccount.id == PortalSession.account_id)
                    .where(PortalSession.id == _hash(value))
                )
            ).first()
            if row is None:
                return None
            stored, account = row
            expired = now >= stored.expires_at or now - stored.last_seen_at >= IDLE_TIMEOUT
            if expired or not account.active:
                await session.delete(stored)
                return None
            if now - stored.last_seen_at >= TOUCH_EVERY:
                stored.last_seen_at = now
            return UserSession(account_view(account), stored.id, stored.csrf_token)

    async def end(self, session_id: str) -> None:
        async with self.database.session() as session:
            await session.execute(delete(PortalSession).where(PortalSession.id == session_id))

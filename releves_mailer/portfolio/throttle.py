"""Where the login guard counts attempts: in memory (one process) or in the database (shared).

:class:`~releves_mailer.portfolio.auth.PasswordGuard` keeps its rules; a store only counts,
per key (``ip:ADDRESS``, ``ip:ADDRESS login:LOGIN``, ``login:LOGIN``), the failures of the
last window and the attempts being checked. :class:`DatabaseGuardStore` keeps them in the
``login_attempt`` table, so that every daemon sharing the database answers with the same
counts; :class:`MemoryGuardStore` is the one-process store of the tests and tools.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import and_, delete, func, insert, or_, select, text

from releves_mailer.clock import Clock
from releves_mailer.db import Database
from releves_mailer.db.models import LoginAttempt

__all__ = ["DatabaseGuardStore", "GuardStore", "MemoryGuardStore"]

#: A pending attempt left by a worker that died stops counting after this long.
PENDING_LEASE = dt.timedelta(minutes=5)


class GuardStore(Protocol):
    """The login guard's counters."""

    async def enter(self, limits: Sequence[tuple[str, int]]) -> object | None:
        """When every key's failures plus pending attempts are below its limit, count one
        pending attempt on each key (atomically) and return a ticket for :meth:`leave`;
        otherwise count nothing and return ``None``."""
        ...

    async def leave(
        self, ticket: object, *, fail: Sequence[str] = (), forget: Sequence[str] = ()
    ) -> None:
        """The attempt of ``ticket`` is checked: it is no longer pending, and in the same step
        (no other attempt sees a count in between) a failure is counted on each key of
        ``fail`` and the failures of each key of ``forget`` are forgotten."""
        ...

    async def failures(self, key: str) -> int:
        """Failures of ``key`` in the window."""
        ...


class _Failures:
    """Recent failure times per key, bounded in keys (least recently failed go first)."""

    def __init__(self, clock: Clock, window: dt.timedelta, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._window = window
        self._max_keys = max_keys
        self._times: OrderedDict[str, deque[dt.datetime]] = OrderedDict()

    def count(self, key: str) -> int:
        times = self._times.get(key)
        if times is None:
            return 0
        horizon = self._clock.now() - self._window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._times[key]
        return len(times)

    def add(self, key: str) -> None:
        times = self._times.get(key)
        if times is None:
            times = self._times[key] = deque(maxlen=1024)
        else:
            self._times.move_to_end(key)
        times.append(self._clock.now())
        while len(self._times) > self._max_keys:  # a spray of logins cannot exhaust memory
            self._times.popitem(last=False)

    def forget(self, key: str) -> None:
        self._times.pop(key, None)


class MemoryGuardStore:
    """Counters of one process; a restart forgets them. No await inside a method: parallel
    attempts of the event loop see each other."""

    def __init__(self, clock: Clock, window: dt.timedelta) -> None:
        self._failures = _Failures(clock, window)
        self._pending: Counter[str] = Counter()

    def count(self, key: str) -> int:
        return self._failures.count(key)

    async def enter(self, limits: Sequence[tuple[str, int]]) -> object | None:
        if any(self._failures.count(key) + self._pending[key] >= limit for key, limit in limits):
            return None
        keys = tuple(key for key, _ in limits)
        self._pending.update(keys)
        return keys

    async def leave(
        self, ticket: object, *, fail: Sequence[str] = (), forget: Sequence[str] = ()
    ) -> None:
        assert isinstance(ticket, tuple)
        self._pending.subtract(ticket)
        for key in ticket:
            if self._pending[key] <= 0:
                del self._pending[key]
        for key in fail:
            self._failures.add(key)
        for key in forget:
            self._failures.forget(key)

    async def failures(self, key: str) -> int:
        return self._failures.count(key)


class DatabaseGuardStore:
    """Counters in the ``login_attempt`` table, shared by every daemon of the database.

    :meth:`enter` writes its pending rows before it counts, in one transaction: on SQLite
    the write takes the database lock, on PostgreSQL a transaction-level advisory lock per
    key (taken in key order) makes concurrent attempts on a key count one after the other,
    so parallel attempts from several workers cannot all slip under a limit.
    """

    def __init__(self, database: Database, clock: Clock, window: dt.timedelta) -> None:
        self._database = database
        self._clock = clock
        self._window = window

    def _counted(self, now: dt.datetime) -> object:
        return or_(
            and_(LoginAttempt.pending.is_(False), LoginAttempt.at > now - self._window),
            and_(LoginAttempt.pending.is_(True), LoginAttempt.at > now - PENDING_LEASE),
        )

    async def enter(self, limits: Sequence[tuple[str, int]]) -> object | None:
        now = self._clock.now()
        keys = sorted({key for key, _ in limits})
        async with self._database.session() as session:
            if not self._database.is_sqlite:
                for key in keys:
                    await session.execute(
                        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                        {"key": key},
                    )
            ids = list(
                (
                    await session.execute(
                        insert(LoginAttempt).returning(LoginAttempt.id),
                        [{"key": key, "at": now, "pending": True} for key, _ in limits],
                    )
                ).scalars()
            )
            rows = await session.execute(
                select(LoginAttempt.key, func.count())
                .where(LoginAttempt.key.in_(keys), self._counted(now))  # type: ignore[arg-type]
                .group_by(LoginAttempt.key)
            )
            counts: dict[str, int] = {key: count for key, count in rows}
            # Our own pending rows are counted: one less.
            if any(counts.get(key, 0) - 1 >= limit for key, limit in limits):
                await session.execute(delete(LoginAttempt).where(LoginAttempt.id.in_(ids)))
                return None
        return tuple(ids)

    async def leave(
        self, ticket: object, *, fail: Sequence[str] = (), forget: Sequence[str] = ()
    ) -> None:
        assert isinstance(ticket, tuple)
        now = self._clock.now()
        async with self._database.session() as session:
            await session.execute(delete(LoginAttempt).where(LoginAttempt.id.in_(ticket)))
            if fail:
                await session.execute(
                    insert(LoginAttempt),
                    [{"key": key, "at": now, "pending": False} for key in fail],
                )
                # Rows out of every window go as new ones come (indexed on ``at``).
                await session.execute(
                    delete(LoginAttempt).where(
                        or_(
                            and_(
                                LoginAttempt.pending.is_(False),
                                LoginAttempt.at <= now - self._window,
                            ),
                            and_(
                                LoginAttempt.pending.is_(True),
                                LoginAttempt.at <= now - PENDING_LEASE,
                            ),
                        )
                    )
                )
            if forget:
                await session.execute(
                    delete(LoginAttempt).where(
                        LoginAttempt.key.in_(list(forget)), LoginAttempt.pending.is_(False)
                    )
                )

    async def failures(self, key: str) -> int:
        now = self._clock.now()
        async with self._database.session() as session:
            count = await session.scalar(
                select(func.count()).where(
                    LoginAttempt.key == key,
                    LoginAttempt.pending.is_(False),
                    LoginAttempt.at > now - self._window,
                )
            )
        return int(count or 0)

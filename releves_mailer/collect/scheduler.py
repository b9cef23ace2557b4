"""Collection scheduler: when each connection is refreshed (pure planning, no database).

Planning is a pure function of (connection id, clock time, settings). Each connection gets a
fixed *base* offset inside the Paris night window (``[collection] window_start`` ..
``window_end``), derived from a hash of its id, so connections are spread over the window and
not all fired at the same minute. Each night a deterministic *jitter* of at most
+/- ``jitter_hours`` / 2 moves the slot (mirrored at the window's edges), so two consecutive
refreshes are ``refresh_hours`` (24 h) +/- ``jitter_hours`` (3 h) apart (one hour more or less
across a change of daylight saving time). ``refresh_hours`` below 24
adds slots every ``refresh_hours`` after the first one while inside the window; above 24, only
every ``refresh_hours / 24``-th night has a slot.

A refresh is due when the latest slot at or before now is later than the connection's last
check. A failed refresh is retried every ``retry_minutes`` until the window closes.

The runner doing the due work is :meth:`releves_mailer.collect.service.CollectionService.run_due`.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from dataclasses import dataclass

from releves_mailer.clock import PARIS
from releves_mailer.config import CollectionSection
from releves_mailer.statements.plan import StatementTiming

__all__ = [
    "ConnectionClock",
    "RefreshPlan",
    "is_refresh_due",
    "next_refresh",
    "refresh_slots",
]

#: Connections refreshed in one write transaction by default.
REFRESH_BATCH = 20


def _stable(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class RefreshPlan:
    """The refresh timing of ``[collection]``."""

    window_start: dt.time = dt.time(0, 0)
    window_end: dt.time = dt.time(6, 0)
    refresh_hours: int = 24
    jitter_hours: int = 3
    max_concurrency_per_provider: int = 4
    retry_minutes: int = 60
    #: Connections refreshed in one write transaction.
    refresh_batch: int = REFRESH_BATCH
    #: Lease of a worker's claim on a refresh or a cut (several daemons on one database).
    claim_lease_seconds: int = 300

    @classmethod
    def from_config(cls, section: CollectionSection) -> RefreshPlan:
        return cls(
            window_start=section.window_start,
            window_end=section.window_end,
            refresh_hours=section.refresh_hours,
            jitter_hours=section.jitter_hours,
            max_concurrency_per_provider=section.max_concurrency_per_provider,
            claim_lease_seconds=section.claim_lease_seconds,
        )

    @property
    def window_seconds(self) -> int:
        start = self.window_start.hour * 3600 + self.window_start.minute * 60
        end = self.window_end.hour * 3600 + self.window_end.minute * 60
        return (end - start) % 86_400 or 86_400

    def window_bounds(self, night: dt.date) -> tuple[dt.datetime, dt.datetime]:
        """UTC start and end of the window opening on the Paris date ``night``."""
        start = dt.datetime.combine(night, self.window_start, tzinfo=PARIS).astimezone(dt.UTC)
        return start, start + dt.timedelta(seconds=self.window_seconds)

    @property
    def lease(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.claim_lease_seconds)

    @property
    def timing(self) -> StatementTiming:
        return StatementTiming(window_end=self.window_end)


@functools.lru_cache(maxsize=16_384)
def refresh_slots(connection_id: int, night: dt.date, plan: RefreshPlan) -> tuple[dt.datetime, ...]:
    """The refresh instants (UTC) of a connection in the window opening on ``night``.

    Memoised: the runner asks every few minutes for every connection, and the answer is a
    pure function of its arguments (two hashes and time zone arithmetic each time otherwise).
    """
    length = plan.window_seconds
    every_nights = max(1, plan.refresh_hours // 24) if plan.refresh_hours >= 24 else 1
    base = _stable(f"slot:{connection_id}") % length
    if every_nights > 1 and (night.toordinal() + base) % every_nights:
        return ()
    span = plan.jitter_hours * 3600
    nightly = _stable(f"jitter:{connection_id}:{night.isoformat()}")
    if span < length:
        # Mirrored at the window's edges, not clamped: clamping would pile connections up on
        # the edges, mirroring keeps them evenly spread and moves a slot no more than the
        # jitter does (two refreshes stay 24 h +/- ``jitter_hours`` apart).
        offset = base + nightly % (span + 1) - span // 2
        if offset < 0:
            offset = -offset
        elif offset >= length:
            offset = 2 * (length - 1) - offset
    else:
        # A window shorter than the jitter: anywhere in it, each night.
        offset = nightly % length
    start, _end = plan.window_bounds(night)
    slots = [start + dt.timedelta(seconds=offset)]
    if plan.refresh_hours < 24:
        step = plan.refresh_hours * 3600
        extra = offset + step
        while extra < length:
            slots.append(start + dt.timedelta(seconds=extra))
            extra += step
    return tuple(slots)


def _latest_slot(
    connection_id: int, now: dt.datetime, plan: RefreshPlan
) -> tuple[dt.datetime, dt.datetime] | None:
    """The latest slot at or before ``now`` and the end of its window."""
    today = now.astimezone(PARIS).date()
    found: tuple[dt.datetime, dt.datetime] | None = None
    # A window may open on the previous Paris date (e.g. 22:00-06:00); a refresh every N
    # nights needs N nights back.
    back = max(2, plan.refresh_hours // 24 + 1)
    for offset in range(back, -1, -1):
        night = today - dt.timedelta(days=offset)
        for slot in refresh_slots(connection_id, night, plan):
            if slot <= now and (found is None or slot > found[0]):
                found = (slot, plan.window_bounds(night)[1])
    return found


@dataclass(frozen=True, slots=True)
class ConnectionClock:
    """What planning needs to know about a connection."""

    connection_id: int
    last_check_at: dt.datetime | None
    last_success_at: dt.datetime | None


def is_refresh_due(connection: ConnectionClock, now: dt.datetime, plan: RefreshPlan) -> bool:
    """Whether the connection must be refreshed at ``now``."""
    if connection.last_check_at is None:
        return True  # never checked: right away (just connected)
    latest = _latest_slot(connection.connection_id, now, plan)
    if latest is None:
        return False
    slot, closes = latest
    if connection.last_check_at < slot:
        return True
    if connection.last_success_at is not None and connection.last_success_at >= slot:
        return False
    # Failed at this slot: retry while its window is open.
    retry = dt.timedelta(minutes=plan.retry_minutes)
    return now < closes and now - connection.last_check_at >= retry


def next_refresh(connection: ConnectionClock, now: dt.datetime, plan: RefreshPlan) -> dt.datetime:
    """When the connection will next be refreshed (``now`` when it is due)."""
    if is_refresh_due(connection, now, plan):
        return now
    today = now.astimezone(PARIS).date()
    for offset in range(-1, plan.refresh_hours // 24 + 3):
        for slot in refresh_slots(
            connection.connection_id, today + dt.timedelta(days=offset), plan
        ):
            if slot > now:
                return slot
    raise AssertionError("no refresh slot found")  # pragma: no cover

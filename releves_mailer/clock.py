"""Injectable clock: every reading of the current time in the package goes through it.

At the package root: every area reads the time, and only through this.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol
from zoneinfo import ZoneInfo

__all__ = ["PARIS", "Clock", "ManualClock", "SystemClock", "business_today"]

#: Business dates (periodicities, statement cut-off, link expiry shown to users) are Paris dates.
PARIS = ZoneInfo("Europe/Paris")


class Clock(Protocol):
    """Source of the current time."""

    def now(self) -> dt.datetime:
        """Return the current time, timezone-aware, in UTC."""
        ...


def business_today(clock: Clock) -> dt.date:
    """Return today's date in Europe/Paris according to ``clock``."""
    return clock.now().astimezone(PARIS).date()


class SystemClock:
    """The wall clock."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


class ManualClock:
    """A clock that only moves when told to: used by tests and by the simulator."""

    def __init__(self, start: dt.datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware datetime")
        self._now = start.astimezone(dt.UTC)

    def now(self) -> dt.datetime:
        return self._now

    def set(self, when: dt.datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware datetime")
        self._now = when.astimezone(dt.UTC)

    def advance(self, delta: dt.timedelta) -> None:
        self._now += delta

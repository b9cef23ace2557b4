"""Statement dates: due dates of a schedule, where a first period starts, the night after D.

Pure rules (no database): what is due when.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
from dataclasses import dataclass

from releves_mailer.clock import PARIS
from releves_mailer.enums import Periodicity
from releves_mailer.portfolio.periodicity import Schedule

__all__ = [
    "StatementTiming",
    "checked_schedule",
    "due_dates",
    "first_period_start",
    "month_before",
    "paris_date",
    "paris_midnight",
]


def month_before(day: dt.date) -> dt.date:
    """The same day one month earlier, clamped to the month's length (31/03 -> 28/02)."""
    year, month = (day.year, day.month - 1) if day.month > 1 else (day.year - 1, 12)
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def paris_date(moment: dt.datetime) -> dt.date:
    return moment.astimezone(PARIS).date()


def first_period_start(activated_at: dt.datetime, due: dt.date) -> dt.date:
    """Where the first statement of an account starts: one month before its activation.

    The manual ("Premiers relevés"): monthly, activated 05/09, due 05/09 -> 06/08..05/09;
    quarterly [Mois=1][Jour=1], activated 05/09, first due 01/10 -> 06/08..01/10. Everything
    booked after that start is in exactly one statement, whatever the periodicity. A due
    date before the activation (never planned, but a reactivation may race a cut) still
    gets a month.
    """
    return month_before(min(paris_date(activated_at), due))


def paris_midnight(day: dt.date) -> dt.datetime:
    """The UTC instant at which ``day`` starts in Paris."""
    return dt.datetime.combine(day, dt.time(), tzinfo=PARIS).astimezone(dt.UTC)


@dataclass(frozen=True, slots=True)
class StatementTiming:
    """When the night after a due date ends (from ``[collection]``)."""

    window_end: dt.time = dt.time(6, 0)

    def deadline(self, due: dt.date) -> dt.datetime:
        """After this instant a statement still without fresh data is reported as late."""
        moment = dt.datetime.combine(due + dt.timedelta(days=1), self.window_end, tzinfo=PARIS)
        return moment.astimezone(dt.UTC)


@functools.lru_cache(maxsize=65_536)
def due_dates(
    schedule: Schedule, *, after: dt.date | None, not_before: dt.date, before: dt.date
) -> tuple[dt.date, ...]:
    """Due dates D of ``schedule`` with ``after`` < D, ``not_before`` <= D < ``before``.

    Memoised: the runner asks for every account every few minutes, with the same answer all
    day long (and the same for every account of a redevable).
    """
    start = not_before - dt.timedelta(days=1)
    if after is not None and after > start:
        start = after
    found: list[dt.date] = []
    current = schedule.next_due(start)
    while current < before:
        found.append(current)
        current = schedule.next_due(current)
    return tuple(found)


@functools.lru_cache(maxsize=4_096)
def checked_schedule(periodicity: Periodicity, month: int | None, day: int | None) -> Schedule:
    """The redevable's schedule (memoised: every account of a redevable asks for it)."""
    return Schedule.checked(periodicity, month, day)

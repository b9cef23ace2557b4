"""Scheduled connection errors of the test bank: ``CODE@YYYY-MM-DD[..YYYY-MM-DD]``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from releves_mailer.collect.errors import ERROR_CODES, normalise_error_code
from releves_mailer.errors import UserError

__all__ = ["ScheduledError", "active_error", "parse_error_schedule", "parse_scheduled_error"]


@dataclass(frozen=True, slots=True)
class ScheduledError:
    """The connection is in state ``code`` on every Paris date from ``start`` to ``end``."""

    code: str
    start: dt.date
    end: dt.date

    def covers(self, day: dt.date) -> bool:
        return self.start <= day <= self.end

    def __str__(self) -> str:
        if self.start == self.end:
            return f"{self.code}@{self.start.isoformat()}"
        return f"{self.code}@{self.start.isoformat()}..{self.end.isoformat()}"


def _date(text: str, value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise UserError(
            f"erreur programmée « {value} » : date invalide « {text} » (attendu AAAA-MM-JJ)",
            field="error",
        ) from None


def parse_scheduled_error(value: str) -> ScheduledError:
    """Parse one ``CODE@DATE`` or ``CODE@DATE..DATE``; refuse with a French message."""
    text = value.strip()
    code, at, period = text.partition("@")
    if not at or not code or not period:
        raise UserError(
            f"erreur programmée « {value} » : format attendu CODE@AAAA-MM-JJ[..AAAA-MM-JJ]",
            field="error",
        )
    canonical = normalise_error_code(code.strip())
    if canonical is None:
        known = ", ".join(ERROR_CODES)
        raise UserError(
            f"erreur programmée « {value} » : code « {code} » inconnu (codes : {known})",
            field="error",
        )
    first, dots, last = period.partition("..")
    start = _date(first.strip(), value)
    end = _date(last.strip(), value) if dots else start
    if end < start:
        raise UserError(
            f"erreur programmée « {value} » : la fin de la période précède son début",
            field="error",
        )
    return ScheduledError(canonical, start, end)


def parse_error_schedule(values: Iterable[str]) -> tuple[ScheduledError, ...]:
    """Parse every entry of a list (config ``aggregator.testbank.errors`` or ``--error``)."""
    return tuple(parse_scheduled_error(value) for value in values)


def active_error(schedule: Iterable[ScheduledError], day: dt.date) -> ScheduledError | None:
    """The scheduled error covering ``day``; the latest-starting one wins on overlaps."""
    found: ScheduledError | None = None
    for entry in schedule:
        if entry.covers(day) and (found is None or entry.start >= found.start):
            found = entry
    return found

"""When statements are due: the Annexe 1 periodicities with their month and day fields.

Annexe 1 semantics, made exact:

- ``JOURNALIERE``: due every calendar day; month and day not expected.
- ``HEBDOMADAIRE``: day 1 (Sunday) .. 7 (Saturday); month not expected.
- ``MENSUELLE``: day 1..28, or 0 for the last day of the month; month not expected.
- ``TRIMESTRIELLE``: month 1..3 within each quarter, day 1..28 or 0.
- ``SEMESTRIELLE``: month 1..6 within each half-year, day 1..28 or 0.
- ``ANNUELLE``: month 1..12, day 1..31, clamped to the month's length (31 in February is the
  28th, or the 29th in a leap year).
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from releves_mailer.enums import Periodicity
from releves_mailer.errors import UserError

__all__ = ["Periodicity", "Schedule", "ScheduleFields"]

_MONTHS_IN_CYCLE = {
    Periodicity.MENSUELLE: 1,
    Periodicity.TRIMESTRIELLE: 3,
    Periodicity.SEMESTRIELLE: 6,
    Periodicity.ANNUELLE: 12,
}
_WEEKDAYS = ["dimanche", "lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi"]
_MONTH_NAMES = [
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
]


def _last_day(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


class ScheduleFields(Protocol):
    """What carries a schedule: a redevable, or a row read from one."""

    @property
    def periodicity(self) -> Periodicity: ...

    @property
    def month(self) -> int | None: ...

    @property
    def day(self) -> int | None: ...


@dataclass(frozen=True)
class Schedule:
    """A validated periodicity with its month and day (``None`` where not expected)."""

    periodicity: Periodicity
    month: int | None = None
    day: int | None = None

    @classmethod
    def for_redevable(cls, redevable: ScheduleFields) -> Schedule:
        """The schedule of ``redevable`` (validated when it was written)."""
        return cls(Periodicity(redevable.periodicity), redevable.month, redevable.day)

    @classmethod
    def checked(
        cls, periodicity: Periodicity | str, month: int | None, day: int | None
    ) -> Schedule:
        """Validate the Annexe 1 rules; :class:`UserError` names the first faulty field."""
        problems = cls.problems(periodicity, month, day)
        if problems:
            raise problems[0]
        return cls(Periodicity(periodicity), month, day)

    @staticmethod
    def problems(
        periodicity: Periodicity | str, month: int | None, day: int | None
    ) -> list[UserError]:
        """Every broken Annexe 1 rule, each naming its field (empty when valid)."""
        try:
            kind = Periodicity(periodicity)
        except ValueError:
            allowed = ", ".join(p.value for p in Periodicity)
            return [
                UserError(
                    f"périodicité inconnue « {periodicity} » (attendu : {allowed})",
                    field="periodicity",
                )
            ]
        found: list[UserError] = []
        cycle = _MONTHS_IN_CYCLE.get(kind)
        if cycle is None or cycle == 1:
            if month is not None:
                found.append(
                    UserError(f"mois non attendu pour la périodicité {kind}", field="month")
                )
        elif month is None:
            found.append(
                UserError(
                    f"mois obligatoire pour la périodicité {kind} (1 à {cycle})", field="month"
                )
            )
        elif not 1 <= month <= cycle:
            found.append(
                UserError(
                    f"mois {month} hors limites pour la périodicité {kind} (1 à {cycle})",
                    field="month",
                )
            )
        if kind is Periodicity.JOURNALIERE:
            if day is not None:
                found.append(
                    UserError("jour non attendu pour la périodicité JOURNALIERE", field="day")
                )
        elif day is None:
            found.append(UserError(f"jour obligatoire pour la périodicité {kind}", field="day"))
        elif kind is Periodicity.HEBDOMADAIRE:
            if not 1 <= day <= 7:
                found.append(
                    UserError(f"jour {day} hors limites : 1 (dimanche) à 7 (samedi)", field="day")
                )
        elif kind is Periodicity.ANNUELLE:
            if not 1 <= day <= 31:
                found.append(UserError(f"jour {day} hors limites : 1 à 31", field="day"))
        elif not 0 <= day <= 28:
            found.append(
                UserError(
                    f"jour {day} hors limites : 1 à 28, ou 0 pour le dernier jour du mois",
                    field="day",
                )
            )
        return found

    def _day_in(self, year: int, month: int) -> int:
        """The due day of the month for month-based periodicities."""
        assert self.day is not None
        last = _last_day(year, month)
        return last if self.day == 0 else min(self.day, last)

    def _month_matches(self, month: int) -> bool:
        cycle = _MONTHS_IN_CYCLE[self.periodicity]
        return cycle == 1 or (month - 1) % cycle + 1 == self.month

    def is_due(self, date: dt.date) -> bool:
        """Whether a statement is due on ``date``."""
        if self.periodicity is Periodicity.JOURNALIERE:
            return True
        if self.periodicity is Periodicity.HEBDOMADAIRE:
            assert self.day is not None
            return date.isoweekday() % 7 + 1 == self.day
        return self._month_matches(date.month) and date.day == self._day_in(date.year, date.month)

    def next_due(self, after: dt.date) -> dt.date:
        """The first due date strictly after ``after``."""
        if self.periodicity is Periodicity.JOURNALIERE:
            return after + dt.timedelta(days=1)
        if self.periodicity is Periodicity.HEBDOMADAIRE:
            assert self.day is not None
            target = (self.day - 2) % 7  # Python weekday: Monday = 0
            return after + dt.timedelta(days=(target - after.weekday() - 1) % 7 + 1)
        year, month = after.year, after.month
        while True:
            if self._month_matches(month):
                candidate = dt.date(year, month, self._day_in(year, month))
                if candidate > after:
                    return candidate
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)

    def describe(self) -> str:
        """French wording of the schedule, as the portal shows it."""
        kind = self.periodicity
        if kind is Periodicity.JOURNALIERE:
            return "Journalière"
        if kind is Periodicity.HEBDOMADAIRE:
            assert self.day is not None
            return f"Hebdomadaire, le {_WEEKDAYS[self.day - 1]}"
        day = "le dernier jour" if self.day == 0 else f"le {self.day}"
        if kind is Periodicity.MENSUELLE:
            return f"Mensuelle, {day} du mois"
        if kind is Periodicity.ANNUELLE:
            assert self.month is not None
            return f"Annuelle, {day} {_MONTH_NAMES[self.month - 1]}"
        label = "Trimestrielle" if kind is Periodicity.TRIMESTRIELLE else "Semestrielle"
        return f"{label}, {day} du mois {self.month} de la période"

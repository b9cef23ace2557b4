"""Due dates of every Annexe 1 schedule, checked day by day over eight years."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator

import pytest

from releves_mailer.errors import UserError
from releves_mailer.portfolio.periodicity import Periodicity, Schedule

START = dt.date(2023, 12, 1)
END = dt.date(2031, 1, 31)  # covers the leap years 2024 and 2028


def days(start: dt.date = START, end: dt.date = END) -> Iterator[dt.date]:
    current = start
    while current <= end:
        yield current
        current += dt.timedelta(days=1)


def every_schedule() -> Iterator[Schedule]:
    yield Schedule.checked("JOURNALIERE", None, None)
    for day in range(1, 8):
        yield Schedule.checked("HEBDOMADAIRE", None, day)
    for day in range(0, 29):
        yield Schedule.checked("MENSUELLE", None, day)
        for month in range(1, 4):
            yield Schedule.checked("TRIMESTRIELLE", month, day)
        for month in range(1, 7):
            yield Schedule.checked("SEMESTRIELLE", month, day)
    for month in range(1, 13):
        for day in range(1, 32):
            yield Schedule.checked("ANNUELLE", month, day)


def oracle(schedule: Schedule, date: dt.date) -> bool:
    """An independent reading of Annexe 1, written without the module's arithmetic."""
    tomorrow = date + dt.timedelta(days=1)
    is_last_day = tomorrow.month != date.month
    french_weekday = ["lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"]
    annexe_days = {
        "dimanche": 1,
        "lundi": 2,
        "mardi": 3,
        "mercredi": 4,
        "jeudi": 5,
        "vendredi": 6,
        "samedi": 7,
    }
    kind = schedule.periodicity
    if kind is Periodicity.JOURNALIERE:
        return True
    if kind is Periodicity.HEBDOMADAIRE:
        return annexe_days[french_weekday[date.weekday()]] == schedule.day
    months = {
        Periodicity.MENSUELLE: set(range(1, 13)),
        Periodicity.TRIMESTRIELLE: {
            schedule.month,
            (schedule.month or 0) + 3,
            (schedule.month or 0) + 6,
            (schedule.month or 0) + 9,
        },
        Periodicity.SEMESTRIELLE: {schedule.month, (schedule.month or 0) + 6},
        Periodicity.ANNUELLE: {schedule.month},
    }[kind]
    if date.month not in months:
        return False
    if schedule.day == 0:
        return is_last_day
    if kind is Periodicity.ANNUELLE and schedule.day is not None and schedule.day > date.day:
        # Day beyond the month's end: due on its last day.
        return is_last_day
    return date.day == schedule.day


ALL_SCHEDULES = list(every_schedule())


def test_schedule_count_covers_every_variant() -> None:
    # 1 daily + 7 weekly + 29 monthly + 87 quarterly + 174 half-yearly + 372 yearly
    assert len(ALL_SCHEDULES) == 1 + 7 + 29 + 87 + 174 + 372


@pytest.mark.parametrize(
    "schedule", ALL_SCHEDULES, ids=lambda s: f"{s.periodicity}-{s.month}-{s.day}"
)
def test_is_due_and_next_match_the_oracle(schedule: Schedule) -> None:
    all_days = list(days())
    due = [d for d in all_days if oracle(schedule, d)]
    assert [d for d in all_days if schedule.is_due(d)] == due
    assert due, "every schedule is due at least once in eight years"
    # next_due(d) is the first due date strictly after d.
    for earlier, later in itertools.pairwise(due):
        assert schedule.next_due(earlier) == later
        middle = earlier + (later - earlier) // 2
        if earlier < middle < later:
            assert schedule.next_due(middle) == later


def test_month_ends_and_leap_years() -> None:
    end_of_month = Schedule.checked("MENSUELLE", None, 0)
    assert end_of_month.next_due(dt.date(2024, 1, 31)) == dt.date(2024, 2, 29)
    assert end_of_month.next_due(dt.date(2025, 1, 31)) == dt.date(2025, 2, 28)
    yearly_31_feb = Schedule.checked("ANNUELLE", 2, 31)
    assert yearly_31_feb.next_due(dt.date(2027, 3, 1)) == dt.date(2028, 2, 29)
    quarterly = Schedule.checked("TRIMESTRIELLE", 3, 0)
    assert quarterly.next_due(dt.date(2026, 1, 1)) == dt.date(2026, 3, 31)
    assert quarterly.next_due(dt.date(2026, 3, 31)) == dt.date(2026, 6, 30)
    weekly_sunday = Schedule.checked("HEBDOMADAIRE", None, 1)
    assert weekly_sunday.next_due(dt.date(2026, 11, 26)) == dt.date(2026, 11, 29)
    assert weekly_sunday.next_due(dt.date(2026, 11, 29)) == dt.date(2026, 12, 6)


@pytest.mark.parametrize(
    ("periodicity", "month", "day", "field", "words"),
    [
        ("MENSUEL", None, 1, "periodicity", "inconnue"),
        ("JOURNALIERE", None, 3, "day", "non attendu"),
        ("JOURNALIERE", 2, None, "month", "non attendu"),
        ("HEBDOMADAIRE", None, 0, "day", "1 (dimanche) à 7"),
        ("HEBDOMADAIRE", None, 8, "day", "hors limites"),
        ("HEBDOMADAIRE", None, None, "day", "obligatoire"),
        ("MENSUELLE", 1, 5, "month", "non attendu"),
        ("MENSUELLE", None, 29, "day", "1 à 28"),
        ("TRIMESTRIELLE", 4, 1, "month", "1 à 3"),
        ("TRIMESTRIELLE", None, 1, "month", "obligatoire"),
        ("SEMESTRIELLE", 7, 1, "month", "1 à 6"),
        ("ANNUELLE", 13, 1, "month", "1 à 12"),
        ("ANNUELLE", 1, 0, "day", "1 à 31"),
        ("ANNUELLE", 1, 32, "day", "1 à 31"),
    ],
)
def test_invalid_schedules_name_the_field(
    periodicity: str, month: int | None, day: int | None, field: str, words: str
) -> None:
    with pytest.raises(UserError) as caught:
        Schedule.checked(periodicity, month, day)
    assert caught.value.field == field
    assert words in caught.value.message


def test_describe_in_french() -> None:
    assert Schedule.checked("HEBDOMADAIRE", None, 2).describe() == "Hebdomadaire, le lundi"
    assert Schedule.checked("MENSUELLE", None, 0).describe() == "Mensuelle, le dernier jour du mois"
    assert Schedule.checked("ANNUELLE", 12, 31).describe() == "Annuelle, le 31 décembre"

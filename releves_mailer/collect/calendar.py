"""French bank business days: weekends and the national public holidays (Easter-based ones too).

No installed library provides French holidays (python-stdnum has none), so they are computed
here. The list is the eleven national public holidays of metropolitan France (Code du travail,
article L3133-1); banks are closed on them. Good Friday and 26 December are holidays only in
Alsace-Moselle and are not included. Whit Monday is included: banks close on it even though it
may be a "journée de solidarité" for other employers.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

__all__ = [
    "add_business_days",
    "easter_sunday",
    "french_holidays",
    "is_business_day",
    "next_business_day",
    "previous_business_day",
]


def easter_sunday(year: int) -> dt.date:
    """Gregorian Easter Sunday (the anonymous "Meeus/Jones/Butcher" algorithm)."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    leap = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * leap) // 451
    month, day = divmod(h + leap - 7 * m + 114, 31)
    return dt.date(year, month, day + 1)


@lru_cache(maxsize=256)
def french_holidays(year: int) -> frozenset[dt.date]:
    """The national public holidays of ``year`` in metropolitan France."""
    easter = easter_sunday(year)
    return frozenset(
        {
            dt.date(year, 1, 1),  # Jour de l'an
            easter + dt.timedelta(days=1),  # Lundi de Pâques
            dt.date(year, 5, 1),  # Fête du travail
            dt.date(year, 5, 8),  # Victoire 1945
            easter + dt.timedelta(days=39),  # Ascension
            easter + dt.timedelta(days=50),  # Lundi de Pentecôte
            dt.date(year, 7, 14),  # Fête nationale
            dt.date(year, 8, 15),  # Assomption
            dt.date(year, 11, 1),  # Toussaint
            dt.date(year, 11, 11),  # Armistice 1918
            dt.date(year, 12, 25),  # Noël
        }
    )


def is_business_day(day: dt.date) -> bool:
    """True from Monday to Friday, except French public holidays."""
    return day.weekday() < 5 and day not in french_holidays(day.year)


def next_business_day(day: dt.date) -> dt.date:
    """``day`` itself when it is a business day, else the first business day after it."""
    while not is_business_day(day):
        day += dt.timedelta(days=1)
    return day


def previous_business_day(day: dt.date) -> dt.date:
    """``day`` itself when it is a business day, else the last business day before it."""
    while not is_business_day(day):
        day -= dt.timedelta(days=1)
    return day


def add_business_days(day: dt.date, count: int) -> dt.date:
    """The business day ``count`` business days after ``day`` (``count`` >= 0)."""
    day = next_business_day(day)
    for _ in range(count):
        day = next_business_day(day + dt.timedelta(days=1))
    return day

"""French bank holidays, business days, the error-code table and the error schedule syntax."""

from __future__ import annotations

import datetime as dt

import pytest

from releves_mailer.aggregators.testbank import parse_error_schedule, parse_scheduled_error
from releves_mailer.collect.calendar import (
    add_business_days,
    easter_sunday,
    french_holidays,
    is_business_day,
    next_business_day,
)
from releves_mailer.collect.errors import ERROR_CODES, ErrorClass, describe_error
from releves_mailer.errors import UserError

D = dt.date

# Published Easter Sundays (Gregorian calendar).
KNOWN_EASTERS = {
    2016: D(2016, 3, 27),
    2019: D(2019, 4, 21),
    2024: D(2024, 3, 31),
    2025: D(2025, 4, 20),
    2026: D(2026, 4, 5),
    2027: D(2027, 3, 28),
    2038: D(2038, 4, 25),
}


@pytest.mark.parametrize(("year", "easter"), sorted(KNOWN_EASTERS.items()))
def test_easter(year: int, easter: dt.date) -> None:
    assert easter_sunday(year) == easter


def test_french_holidays_2026() -> None:
    assert sorted(french_holidays(2026)) == [
        D(2026, 1, 1),
        D(2026, 4, 6),  # Lundi de Pâques
        D(2026, 5, 1),
        D(2026, 5, 8),
        D(2026, 5, 14),  # Ascension
        D(2026, 5, 25),  # Lundi de Pentecôte
        D(2026, 7, 14),
        D(2026, 8, 15),
        D(2026, 11, 1),
        D(2026, 11, 11),
        D(2026, 12, 25),
    ]


def test_business_days() -> None:
    assert is_business_day(D(2026, 3, 10))  # a Tuesday
    assert not is_business_day(D(2026, 3, 14))  # Saturday
    assert not is_business_day(D(2026, 4, 6))  # Easter Monday
    assert next_business_day(D(2026, 4, 4)) == D(2026, 4, 7)  # Sat -> Tue after Easter Monday
    assert add_business_days(D(2026, 12, 24), 1) == D(2026, 12, 28)
    # The seed's example: Friday 2 September 2016 then Monday 5 September.
    assert add_business_days(D(2016, 9, 2), 1) == D(2016, 9, 5)


def test_error_table_has_every_seed_code_with_french_message_and_class() -> None:
    seed_codes = {
        "wrongpass": ErrorClass.ACTION,
        "passwordExpired": ErrorClass.ACTION,
        "additionalInformationNeeded": ErrorClass.ACTION,
        "actionNeeded": ErrorClass.ACTION,
        "SCARequired": ErrorClass.ACTION,
        "webauthRequired": ErrorClass.ACTION,
        "decoupled": ErrorClass.ACTION,
        "websiteUnavailable": ErrorClass.TRANSIENT,
        "bug": ErrorClass.TRANSIENT,
        "rateLimiting": ErrorClass.TRANSIENT,
        "validating": ErrorClass.TRANSIENT,
    }
    assert set(ERROR_CODES) == set(seed_codes)
    for code, expected in seed_codes.items():
        assert ERROR_CODES[code].error_class is expected
        assert ERROR_CODES[code].message.endswith(".")
    assert ERROR_CODES["wrongpass"].message.startswith(
        "L'authentification au site de la banque a échoué."
    )
    assert describe_error("unavailable").code == "websiteUnavailable"
    unknown = describe_error("somethingNew")
    assert unknown.code == "somethingNew"
    assert unknown.error_class is ErrorClass.TRANSIENT


def test_schedule_syntax() -> None:
    one = parse_scheduled_error("wrongpass@2026-03-12")
    assert (one.code, one.start, one.end) == ("wrongpass", D(2026, 3, 12), D(2026, 3, 12))
    span = parse_scheduled_error("scarequired@2026-03-12..2026-03-15")
    assert (span.code, span.start, span.end) == ("SCARequired", D(2026, 3, 12), D(2026, 3, 15))
    assert [str(entry) for entry in parse_error_schedule([str(span)])] == [str(span)]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("wrongpass", "format attendu"),
        ("nope@2026-03-12", "code « nope » inconnu"),
        ("bug@2026-13-01", "date invalide « 2026-13-01 »"),
        ("bug@2026-03-12..2026-03-01", "précède"),
    ],
)
def test_schedule_errors_name_the_bad_value(value: str, fragment: str) -> None:
    with pytest.raises(UserError) as caught:
        parse_scheduled_error(value)
    assert value in caught.value.message
    assert fragment in caught.value.message

"""Overpunch amounts, ISO 4217 minor units and BBAN fields from IBANs."""

from __future__ import annotations

from decimal import Decimal

import pytest
from cfonb.parser.common import parse_amount
from hypothesis import given
from hypothesis import strategies as st
from stdnum.iban import calc_check_digits

from releves_mailer.cfonb import AMOUNT_LIMIT, Account, decode_amount, encode_amount, minor_unit
from releves_mailer.cfonb.account import bban_fields, rib_key
from releves_mailer.cfonb.amounts import format_amount


@pytest.mark.parametrize(
    ("amount", "zone"),
    [
        # Examples of the reference (2 decimals): -190.40 and +1017311.89.
        (-19040, "0000000001904}"),
        (101731189, "0000010173118I"),
        (0, "0000000000000{"),
        (1, "0000000000000A"),
        (9, "0000000000000I"),
        (-1, "0000000000000J"),
        (-9, "0000000000000R"),
        (-10, "0000000000001}"),
        (AMOUNT_LIMIT, "9999999999999I"),
        (-AMOUNT_LIMIT, "9999999999999R"),
    ],
)
def test_overpunch_table(amount: int, zone: str) -> None:
    assert encode_amount(amount) == zone
    assert decode_amount(zone) == amount


def test_lowercase_overpunch_is_read() -> None:
    assert decode_amount("0000000001904j") == -19041


@pytest.mark.parametrize("amount", [AMOUNT_LIMIT + 1, -AMOUNT_LIMIT - 1, 10**20])
def test_amount_beyond_limit_is_refused(amount: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        encode_amount(amount)


@pytest.mark.parametrize("amount", [1.5, Decimal("1.50"), True])
def test_amount_must_be_an_int(amount: object) -> None:
    with pytest.raises(TypeError):
        encode_amount(amount)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "zone", ["000000000190M", "0000000001904X", "00000000019 4}", "+000000001904"]
)
def test_invalid_zone_is_refused(zone: str) -> None:
    with pytest.raises(ValueError, match="invalid amount"):
        decode_amount(zone)


@given(st.integers(-AMOUNT_LIMIT, AMOUNT_LIMIT), st.sampled_from([2, 3]))
def test_overpunch_agrees_with_python_cfonb(amount: int, decimals: int) -> None:
    zone = encode_amount(amount)
    assert decode_amount(zone) == amount
    assert parse_amount(zone, decimals) == Decimal(amount).scaleb(-decimals)


@pytest.mark.parametrize(
    ("currency", "decimals"),
    [("EUR", 2), ("USD", 2), ("JPY", 0), ("XPF", 0), ("XOF", 0), ("KWD", 3), ("TND", 3)],
)
def test_minor_units(currency: str, decimals: int) -> None:
    assert minor_unit(currency) == decimals


@pytest.mark.parametrize("currency", ["XAU", "XXX", "ABC", "eur"])
def test_currency_without_minor_unit_is_refused(currency: str) -> None:
    with pytest.raises(ValueError, match="currency"):
        minor_unit(currency)


def test_format_amount() -> None:
    assert format_amount(-123456, 2) == "-1234,56"
    assert format_amount(5, 3) == "0,005"
    assert format_amount(150000, 0) == "150000"
    assert format_amount(-7, 2, separator=".") == "-0.07"


# IBAN registry examples (SWIFT): valid check digits and RIB keys.
def test_french_iban() -> None:
    assert bban_fields("FR76 3000 6000 0112 3456 7890 189") == ("30006", "00001", "12345678901")
    assert Account.from_iban("fr7630006000011234567890189", "eur") == Account(
        "30006", "00001", "12345678901", "EUR"
    )


def test_french_iban_with_letters_in_account_number() -> None:
    assert bban_fields("FR14 2004 1010 0505 0001 3M02 606") == ("20041", "01005", "0500013M026")


def test_monaco_iban() -> None:
    assert bban_fields("MC58 1122 2000 0101 2345 6789 030") == ("11222", "00001", "01234567890")


def test_rib_key_maps_letters() -> None:
    # 0500013M026: M counts as 4 (A-I -> 1-9, J-R -> 1-9).
    assert rib_key("20041", "01005", "0500013M026") == "06"
    assert rib_key("20041", "01005", "05000134026") == "06"


def test_wrong_rib_key_with_valid_iban_check_digits_is_refused() -> None:
    bban = "30006000011234567890188"  # the right key is 89
    iban = "FR" + calc_check_digits("FR00" + bban) + bban
    with pytest.raises(ValueError, match="RIB key"):
        bban_fields(iban)


def test_overseas_code_with_french_layout() -> None:
    bban = "148890001008123456789" + rib_key("14889", "00010", "08123456789")
    iban = "NC" + calc_check_digits("NC00" + bban) + bban
    assert bban_fields(iban) == ("14889", "00010", "08123456789")


@pytest.mark.parametrize(
    "iban",
    [
        "FR76 3000 6000 0112 3456 7890 188",  # wrong check digits
        "FR76 3000 6000 0112 3456 7890 18",  # too short
        "DE89 3704 0044 0532 0130 01",  # wrong check digits
        "XX00 1234",
    ],
)
def test_invalid_iban_is_refused(iban: str) -> None:
    with pytest.raises(ValueError, match="invalid IBAN"):
        bban_fields(iban)


@pytest.mark.parametrize(
    ("iban", "number"),
    [
        # Convention: bank and branch 00000, the last 11 characters of the BBAN.
        ("DE89 3704 0044 0532 0130 00", "40532013000"),
        ("GB29 NWBK 6016 1331 9268 19", "61331926819"),
        ("KW81 CBKU 0000 0000 0000 1234 5601 01", "01234560101"),
        ("NO93 8601 1117 947", "86011117947"),
        ("BE68 5390 0754 7034", "39007547034"),
    ],
)
def test_foreign_iban_convention(iban: str, number: str) -> None:
    assert bban_fields(iban) == ("00000", "00000", number)

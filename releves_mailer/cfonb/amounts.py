"""Currencies (ISO 4217 minor units) and the signed overpunch encoding of CFONB amounts.

No installed library ships ISO 4217 minor units (python-stdnum validates identifiers, not
currencies), so the table lives here: every active ISO 4217 alphabetic code, plus a few
recently withdrawn ones still found in old statements, has 2 decimals except the listed
0-, 3- and 4-decimal currencies. Codes without a minor unit (precious metals, SDR, test
code XXX...) are not usable for an account statement and are refused.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "AMOUNT_LIMIT",
    "CURRENCIES",
    "decode_amount",
    "encode_amount",
    "format_amount",
    "is_known_currency",
    "minor_unit",
]

#: Largest magnitude, in minor units, that fits the 14-character zone (13 digits + 1).
AMOUNT_LIMIT: Final = 10**14 - 1

_ZERO_DECIMALS: Final = frozenset(
    "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split()
)
_THREE_DECIMALS: Final = frozenset("BHD IQD JOD KWD LYD OMR TND".split())
_FOUR_DECIMALS: Final = frozenset("CLF UYW".split())
_TWO_DECIMALS: Final = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP
    BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR
    FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HRK HTG HUF IDR ILS INR IRR JMD KES KGS KHR
    KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR
    MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK
    SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN
    UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG ZWL
    """.split()
)

#: ISO 4217 alphabetic code -> number of decimals (minor unit exponent).
CURRENCIES: Final[dict[str, int]] = {
    **dict.fromkeys(_TWO_DECIMALS, 2),
    **dict.fromkeys(_ZERO_DECIMALS, 0),
    **dict.fromkeys(_THREE_DECIMALS, 3),
    **dict.fromkeys(_FOUR_DECIMALS, 4),
}

_POSITIVE: Final = "{ABCDEFGHI"
_NEGATIVE: Final = "}JKLMNOPQR"
# Last character -> (sign, digit); lowercase is accepted because some banks send it.
_LAST: Final[dict[str, tuple[int, int]]] = {
    **{c: (1, d) for d, c in enumerate(_POSITIVE)},
    **{c: (-1, d) for d, c in enumerate(_NEGATIVE)},
    **{c.lower(): (1, d) for d, c in enumerate(_POSITIVE) if c.isalpha()},
    **{c.lower(): (-1, d) for d, c in enumerate(_NEGATIVE) if c.isalpha()},
}


def is_known_currency(code: str) -> bool:
    """Tell whether ``code`` is an ISO 4217 currency with a minor unit."""
    return code in CURRENCIES


def minor_unit(currency: str) -> int:
    """Return the number of decimals of ``currency`` (ISO 4217 minor unit).

    Raises ``ValueError`` for an unknown code or one without a minor unit.
    """
    try:
        return CURRENCIES[currency]
    except KeyError:
        raise ValueError(f"unknown ISO 4217 currency code: {currency!r}") from None


def encode_amount(amount: int) -> str:
    """Encode a signed integer amount (minor units) as 13 digits + the overpunch character.

    ``+1234`` -> ``'0000000000123D'``, ``-1904`` -> ``'0000000000190M'``, ``0`` ->
    ``'0000000000000{'``. Raises ``ValueError`` beyond ``AMOUNT_LIMIT`` and ``TypeError``
    for anything that is not an ``int`` (money is never a float).
    """
    if type(amount) is not int:
        raise TypeError(f"amount must be an int of minor units, not {type(amount).__name__}")
    if amount >= 0:
        if amount > AMOUNT_LIMIT:
            raise ValueError(f"amount {amount} exceeds the CFONB limit of {AMOUNT_LIMIT} units")
        return f"{amount // 10:013d}{_POSITIVE[amount % 10]}"
    magnitude = -amount
    if magnitude > AMOUNT_LIMIT:
        raise ValueError(f"amount {amount} exceeds the CFONB limit of -{AMOUNT_LIMIT} units")
    return f"{magnitude // 10:013d}{_NEGATIVE[magnitude % 10]}"


def decode_amount(zone: str) -> int:
    """Decode a 14-character amount zone into signed minor units.

    Accepts lowercase overpunch letters. Raises ``ValueError`` when the zone is not
    13 digits followed by one of ``{ A-I } J-R``.
    """
    if len(zone) != 14 or not (zone[:13].isascii() and zone[:13].isdigit()):
        raise ValueError(f"invalid amount zone {zone!r}")
    try:
        sign, digit = _LAST[zone[13]]
    except KeyError:
        raise ValueError(f"invalid amount zone {zone!r}") from None
    return sign * (int(zone[:13]) * 10 + digit)


def format_amount(amount: int, decimals: int, *, separator: str = ",", thousands: str = "") -> str:
    """Render minor units as a decimal string: ``format_amount(-123456, 2)`` -> ``'-1234,56'``.

    The one money formatter of the project: ``separator`` is the decimal mark (``","`` for
    French text, ``"."`` for JSON and provider wire formats), ``thousands`` groups the units
    by three (the French display uses a non-breaking space). Integer arithmetic only: a
    ``float`` (or a ``bool``) is refused.
    """
    if type(amount) is not int:
        raise TypeError(f"amount must be an int of minor units, not {type(amount).__name__}")
    sign = "-" if amount < 0 else ""
    units, fraction = divmod(abs(amount), 10**decimals)
    whole = f"{units:,d}".replace(",", thousands)
    if decimals == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}{separator}{fraction:0{decimals}d}"

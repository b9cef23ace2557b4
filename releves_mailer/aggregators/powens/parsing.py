"""Turn Powens JSON (decimals, Paris-naive timestamps, states) into the provider contract types.

Everything here is pure: no I/O, no clock reading (the caller passes ``now``). Amounts never go
through ``float``: bodies are decoded with ``parse_float=Decimal`` and scaled by the currency's
ISO 4217 minor unit (:func:`releves_mailer.cfonb.minor_unit`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from releves_mailer.cfonb import minor_unit
from releves_mailer.clock import PARIS
from releves_mailer.collect.errors import normalise_error_code
from releves_mailer.collect.provider import (
    ConnectionStatus,
    ProviderAccount,
    ProviderTransaction,
    accepted_iban,
)

__all__ = [
    "KNOWN_STATES",
    "UNKNOWN_STATE",
    "PowensConnection",
    "account_currency",
    "connection_from_json",
    "currencies_of",
    "loads",
    "map_state",
    "paris_naive",
    "parse_account",
    "parse_amount",
    "parse_date",
    "parse_timestamp",
    "parse_transaction",
    "status_from_connection",
]

log = logging.getLogger(__name__)

JSON = Mapping[str, Any]

#: Every connection ``state`` of the reference (section 3), ``None`` meaning "synchronised".
KNOWN_STATES = frozenset(
    {
        "SCARequired",
        "webauthRequired",
        "additionalInformationNeeded",
        "decoupled",
        "validating",
        "actionNeeded",
        "passwordExpired",
        "wrongpass",
        "rateLimiting",
        "websiteUnavailable",
        "bug",
    }
)
#: The generic code an unknown state (or API error code) is reported as; errors.py describes
#: it as an unexpected, transient error.
UNKNOWN_STATE = "unknown"


def loads(text: str | bytes) -> Any:
    """Decode a Powens body; JSON numbers with a fraction become ``Decimal``, never ``float``."""
    return json.loads(text, parse_float=Decimal)


# -- dates and times -------------------------------------------------------------------------


def parse_timestamp(value: object) -> dt.datetime | None:
    """A Powens timestamp as an aware UTC datetime.

    Powens sends naive ``YYYY-MM-DD HH:MM:SS`` in Europe/Paris local time; an ISO 8601 value
    with an offset is honoured as such. During the autumn DST fold the earlier reading is
    taken (``fold=0``); callers that filter on these values keep an overlap of an hour.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"timestamp is not a string: {value!r}")
    text = value.strip().replace("T", " ")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=PARIS)
    return parsed.astimezone(dt.UTC)


def paris_naive(when: dt.datetime) -> str:
    """``when`` as Powens wants it in filters: naive Paris time, second resolution (floored)."""
    if when.tzinfo is None:
        raise ValueError("paris_naive needs an aware datetime")
    return when.astimezone(PARIS).strftime("%Y-%m-%d %H:%M:%S")


def parse_date(value: object) -> dt.date | None:
    """A ``YYYY-MM-DD`` date (a datetime text keeps its date part); empty values are None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"date is not a string: {value!r}")
    return dt.date.fromisoformat(value.strip()[:10])


# -- amounts ---------------------------------------------------------------------------------


def account_currency(account: JSON) -> tuple[str, int]:
    """The ISO code of an account's currency and its number of decimals.

    Powens sends a currency *object* (``{"id": "EUR", "precision": 2, ...}``); a bare code is
    accepted too. The ISO 4217 table wins; ``precision`` is the fallback for codes it lacks.
    """
    currency = account.get("currency")
    precision: object = None
    if isinstance(currency, Mapping):
        code = str(currency.get("id") or currency.get("code") or "EUR")
        precision = currency.get("precision")
    elif isinstance(currency, str) and currency:
        code = currency
    else:
        code = "EUR"
    code = code.upper()
    try:
        return code, minor_unit(code)
    except ValueError:
        if isinstance(precision, int) and 0 <= precision <= 6:
            return code, precision
        log.warning("unknown currency %s without precision: 2 decimals assumed", code)
        return code, 2


def parse_amount(value: object, decimals: int) -> int:
    """A Powens amount (JSON number as ``Decimal``, integer, or text) in minor units.

    A value with more decimals than the currency has is rounded half-even (Powens computes
    some amounts itself); a ``float`` is refused, it would already have lost precision.
    """
    if isinstance(value, bool | float):
        raise TypeError(f"amount must not be a {type(value).__name__}: {value!r}")
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip().replace(",", "."))
        except InvalidOperation:
            raise ValueError(f"amount is not a number: {value!r}") from None
    else:
        raise ValueError(f"amount is not a number: {value!r}")
    if not number.is_finite():
        raise ValueError(f"amount is not finite: {value!r}")
    scaled = (number * (Decimal(10) ** decimals)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    return int(scaled)


# -- connections -----------------------------------------------------------------------------


def map_state(state: object) -> str | None:
    """Our code for a connection ``state``: None when synchronised, ``unknown`` when new.

    Known states keep their spelling (``wrongPass`` becomes ``wrongpass``); anything the
    reference does not list is an error too, reported as the generic ``unknown`` code.
    """
    if state is None or state == "":
        return None
    text = str(state)
    canonical = normalise_error_code(text)
    if canonical is not None:
        return canonical
    return UNKNOWN_STATE


@dataclass(frozen=True, slots=True)
class PowensConnection:
    """A Powens connection as read from the API (``GET /users/me/connections/{id}``)."""

    id: str
    user_id: str
    #: Our code (see :func:`map_state`); None when the last synchronisation succeeded.
    state: str | None
    #: The state exactly as Powens sent it (kept to log/diagnose unknown states).
    raw_state: str | None
    #: The bank's own message (untranslated, may be a bank URL): never shown as is.
    error_message: str
    last_update: dt.datetime | None
    active: bool
    connector_uuid: str
    #: The bank's name when the connector was expanded, else "".
    bank_name: str
    #: Scheduled next synchronisation at Powens.
    next_try: dt.datetime | None
    #: Purge date of an incomplete connection (max over its sources).
    expire: dt.datetime | None
    #: Earliest PSD2 consent expiry among the enabled sources (``sources[].access_expire``).
    consent_expires_at: dt.datetime | None
    raw: JSON = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state is None


def _consent_expiry(sources: object) -> dt.datetime | None:
    if not isinstance(sources, list):
        return None
    dates: list[dt.datetime] = []
    for source in sources:
        if not isinstance(source, Mapping) or source.get("disabled"):
            continue
        parsed = parse_timestamp(source.get("access_expire"))
        if parsed is not None:
            dates.append(parsed)
    return min(dates) if dates else None


def connection_from_json(document: JSON) -> PowensConnection:
    """Read a connection object; unknown ``state`` values become the ``unknown`` error."""
    raw_state = document.get("state", document.get("error"))
    connector = document.get("connector")
    bank_name = ""
    if isinstance(connector, Mapping):
        bank_name = str(connector.get("name") or "")
    return PowensConnection(
        id=str(document["id"]),
        user_id=str(document.get("id_user") or ""),
        state=map_state(raw_state),
        raw_state=None if raw_state in (None, "") else str(raw_state),
        error_message=str(document.get("error_message") or ""),
        last_update=parse_timestamp(document.get("last_update")),
        active=bool(document.get("active", True)),
        connector_uuid=str(document.get("connector_uuid") or ""),
        bank_name=bank_name,
        next_try=parse_timestamp(document.get("next_try")),
        expire=parse_timestamp(document.get("expire")),
        consent_expires_at=_consent_expiry(document.get("sources")),
        raw=document,
    )


def status_from_connection(connection: PowensConnection, now: dt.datetime) -> ConnectionStatus:
    """The contract's :class:`ConnectionStatus` of a connection read at ``now``."""
    detail = connection.error_message
    if connection.state == UNKNOWN_STATE:
        detail = f"état Powens inconnu {connection.raw_state!r}" + (
            f" : {detail}" if detail else ""
        )
    return ConnectionStatus(
        state=connection.state,
        checked_at=now,
        last_sync=connection.last_update,
        detail=detail,
        raw=connection.raw,
    )


# -- accounts and transactions ---------------------------------------------------------------


def parse_account(document: JSON, now: dt.datetime) -> ProviderAccount:
    """An account object (``disabled`` and ``deleted`` ones included) in contract form."""
    code, decimals = account_currency(document)
    balance_value = document.get("balance")
    balance = None if balance_value is None else parse_amount(balance_value, decimals)
    iban, rejected = accepted_iban(document.get("iban"))
    if rejected is not None:
        log.warning("Powens account %s: IBAN refused %r", document.get("id"), rejected)
    return ProviderAccount(
        provider_id=str(document["id"]),
        iban=iban,
        rejected_iban=rejected,
        bic=str(document.get("bic") or ""),
        label=str(document.get("name") or document.get("original_name") or ""),
        type=str(document.get("type") or "unknown"),
        currency=code,
        balance=balance,
        balance_at=parse_timestamp(document.get("last_update")) or now,
        number=str(document.get("number") or ""),
        deleted_at=parse_timestamp(document.get("deleted")),
        disabled=bool(document.get("disabled")),
        raw=document,
    )


def _counterparty(document: JSON) -> tuple[str | None, str | None]:
    counterparty = document.get("counterparty")
    if not isinstance(counterparty, Mapping):
        return None, None
    label = counterparty.get("label")
    iban = None
    if str(counterparty.get("account_scheme_name") or "").lower() == "iban":
        iban = accepted_iban(counterparty.get("account_identification"))[0]
    return (str(label) if label else None), iban


def parse_transaction(
    document: JSON, currencies: Mapping[str, tuple[str, int]], now: dt.datetime
) -> ProviderTransaction:
    """A transaction object in contract form; ``currencies`` maps account ids to currencies.

    The booking date is ``date`` (the statement date, never the user-editable
    ``application_date``); the label is the bank's full ``original_wording``.
    """
    account_id = str(document["id_account"])
    code, decimals = currencies.get(account_id, ("EUR", 2))
    booking = parse_date(document.get("date"))
    if booking is None:
        raise ValueError(f"transaction {document.get('id')} has no date")
    label = (
        document.get("original_wording")
        or document.get("simplified_wording")
        or document.get("wording")
        or ""
    )
    counterparty_label, counterparty_iban = _counterparty(document)
    last_update = (
        parse_timestamp(document.get("last_update"))
        or parse_timestamp(document.get("date_scraped"))
        or now
    )
    return ProviderTransaction(
        provider_id=str(document["id"]),
        account_provider_id=account_id,
        booking_date=booking,
        value_date=parse_date(document.get("vdate")),
        real_date=parse_date(document.get("rdate")),
        amount=parse_amount(document.get("value"), decimals),
        currency=code,
        raw_label=str(label),
        type=str(document.get("type") or "unknown"),
        coming=bool(document.get("coming")),
        deleted_at=parse_timestamp(document.get("deleted")),
        last_update=last_update,
        counterparty_label=counterparty_label,
        counterparty_iban=counterparty_iban,
        raw=document,
    )


def currencies_of(accounts: Iterable[JSON]) -> dict[str, tuple[str, int]]:
    """Account id -> (currency code, decimals), for :func:`parse_transaction`."""
    return {str(account["id"]): account_currency(account) for account in accounts}

"""The contract every account aggregator implements (one package each in ``aggregators/``).

Amounts are signed integers in minor units of the account currency (never floats). Datetimes
are timezone-aware UTC; dates are the bank's calendar dates. Every object keeps ``raw``, the
provider's own JSON payload, so that what was received can be archived and shown later.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from releves_mailer.cfonb.account import checked_iban
from releves_mailer.collect.errors import ErrorCode, describe_error

__all__ = [
    "ConnectionStatus",
    "Provider",
    "ProviderAccess",
    "ProviderAccount",
    "ProviderError",
    "ProviderTransaction",
    "accepted_iban",
]

JSON = Mapping[str, Any]


class ProviderError(Exception):
    """A call failed: the connection is in an error state or the provider is unreachable.

    ``code`` is one of :data:`releves_mailer.collect.errors.ERROR_CODES` (or a code the
    provider added later, which :func:`describe_error` reports as unexpected).
    """

    def __init__(self, code: str, detail: str = "") -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {detail}" if detail else code)

    @property
    def error(self) -> ErrorCode:
        return describe_error(self.code)


@dataclass(frozen=True, slots=True)
class ProviderAccess:
    """What identifies a connection at the provider; ``token`` is the decrypted secret."""

    token: str
    connection_id: str
    user_id: str = ""


@dataclass(frozen=True, slots=True)
class ConnectionStatus:
    """The state of a connection as the provider reports it.

    ``state`` is None when the last synchronisation succeeded, else an error code.
    """

    state: str | None
    checked_at: dt.datetime
    #: Last successful synchronisation on the provider's side.
    last_sync: dt.datetime | None = None
    #: The bank's own text, untranslated; never shown as is to end users.
    detail: str = ""
    raw: JSON = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state is None

    @property
    def error(self) -> ErrorCode | None:
        return None if self.state is None else describe_error(self.state)


def accepted_iban(value: object) -> tuple[str | None, str | None]:
    """``(iban, rejected)`` for an IBAN a provider gave: the compact IBAN when it is a valid
    one (characters, length, check digits); otherwise None and the refused value, shortened
    to 60 printable characters, to report. Every provider passes its IBANs through here
    before they reach the contract types: nothing else may name a file or a ZIP entry."""
    if value is None or value == "":
        return None, None
    text = str(value)
    try:
        return checked_iban(text), None
    except ValueError:
        return None, text[:60].encode("unicode_escape").decode("ascii")


@dataclass(frozen=True, slots=True)
class ProviderAccount:
    """A bank account as the provider shows it at one check."""

    provider_id: str
    iban: str | None
    bic: str
    label: str
    #: The provider's account type code (``checking``, ``savings``, ``card``...).
    type: str
    currency: str
    #: Current balance in minor units, as the bank reports it, and when it was read.
    balance: int | None
    balance_at: dt.datetime | None
    number: str = ""
    #: Set when the provider no longer finds the account at the bank.
    deleted_at: dt.datetime | None = None
    #: The client left the account unticked at the provider, which does not collect it.
    disabled: bool = False
    #: What the provider gave as IBAN when it is not one (``iban`` is then None), shortened
    #: and printable, for the account's history; see :func:`accepted_iban`.
    rejected_iban: str | None = None
    raw: JSON = field(default_factory=dict)


@dataclass(frozen=True, slots=True, weakref_slot=True)
class ProviderTransaction:
    """One transaction as the provider shows it at one fetch.

    Weak references are allowed: the sync memoises payload hashes by object without keeping
    the objects alive.
    """

    provider_id: str
    account_provider_id: str
    #: Debit/credit date on the bank statement ("date" at Powens).
    booking_date: dt.date
    value_date: dt.date | None
    #: When the operation really happened (card payment date, "rdate").
    real_date: dt.date | None
    amount: int
    currency: str
    raw_label: str
    type: str
    #: Pending ("coming"): not yet debited; never reported on a statement.
    coming: bool
    #: When the bank stopped showing it; None while it exists.
    deleted_at: dt.datetime | None
    #: Last modification of the row at the provider (the incremental cursor).
    last_update: dt.datetime
    counterparty_label: str | None = None
    counterparty_iban: str | None = None
    reference: str | None = None
    raw: JSON = field(default_factory=dict)


@runtime_checkable
class Provider(Protocol):
    """An account aggregator. Every call may raise :class:`ProviderError`."""

    #: Stable code stored with each connection (``testbank``, ``powens``).
    name: str
    #: Bank/aggregator name shown to users ("Connecteur de test").
    display_name: str

    async def connection_status(self, access: ProviderAccess) -> ConnectionStatus:
        """Check the connection (the provider may synchronise it with the bank first)."""
        ...

    async def list_accounts(self, access: ProviderAccess) -> Sequence[ProviderAccount]:
        """Every account of the connection, disabled and deleted ones included."""
        ...

    async def fetch_transactions(
        self,
        access: ProviderAccess,
        *,
        changed_since: dt.datetime | None = None,
        min_date: dt.date | None = None,
        max_date: dt.date | None = None,
    ) -> Sequence[ProviderTransaction]:
        """Transactions of the connection's accounts, deleted ones included.

        ``changed_since`` keeps rows whose ``last_update`` is strictly later; ``min_date`` and
        ``max_date`` (inclusive) bound the booking date. The filters combine (AND); at least
        one must be given.
        """
        ...

"""The contract of an aggregator in partner mode: webview URL, callback outcome, consent.

Every aggregator package implements it (the test bank in
:mod:`releves_mailer.aggregators.testbank.partner`, with its own small webview; Powens in
:mod:`releves_mailer.aggregators.powens.partner`). The flow
(:mod:`releves_mailer.partner.flow`) never talks to an aggregator otherwise.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from releves_mailer.collect.provider import ProviderAccess, ProviderAccount

__all__ = [
    "WEBVIEW_ERRORS",
    "PartnerMode",
    "PartnerOutcome",
    "WebviewError",
    "WebviewFlow",
    "WebviewRequest",
    "WebviewStart",
]


class WebviewFlow(enum.StrEnum):
    CONNECT = "connect"  # add a bank and choose accounts (``saisie`` links)
    RECONNECT = "reconnect"  # repair a connection (``maj`` links)


@dataclass(frozen=True, slots=True)
class WebviewRequest:
    """Everything an aggregator needs to open its webview, and again at the callback."""

    flow: WebviewFlow
    #: The random nonce bound to the link, echoed by the webview.
    state: str
    redirect_uri: str
    #: The redevable's SIREN (the test bank's customer; a label at Powens).
    customer: str
    company_name: str
    #: The connection to repair (``reconnect``).
    connection: ProviderAccess | None = None
    #: The redevable's other connections at this aggregator (an aggregator user to reuse).
    previous: Sequence[ProviderAccess] = ()
    #: Ask for every credential again rather than only the missing bits.
    reset_credentials: bool = False
    #: The redevable's id (a key for per-redevable state kept by the aggregator side).
    redevable_id: int | None = None
    #: ``partner_data`` kept (decrypted) on the redevable's links already opened with this
    #: aggregator, newest first: lets Powens find a user created for a webview never
    #: finished (cancelled, abandoned), so that a second visit never creates a second one.
    earlier_data: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class WebviewStart:
    """Where to send the client, and what to keep (encrypted) until the callback."""

    url: str
    partner_data: str | None = None


@dataclass(frozen=True, slots=True)
class PartnerOutcome:
    """What the client did in the webview, read at the callback."""

    access: ProviderAccess
    bank_name: str
    #: Every account of the connection as the aggregator lists it.
    accounts: Sequence[ProviderAccount]
    #: Provider ids of the accounts the client chose (None: all of them).
    selected: frozenset[str] | None = None
    #: Provider connection ids this connection supersedes (closed by the flow).
    replaces: frozenset[str] = frozenset()


#: French texts of the webview's error codes (``error`` parameter of the callback).
WEBVIEW_ERRORS: Mapping[str, str] = {
    "access_denied": "Vous avez interrompu la saisie de vos identifiants bancaires.",
    "tos_declined": "Les conditions générales d'utilisation n'ont pas été acceptées.",
    "session_expired": "La session de saisie a expiré avant la fin de l'opération.",
    "server_error": "Le service de connexion bancaire a rencontré une erreur.",
}


class WebviewError(Exception):
    """The client did not finish the webview (cancelled, refused the terms...)."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.message = WEBVIEW_ERRORS.get(code, "La connexion bancaire n'a pas pu être établie.")
        super().__init__(f"{code}: {self.message}")


@runtime_checkable
class PartnerMode(Protocol):
    """An aggregator driven through its webview; calls may raise ``ProviderError``."""

    #: The provider code stored on connections (``testbank``, ``powens``).
    name: str
    display_name: str

    async def start_webview(self, request: WebviewRequest) -> WebviewStart:
        """Mint a fresh temporary code and return the webview URL (with ``state``)."""
        ...

    async def finish_webview(
        self, request: WebviewRequest, params: Mapping[str, str], partner_data: str | None
    ) -> PartnerOutcome:
        """Read the outcome of the webview from the callback parameters.

        Raises :class:`WebviewError` when the callback carries an ``error``.
        """
        ...

    async def consent_expiry(
        self, access: ProviderAccess, granted_at: dt.datetime
    ) -> dt.datetime | None:
        """When the PSD2 consent of the connection expires (None when unknown)."""
        ...

"""The test bank in partner mode: temporary codes, webview sessions, outcomes, consent.

This is the aggregator side of the demo: the daemon serves the pages of the test bank's
webview itself (:mod:`releves_mailer.aggregators.testbank.webview`), which drive the sessions kept
here. Sessions live in memory (a code is valid 30 minutes and used once, as at Powens); the
outcome waits for the callback for one hour.
"""

from __future__ import annotations

import datetime as dt
import enum
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode

from releves_mailer.aggregators.testbank import TestBank, TestBankToken
from releves_mailer.clock import Clock
from releves_mailer.collect.provider import ProviderAccess, ProviderAccount, ProviderError
from releves_mailer.partner.modes import (
    PartnerOutcome,
    WebviewError,
    WebviewFlow,
    WebviewRequest,
    WebviewStart,
)

__all__ = ["CONSENT_DAYS", "Step", "TestBankPartner", "WebviewSession"]

#: PSD2: a consent lasts 180 days.
CONSENT_DAYS = 180
CODE_LIFETIME = dt.timedelta(minutes=30)
OUTCOME_LIFETIME = dt.timedelta(hours=1)
#: The ``client_id`` of the demo "application" at the test bank.
CLIENT_ID = "releves-mailer-demo"


class Step(enum.StrEnum):
    BANK = "bank"  # choose the bank
    TERMS = "terms"  # accept the aggregator's terms
    CREDENTIALS = "credentials"  # enter (or update) the credentials
    ACCOUNTS = "accounts"  # choose the accounts (connect)
    CONTACT = "contact"  # professional contact information (connect)
    DONE = "done"


@dataclass(slots=True)
class WebviewSession:
    """One client's way through the test bank's webview."""

    code: str
    flow: WebviewFlow
    state: str
    redirect_uri: str
    customer: str
    company_name: str
    created_at: dt.datetime
    token: TestBankToken
    replaces: frozenset[str] = frozenset()
    step: Step = Step.BANK
    selected: frozenset[str] = frozenset()
    contact_name: str = ""
    contact_company: str = ""


@dataclass(slots=True)
class _Outcome:
    access: ProviderAccess
    selected: frozenset[str] | None
    replaces: frozenset[str]
    created_at: dt.datetime
    contact: tuple[str, str] = field(default=("", ""))


class TestBankPartner:
    """:class:`~releves_mailer.partner.modes.PartnerMode` of the test bank."""

    __test__ = False

    name = TestBank.name
    display_name = TestBank.display_name

    def __init__(self, bank: TestBank, clock: Clock, public_url: str) -> None:
        self.bank = bank
        self.clock = clock
        self.public_url = public_url.rstrip("/")
        self._sessions: dict[str, WebviewSession] = {}
        self._outcomes: dict[str, _Outcome] = {}

    def _purge(self, now: dt.datetime) -> None:
        for code in [c for c, s in self._sessions.items() if now - s.created_at >= CODE_LIFETIME]:
            del self._sessions[code]
        for state in [
            s for s, o in self._outcomes.items() if now - o.created_at >= OUTCOME_LIFETIME
        ]:
            del self._outcomes[state]

    async def start_webview(self, request: WebviewRequest) -> WebviewStart:
        now = self.clock.now()
        self._purge(now)
        replaces: frozenset[str] = frozenset()
        if request.flow is WebviewFlow.RECONNECT:
            if request.connection is None:
                raise ProviderError("bug", "reconnexion sans connexion")
            current = TestBankToken.decode(request.connection.token)
            # New credentials: the scheduled errors of the old access are gone.
            token = TestBankToken(current.seed, current.customer, current.generation, current.epoch)
        else:
            earlier = []
            for access in request.previous:
                try:
                    old = TestBankToken.decode(access.token)
                except ProviderError:
                    continue
                if old.customer == request.customer and old.seed == self.bank.seed:
                    earlier.append(old)
            _, token = self.bank.open_connection(
                request.customer,
                generation=max((old.generation + 1 for old in earlier), default=0),
                epoch=min((old.epoch for old in earlier), default=None),
            )
            replaces = frozenset(old.connection_id for old in earlier)
        code = secrets.token_urlsafe(24)
        session = WebviewSession(
            code=code,
            flow=request.flow,
            state=request.state,
            redirect_uri=request.redirect_uri,
            customer=request.customer,
            company_name=request.company_name,
            created_at=now,
            token=token,
            replaces=replaces,
            step=Step.CREDENTIALS if request.flow is WebviewFlow.RECONNECT else Step.BANK,
        )
        self._sessions[code] = session
        query = {
            "client_id": CLIENT_ID,
            "code": code,
            "redirect_uri": request.redirect_uri,
            "state": request.state,
        }
        if request.flow is WebviewFlow.RECONNECT:
            query["connection_id"] = token.connection_id
            if request.reset_credentials:
                query["reset_credentials"] = "true"
        url = f"{self.public_url}/testbank/webview/fr/{request.flow.value}?{urlencode(query)}"
        return WebviewStart(url)

    # -- the webview pages -------------------------------------------------------------------

    def session(self, code: str) -> WebviewSession | None:
        """The live session of ``code`` (None when unknown, used or older than 30 minutes)."""
        self._purge(self.clock.now())
        return self._sessions.get(code)

    async def accounts(self, session: WebviewSession) -> Sequence[ProviderAccount]:
        """The accounts the customer holds, as the choice page lists them."""
        listed = await self.bank.list_accounts(TestBank.access_for(session.token))
        return [account for account in listed if account.deleted_at is None]

    def redirect_success(self, session: WebviewSession) -> str:
        """Close the session and return where the client goes back to."""
        self._sessions.pop(session.code, None)
        session.step = Step.DONE
        access = TestBank.access_for(session.token)
        selected = session.selected if session.flow is WebviewFlow.CONNECT else None
        self._outcomes[session.state] = _Outcome(
            access,
            selected,
            session.replaces,
            self.clock.now(),
            (session.contact_name, session.contact_company),
        )
        query = {"state": session.state}
        if session.flow is WebviewFlow.CONNECT:
            query = {"connection_id": access.connection_id, **query}
        return f"{session.redirect_uri}?{urlencode(query)}"

    def redirect_error(self, session: WebviewSession, error: str) -> str:
        self._sessions.pop(session.code, None)
        query = {"error": error, "error_description": error, "state": session.state}
        return f"{session.redirect_uri}?{urlencode(query)}"

    # -- the callback ------------------------------------------------------------------------

    async def finish_webview(
        self, request: WebviewRequest, params: Mapping[str, str], partner_data: str | None
    ) -> PartnerOutcome:
        if params.get("error"):
            raise WebviewError(params["error"])
        self._purge(self.clock.now())
        outcome = self._outcomes.get(request.state)
        if outcome is None:
            raise WebviewError("session_expired")
        if request.flow is WebviewFlow.CONNECT and (
            params.get("connection_id") != outcome.access.connection_id
        ):
            raise WebviewError("server_error")
        accounts = await self.bank.list_accounts(outcome.access)
        return PartnerOutcome(
            access=outcome.access,
            bank_name=self.display_name,
            accounts=accounts,
            selected=outcome.selected,
            replaces=outcome.replaces,
        )

    def forget(self, state: str) -> None:
        """Drop an outcome the flow has stored."""
        self._outcomes.pop(state, None)

    async def consent_expiry(
        self, access: ProviderAccess, granted_at: dt.datetime
    ) -> dt.datetime | None:
        return granted_at + dt.timedelta(days=CONSENT_DAYS)

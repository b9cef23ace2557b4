"""A faithful local fake of the Powens API and Webview (aiohttp, 127.0.0.1, port 0).

It follows ``reference/powens.md`` (section 7 "fake-server checklist"): users and tokens
(permanent, temporary, temporary codes single-use or 30 min), connections in every ``state``,
accounts (disabled ones to activate, ``all``), transactions with ``filter``/``min_date``/
``max_date``/``last_update``/``all``/``deleted``/``limit`` (max 1000)/``offset`` and relative
``_links.next``, Paris-naive timestamps, decimal JSON amounts, the error envelope, forced sync
(409 while syncing), a scripted Webview redirecting back with the callback parameters, and
HMAC-signed webhooks. Knobs inject slowness, 429 with ``Retry-After``, 5xx bursts, small pages
and cyclic ``_links.next``.

Everything is driven from Python (the "control API" methods below), or run it by hand:
``python -m tests.fakes.powens_server --port 8765`` (see ``docs/powens.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import calendar
import contextlib
import datetime as dt
import hashlib
import hmac
import itertools
import json
import re
import secrets
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NoReturn
from urllib.parse import quote, urlencode, urlsplit
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web

from releves_mailer.aggregators.testbank.iban import french_iban
from releves_mailer.clock import Clock, ManualClock

__all__ = [
    "ALL_STATES",
    "TEST_CONNECTOR_UUID",
    "FakeAccount",
    "FakeConnection",
    "FakePowens",
    "FakeTransaction",
    "FakeUser",
    "WebviewOutcome",
]

PARIS = ZoneInfo("Europe/Paris")
TEST_CONNECTOR_UUID = "338178e6-3d01-564f-9a7b-52ca442459bf"
#: Every connection state of the reference, plus one Powens could add later.
ALL_STATES = (
    "wrongpass",
    "SCARequired",
    "webauthRequired",
    "decoupled",
    "passwordExpired",
    "additionalInformationNeeded",
    "actionNeeded",
    "websiteUnavailable",
    "bug",
    "rateLimiting",
    "validating",
    "brandNewStateFromTheFuture",
)
_FIELDS_STATES = {"wrongpass", "additionalInformationNeeded"}
MAX_LIMIT = 1000
CODE_LIFETIME = dt.timedelta(minutes=30)
_CURRENCY_PRECISION = {"JPY": 0, "KRW": 0, "KWD": 3, "BHD": 3, "TND": 3}
_CURRENCY_SYMBOL = {"EUR": "€", "USD": "$", "JPY": "¥", "GBP": "£"}


def paris_text(when: dt.datetime | None) -> str | None:
    """Powens' timestamp format: naive Europe/Paris ``YYYY-MM-DD HH:MM:SS``."""
    if when is None:
        return None
    return when.astimezone(PARIS).strftime("%Y-%m-%d %H:%M:%S")


def parse_paris(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.strip()).replace(tzinfo=PARIS).astimezone(dt.UTC)


# -- JSON with exact decimals ----------------------------------------------------------------

_DECIMAL_MARK = re.compile(r'"@@dec:(-?[0-9]+(?:\.[0-9]+)?(?:E[+-]?[0-9]+)?)@@"')


def _mark_decimals(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"@@dec:{value}@@"
    if isinstance(value, dict):
        return {key: _mark_decimals(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_mark_decimals(item) for item in value]
    return value


def dumps(document: Any) -> str:
    """JSON where ``Decimal`` values are written as raw JSON numbers (``1234.56``), as Powens."""
    return _DECIMAL_MARK.sub(r"\1", json.dumps(_mark_decimals(document), ensure_ascii=False))


def _json(document: Any, status: int = 200) -> web.Response:
    return web.Response(text=dumps(document), status=status, content_type="application/json")


def _error(
    status: int, code: str, description: str = "", message: str | None = None
) -> web.Response:
    return _json(
        {
            "code": code,
            "description": description or code,
            "message": message,
            "request_id": secrets.token_hex(8),
        },
        status,
    )


# -- model -----------------------------------------------------------------------------------


@dataclass
class FakeUser:
    id: int
    token: str
    created: dt.datetime
    anonymous: bool = False


@dataclass
class FakeSource:
    id: int
    name: str
    access_expire: dt.datetime | None = None
    disabled: bool = False


@dataclass
class FakeConnection:
    id: int
    user_id: int
    connector_uuid: str
    bank_name: str
    created: dt.datetime
    state: str | None = None
    error_message: str | None = None
    last_update: dt.datetime | None = None
    active: bool = True
    syncing: bool = False
    next_try: dt.datetime | None = None
    expire: dt.datetime | None = None
    sources: list[FakeSource] = field(default_factory=list)
    #: State set by the next synchronisation (forced sync, Webview): None = success.
    state_after_sync: str | None = None


@dataclass
class FakeAccount:
    id: int
    connection_id: int
    user_id: int
    name: str
    iban: str | None
    currency: str
    balance: Decimal | str
    type: str = "checking"
    bic: str | None = "TBNKFRPPXXX"
    number: str = ""
    disabled: dt.datetime | None = None
    deleted: dt.datetime | None = None
    last_update: dt.datetime | None = None
    usage: str = "ORGA"
    precision: int | None = None


@dataclass
class FakeTransaction:
    id: int
    account_id: int
    date: dt.date
    value: Decimal | str | int
    original_wording: str
    last_update: dt.datetime
    date_scraped: dt.datetime
    type: str = "transfer"
    coming: bool = False
    deleted: dt.datetime | None = None
    rdate: dt.date | None = None
    vdate: dt.date | None = None
    application_date: dt.date | None = None
    counterparty: dict[str, Any] | None = None
    card: str | None = None


@dataclass
class AccountSpec:
    """An account the scripted Webview finds at the bank."""

    name: str
    currency: str = "EUR"
    balance: str = "1000.00"
    type: str = "checking"
    iban: str | None = None


DEFAULT_BANK_ACCOUNTS = (
    AccountSpec("Compte chèque", balance="5939.46"),
    AccountSpec("Compte chèque USD", currency="USD", balance="9518.00"),
    AccountSpec("Compte carte débit différé", balance="0.00", type="card"),
    AccountSpec("Livret A", balance="13947.47", type="savings"),
)


@dataclass
class WebviewOutcome:
    """What the simulated client does in the next Webview visit.

    ``error`` sends the client back with that error code (``access_denied``...). On success
    the ``chosen`` account names are enabled (None: all of them), the others disabled.
    """

    error: str | None = None
    error_description: str = ""
    accounts: tuple[AccountSpec, ...] = DEFAULT_BANK_ACCOUNTS
    chosen: frozenset[str] | None = None
    bank_name: str = "Connecteur de test"
    connector_uuid: str = TEST_CONNECTOR_UUID
    #: State of the connection after the Webview (None: synchronised).
    state: str | None = None
    #: Manage flow: the client deletes the connection.
    delete_connection: bool = False


@dataclass
class _Fault:
    status: int
    remaining: int
    code: str | None
    path: str | None
    retry_after: str | None = None


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    has_token: bool


# -- the fake --------------------------------------------------------------------------------


class FakePowens:
    """The fake Powens server and its control API."""

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        domain: str = "fake-sandbox",
        client_id: str = "81234567",
        client_secret: str | None = None,
        webhook_secret: str | None = None,
        redirect_uris: Iterable[str] = (),
    ) -> None:
        self.clock: Clock = clock or ManualClock(dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC))
        self.domain_host = f"{domain}.biapi.pro"
        self.client_id = client_id
        # Generated at run time: nothing secret is committed.
        self.client_secret = client_secret or secrets.token_urlsafe(24)
        self.webhook_secret = webhook_secret or secrets.token_urlsafe(24)
        #: Whitelisted Webview redirect URIs (empty: any URI without a query is accepted).
        self.redirect_uris = set(redirect_uris)
        self._ids = itertools.count(1)
        self.users: dict[int, FakeUser] = {}
        self.tokens: dict[str, int] = {}
        self._temporary_tokens: dict[str, tuple[int, dt.datetime]] = {}
        self._codes: dict[str, tuple[int, dt.datetime, bool]] = {}
        self.connections: dict[int, FakeConnection] = {}
        self.accounts: dict[int, FakeAccount] = {}
        self.transactions: dict[int, FakeTransaction] = {}
        # Knobs.
        #: Every /auth/init (and /auth/renew without id_user) call: each one is billed.
        self.user_creations = 0
        self.requests: list[RecordedRequest] = []
        #: Cleared by :meth:`hold_calls`: API calls then wait, unanswered, until it is set.
        self._answering = asyncio.Event()
        self._answering.set()
        self._faults: list[_Fault] = []
        #: Server-side cap of the page size (forces pagination with limit=1000).
        self.page_size: int | None = None
        #: ``_links.next`` goes back to the first page instead of ending.
        self.cyclic_links = False
        #: Hrefs of ``_links`` absolute (``http://host/2.0/...``) instead of relative.
        self.absolute_links = False
        #: Answers without ``_links`` at all (clients must fall back to offset paging).
        self.omit_links = False
        #: Old-API behaviour: without date bounds only the last month is listed.
        self.default_last_month = True
        #: Seconds a forced sync keeps the connection busy (0: immediate).
        self.sync_seconds = 0.0
        self.webview_outcomes: deque[WebviewOutcome] = deque()
        self.webview_visits: list[dict[str, str]] = []
        #: Event name -> URL that receives it (``CONNECTION_SYNCED``...).
        self.webhook_urls: dict[str, str] = {}
        self.webhook_deliveries: list[tuple[str, int]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, port: int = 0) -> FakePowens:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_route("*", "/2.0/{tail:.*}", self._dispatch)
        app.router.add_get("/webview/{lang}/{flow}", self._webview)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        self._closing.set()
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakePowens:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/2.0/"

    @property
    def webview_base(self) -> str:
        return f"{self.origin}/webview/"

    def now(self) -> dt.datetime:
        return self.clock.now()

    def _next_id(self) -> int:
        return next(self._ids)

    # -- control API: data ---------------------------------------------------------------

    def create_user(self) -> FakeUser:
        """A user with a permanent token (not counted as a billed creation)."""
        user = FakeUser(self._next_id(), secrets.token_urlsafe(32), self.now())
        self.users[user.id] = user
        self.tokens[user.token] = user.id
        return user

    def add_connection(
        self,
        user: FakeUser | int,
        *,
        state: str | None = None,
        bank_name: str = "Connecteur de test",
        connector_uuid: str = TEST_CONNECTOR_UUID,
        access_expire: dt.datetime | None = None,
        last_update: dt.datetime | None = None,
    ) -> FakeConnection:
        user_id = user.id if isinstance(user, FakeUser) else user
        now = self.now()
        connection = FakeConnection(
            id=self._next_id(),
            user_id=user_id,
            connector_uuid=connector_uuid,
            bank_name=bank_name,
            created=now,
            state=state,
            last_update=last_update or now,
            sources=[
                FakeSource(
                    self._next_id(),
                    "openapi",
                    access_expire=access_expire or now + dt.timedelta(days=180),
                )
            ],
        )
        self.connections[connection.id] = connection
        return connection

    def add_account(
        self,
        connection: FakeConnection | int,
        *,
        name: str = "Compte chèque",
        iban: str | None = None,
        currency: str = "EUR",
        balance: Decimal | str = "0.00",
        type: str = "checking",
        disabled: bool = False,
        precision: int | None = None,
    ) -> FakeAccount:
        conn = self._connection(connection)
        number = f"{self._next_id():011d}"
        account = FakeAccount(
            id=self._next_id(),
            connection_id=conn.id,
            user_id=conn.user_id,
            name=name,
            iban=iban if iban is not None else french_iban("13026", "00000", number),
            currency=currency,
            balance=Decimal(balance) if isinstance(balance, str) else balance,
            type=type,
            number=number,
            disabled=self.now() if disabled else None,
            last_update=self.now(),
            precision=precision,
        )
        self.accounts[account.id] = account
        return account

    def add_transaction(
        self,
        account: FakeAccount | int,
        *,
        value: Decimal | str | int,
        date: dt.date,
        wording: str = "VIR SEPA TEST",
        coming: bool = False,
        type: str = "transfer",
        vdate: dt.date | None = None,
        rdate: dt.date | None = None,
        last_update: dt.datetime | None = None,
        counterparty: dict[str, Any] | None = None,
        as_string: bool = False,
    ) -> FakeTransaction:
        """A row; ``value`` text is sent as a JSON number unless ``as_string``."""
        account_id = account.id if isinstance(account, FakeAccount) else account
        now = self.now()
        amount: Decimal | str | int = value
        if isinstance(value, str) and not as_string:
            amount = Decimal(value)
        transaction = FakeTransaction(
            id=self._next_id(),
            account_id=account_id,
            date=date,
            value=amount,
            original_wording=wording,
            last_update=last_update or now,
            date_scraped=now,
            type=type,
            coming=coming,
            rdate=rdate or date,
            vdate=vdate,
            application_date=rdate or date,
            counterparty=counterparty,
        )
        self.transactions[transaction.id] = transaction
        return transaction

    def set_state(
        self, connection: FakeConnection | int, state: str | None, error_message: str | None = None
    ) -> None:
        """Put a connection in a state (None: synchronised); ``last_update`` is kept."""
        conn = self._connection(connection)
        conn.state = state
        conn.error_message = error_message if state else None
        if state == "webauthRequired" and error_message is None:
            conn.error_message = "Redirecting to https://bank.example/sca?session=fake"

    def set_syncing(self, connection: FakeConnection | int, syncing: bool = True) -> None:
        self._connection(connection).syncing = syncing

    def set_access_expire(self, connection: FakeConnection | int, when: dt.datetime) -> None:
        for source in self._connection(connection).sources:
            source.access_expire = when

    def delete_transaction(self, transaction: FakeTransaction | int) -> FakeTransaction:
        """The bank stopped showing the row: ``deleted`` and ``last_update`` set to now."""
        row = self._transaction(transaction)
        row.deleted = row.last_update = self.now()
        return row

    def book(
        self,
        transaction: FakeTransaction | int,
        *,
        new_id: bool = False,
        date: dt.date | None = None,
        value: Decimal | str | None = None,
        wording: str | None = None,
    ) -> FakeTransaction:
        """A coming row is debited: flipped in place, or deleted and replaced under a new id."""
        row = self._transaction(transaction)
        now = self.now()
        if not new_id:
            row.coming = False
            row.date = date or row.date
            row.value = Decimal(value) if isinstance(value, str) else (value or row.value)
            row.original_wording = wording or row.original_wording
            row.last_update = now
            return row
        self.delete_transaction(row)
        return self.add_transaction(
            row.account_id,
            value=value if value is not None else row.value,
            date=date or row.date,
            wording=wording or row.original_wording,
            type=row.type,
            vdate=row.vdate,
        )

    def touch(
        self, transaction: FakeTransaction | int, *, last_update: dt.datetime, **changes: Any
    ) -> FakeTransaction:
        """Change a row with a given ``last_update`` (late, back-dated or skewed changes)."""
        row = self._transaction(transaction)
        for name, value in changes.items():
            if not hasattr(row, name):
                raise AttributeError(name)
            setattr(
                row, name, Decimal(value) if name == "value" and isinstance(value, str) else value
            )
        row.last_update = last_update
        return row

    # -- control API: faults ---------------------------------------------------------------

    def fail_next(
        self, count: int, status: int = 503, *, code: str | None = None, path: str | None = None
    ) -> None:
        """The next ``count`` API calls (under ``path`` if given) answer ``status``."""
        self._faults.append(_Fault(status, count, code, path))

    def rate_limit_next(
        self, count: int, retry_after: str | None = "2", *, path: str | None = None
    ) -> None:
        """The next ``count`` API calls answer 429 with that ``Retry-After`` (None: omitted)."""
        self._faults.append(_Fault(429, count, None, path, retry_after))

    def hold_calls(self) -> None:
        """API calls from now on are recorded, then left unanswered until :meth:`answer_calls`.

        What a client's timeout must cut, whatever the machine's speed: a reply that merely
        comes late may come in time on a slow machine, or a request be cut before it arrives.
        """
        self._answering.clear()

    def answer_calls(self) -> None:
        """The held calls, and the next ones, are answered."""
        self._answering.set()

    def queue_webview(self, *outcomes: WebviewOutcome) -> None:
        self.webview_outcomes.extend(outcomes)

    def calls(self, method: str | None = None, path: str | None = None) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and (path is None or path in r.path)
        ]

    # -- control API: webhooks ---------------------------------------------------------------

    def sign(self, path: str, date: str, body: bytes, secret: str | None = None) -> str:
        key = (secret or self.webhook_secret).encode()
        digest = hmac.new(key, f"POST.{path}.{date}.".encode() + body, hashlib.sha256).digest()
        return base64.b64encode(digest).decode()

    def webhook_payload(
        self, event: str, connection: FakeConnection | int, account: FakeAccount | None = None
    ) -> dict[str, Any]:
        """The payload Powens sends for ``event`` (reference section 6)."""
        conn = self._connection(connection)
        user = {"id": conn.user_id, "signin": paris_text(self.users[conn.user_id].created)}
        if event == "CONNECTION_DELETED":
            return {"id": conn.id, "id_user": conn.user_id}
        if event == "ACCOUNT_SYNCED":
            target = account or next(
                a for a in self.accounts.values() if a.connection_id == conn.id
            )
            document = self._account_json(target)
            document["transactions"] = [
                self._transaction_json(t)
                for t in self.transactions.values()
                if t.account_id == target.id
            ]
            return document
        document = self._connection_json(conn, expand=set())
        document["accounts"] = [
            {
                **self._account_json(a),
                "transactions": [
                    self._transaction_json(t)
                    for t in self.transactions.values()
                    if t.account_id == a.id
                ],
            }
            for a in self.accounts.values()
            if a.connection_id == conn.id and a.disabled is None
        ]
        return {"user": user, "connection": document}

    async def emit_webhook(
        self,
        event: str,
        connection: FakeConnection | int,
        *,
        url: str | None = None,
        account: FakeAccount | None = None,
        secret: str | None = None,
        signed: bool = True,
        body: bytes | None = None,
    ) -> int:
        """POST a signed webhook (to ``url`` or the registered one); returns the status."""
        target = url or self.webhook_urls[event]
        if body is None:
            body = dumps(self.webhook_payload(event, connection, account)).encode()
        date = self.now().strftime("%Y-%m-%dT%H:%M:%SZ")
        headers = {"Content-Type": "application/json"}
        if signed:
            headers["BI-Signature-Date"] = date
            headers["BI-Signature"] = self.sign(urlsplit(target).path, date, body, secret)
        if self._http is None:
            self._http = aiohttp.ClientSession()
        async with self._http.post(target, data=body, headers=headers) as response:
            self.webhook_deliveries.append((event, response.status))
            return response.status

    async def drain(self) -> None:
        """Wait for background work (syncs, webhook deliveries) to finish."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- lookups ---------------------------------------------------------------------------

    def _connection(self, connection: FakeConnection | int) -> FakeConnection:
        return self.connections[
            connection.id if isinstance(connection, FakeConnection) else connection
        ]

    def _transaction(self, transaction: FakeTransaction | int) -> FakeTransaction:
        key = transaction.id if isinstance(transaction, FakeTransaction) else transaction
        return self.transactions[key]

    # -- JSON views ------------------------------------------------------------------------

    def _connection_json(self, conn: FakeConnection, expand: set[str]) -> dict[str, Any]:
        expire = max((s.access_expire for s in conn.sources if s.access_expire), default=None)
        document: dict[str, Any] = {
            "id": conn.id,
            "id_user": conn.user_id,
            "id_connector": 40,
            "connector_uuid": conn.connector_uuid,
            "id_bank": 40,
            "state": conn.state,
            "error": conn.state,
            "error_message": conn.error_message,
            "fields": [{"name": "password", "type": "password"}]
            if conn.state in _FIELDS_STATES
            else None,
            "last_update": paris_text(conn.last_update),
            "created": paris_text(conn.created),
            "active": conn.active,
            "last_push": None,
            "expire": paris_text(expire),
            "next_try": paris_text(conn.next_try),
        }
        if "connector" in expand:
            document["connector"] = {
                "id": 40,
                "uuid": conn.connector_uuid,
                "name": conn.bank_name,
                "capabilities": ["bank"],
            }
        if "sources" in expand:
            document["sources"] = [
                {
                    "id": s.id,
                    "id_connection": conn.id,
                    "name": s.name,
                    "state": conn.state,
                    "last_update": paris_text(conn.last_update),
                    "disabled": s.disabled,
                    "access_expire": paris_text(s.access_expire),
                }
                for s in conn.sources
            ]
        if "accounts" in expand or "all_accounts" in expand:
            everything = "all_accounts" in expand
            document["accounts"] = [
                self._account_json(a)
                for a in self.accounts.values()
                if a.connection_id == conn.id and (everything or a.disabled is None)
            ]
        return document

    def _account_json(self, account: FakeAccount) -> dict[str, Any]:
        precision = (
            account.precision
            if account.precision is not None
            else _CURRENCY_PRECISION.get(account.currency, 2)
        )
        return {
            "id": account.id,
            "id_connection": account.connection_id,
            "id_user": account.user_id,
            "id_source": None,
            "id_parent": None,
            "number": account.number,
            "original_name": account.name,
            "name": account.name,
            "iban": account.iban,
            "bic": account.bic,
            "currency": {
                "id": account.currency,
                "symbol": _CURRENCY_SYMBOL.get(account.currency, account.currency),
                "prefix": False,
                "precision": precision,
                "name": account.currency,
            },
            "balance": account.balance,
            "coming": None,
            "display": True,
            "last_update": paris_text(account.last_update),
            "deleted": paris_text(account.deleted),
            "disabled": paris_text(account.disabled),
            "type": account.type,
            "usage": account.usage,
            "bookmarked": 0,
            "error": None,
            "company_name": None,
            "loan": None,
            "webid": None,
        }

    def _transaction_json(self, row: FakeTransaction) -> dict[str, Any]:
        return {
            "id": row.id,
            "id_account": row.account_id,
            "webid": None,
            "application_date": (row.application_date or row.date).isoformat(),
            "date": row.date.isoformat(),
            "datetime": None,
            "vdate": row.vdate.isoformat() if row.vdate else None,
            "vdatetime": None,
            "rdate": (row.rdate or row.date).isoformat(),
            "rdatetime": None,
            "bdate": None,
            "value": row.value,
            "gross_value": row.value,
            "type": row.type,
            "original_wording": row.original_wording,
            "simplified_wording": row.original_wording.title(),
            "stemmed_wording": row.original_wording.lower(),
            "wording": row.original_wording.title(),
            "categories": [],
            "state": "parsed",
            "date_scraped": paris_text(row.date_scraped),
            "coming": row.coming,
            "active": True,
            "comment": None,
            "last_update": paris_text(row.last_update),
            "deleted": paris_text(row.deleted),
            "original_value": None,
            "original_currency": None,
            "commission": None,
            "country": None,
            "card": row.card,
            "counterparty": row.counterparty,
            "documents_count": 0,
        }

    # -- HTTP plumbing ---------------------------------------------------------------------

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    async def _until_answering(self) -> None:
        waits = [
            asyncio.ensure_future(self._answering.wait()),
            asyncio.ensure_future(self._closing.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/2.0/"):
            return await handler(request)  # type: ignore[no-any-return]
        self.requests.append(
            RecordedRequest(
                request.method,
                request.path,
                request.query_string,
                "Authorization" in request.headers,
            )
        )
        if not self._answering.is_set():
            await self._until_answering()
        for fault in self._faults:
            if fault.remaining > 0 and (fault.path is None or fault.path in request.path):
                fault.remaining -= 1
                if fault.status == 429:
                    response = _error(429, "tooManyRequests", "Too many requests")
                    if fault.retry_after is not None:
                        response.headers["Retry-After"] = fault.retry_after
                    return response
                if fault.code is None:
                    return web.Response(status=fault.status, text="<html>Bad gateway</html>")
                return _error(fault.status, fault.code)
        self._faults = [fault for fault in self._faults if fault.remaining > 0]
        return await handler(request)  # type: ignore[no-any-return]

    async def _body(self, request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        if request.content_type == "application/json":
            document = await request.json()
            return document if isinstance(document, dict) else {}
        form = await request.post()
        return {key: value for key, value in form.items() if isinstance(value, str)}

    def _user_of(self, request: web.Request) -> FakeUser | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return None
        token = header[len("Bearer ") :]
        if token in self.tokens:
            return self.users.get(self.tokens[token])
        temporary = self._temporary_tokens.get(token)
        if temporary is not None and temporary[1] > self.now():
            return self.users.get(temporary[0])
        return None

    def _href(self, path: str, query: list[tuple[str, str | None]]) -> str:
        parts = [
            quote(k, safe="") if v is None else f"{quote(k, safe='')}={quote(v, safe='')}"
            for k, v in query
        ]
        href = f"{path}?{'&'.join(parts)}" if parts else path
        return self.origin + href if self.absolute_links else href

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info["tail"].strip("/")
        segments = tail.split("/") if tail else []
        method = request.method
        if segments[:1] == ["auth"]:
            return await self._auth(request, segments[1:])
        user = self._user_of(request)
        if user is None:
            return _error(401, "forbidden", "Invalid or missing token")
        if segments[:1] != ["users"] or len(segments) < 2:
            return _error(404, "notFound", f"Unknown route /{tail}")
        if segments[1] not in ("me", str(user.id)):
            return _error(403, "forbidden", "Not your user")
        rest = segments[2:]
        if not rest:
            if method == "GET":
                return _json(
                    {"id": user.id, "signin": paris_text(user.created), "platform": "fake"}
                )
            if method == "DELETE":
                self._delete_user(user)
                return web.Response(status=204)
            return _error(405, "methodNotAllowed")
        head = rest[0]
        if head == "connections":
            return await self._connections(request, user, rest[1:])
        if head == "accounts":
            return await self._accounts(request, user, rest[1:])
        if head == "transactions":
            if len(rest) == 1 and method == "GET":
                return self._list_transactions(request, user, None, None)
            if len(rest) == 2 and rest[1].isdigit():
                row = self.transactions.get(int(rest[1]))
                if row is None or self.accounts[row.account_id].user_id != user.id:
                    return _error(404, "notFound")
                return _json(self._transaction_json(row))
        return _error(404, "notFound", f"Unknown route /{tail}")

    # -- /auth -----------------------------------------------------------------------------

    async def _auth(self, request: web.Request, segments: list[str]) -> web.StreamResponse:
        route = "/".join(segments)
        method = request.method
        if route == "init" and method == "POST":
            body = await self._body(request)
            if str(body.get("client_id")) != self.client_id:
                return _error(400, "invalidValue", "Unknown client_id")
            if body.get("client_secret") is None:
                self.user_creations += 1
                user = FakeUser(self._next_id(), secrets.token_urlsafe(32), self.now(), True)
                self.users[user.id] = user
                self._temporary_tokens[user.token] = (user.id, self.now() + CODE_LIFETIME)
                return _json(
                    {
                        "auth_token": user.token,
                        "type": "temporary",
                        "id_user": user.id,
                        "expires_in": 1800,
                    }
                )
            if body.get("client_secret") != self.client_secret:
                return _error(400, "invalidValue", "Wrong client_secret")
            self.user_creations += 1
            user = self.create_user()
            return _json(
                {
                    "auth_token": user.token,
                    "type": "permanent",
                    "id_user": user.id,
                    "expires_in": None,
                }
            )
        if route == "token/code" and method == "GET":
            user = self._user_of(request)
            if user is None:
                return _error(401, "forbidden", "Invalid or missing token")
            kind = request.query.get("type", "requestAccess")
            if kind not in ("singleAccess", "requestAccess"):
                return _error(400, "invalidValue", "type")
            code = secrets.token_urlsafe(24)
            self._codes[code] = (user.id, self.now() + CODE_LIFETIME, kind == "singleAccess")
            return _json(
                {
                    "code": code,
                    "type": "temporary",
                    "access": "single" if kind == "singleAccess" else "standard",
                    "expires_in": 1800,
                }
            )
        if route == "token/access" and method == "POST":
            body = await self._body(request)
            if (
                str(body.get("client_id")) != self.client_id
                or body.get("client_secret") != self.client_secret
            ):
                return _error(400, "invalidValue", "Wrong client credentials")
            user = self._use_code(str(body.get("code") or ""))
            if user is None:
                return _error(400, "invalidValue", "Invalid code")
            token = secrets.token_urlsafe(32)
            self.tokens[token] = user.id
            user.anonymous = False
            return _json({"access_token": token, "token_type": "Bearer"})
        if route == "renew" and method == "POST":
            body = await self._body(request)
            if (
                str(body.get("client_id")) != self.client_id
                or body.get("client_secret") != self.client_secret
            ):
                return _error(400, "invalidValue", "Wrong client credentials")
            if body.get("id_user") is None:
                self.user_creations += 1
                user = self.create_user()
                return _json({"access_token": user.token, "token_type": "Bearer"})
            user_id = int(body["id_user"])
            if user_id not in self.users:
                return _error(404, "notFound")
            if body.get("revoke_previous"):
                for token in [t for t, uid in self.tokens.items() if uid == user_id]:
                    del self.tokens[token]
            token = secrets.token_urlsafe(32)
            self.tokens[token] = user_id
            return _json({"access_token": token, "token_type": "Bearer"})
        if route == "token" and method == "DELETE":
            header = request.headers.get("Authorization", "")
            token = header.removeprefix("Bearer ")
            if token not in self.tokens:
                return _error(401, "forbidden")
            del self.tokens[token]
            return web.Response(status=204)
        return _error(404, "notFound", f"Unknown route /auth/{route}")

    def _use_code(self, code: str) -> FakeUser | None:
        entry = self._codes.get(code)
        if entry is None:
            return None
        user_id, expires, single = entry
        if expires <= self.now():
            del self._codes[code]
            return None
        if single:
            del self._codes[code]
        return self.users.get(user_id)

    def _delete_user(self, user: FakeUser) -> None:
        for conn in [c for c in self.connections.values() if c.user_id == user.id]:
            self._delete_connection(conn)
        for token in [t for t, uid in self.tokens.items() if uid == user.id]:
            del self.tokens[token]
        del self.users[user.id]

    # -- connections -----------------------------------------------------------------------

    async def _connections(
        self, request: web.Request, user: FakeUser, rest: list[str]
    ) -> web.StreamResponse:
        method = request.method
        expand = set(filter(None, request.query.get("expand", "").split(",")))
        if not rest:
            if method == "GET":
                return _json(
                    {
                        "connections": [
                            self._connection_json(c, expand)
                            for c in self.connections.values()
                            if c.user_id == user.id
                        ]
                    }
                )
            if method == "POST":
                return _error(400, "notSupported", "Agent mode is not available in partner mode")
            return _error(405, "methodNotAllowed")
        if not rest[0].isdigit():
            return _error(400, "invalidValue", "connection id")
        conn = self.connections.get(int(rest[0]))
        if conn is None or conn.user_id != user.id:
            return _error(404, "notFound", "Connection not found")
        if len(rest) == 2 and rest[1] == "accounts" and method == "GET":
            listed = self._visible_accounts(request, lambda a: a.connection_id == conn.id)
            return _json({"accounts": [self._account_json(a) for a in listed]})
        if len(rest) == 2 and rest[1] == "transactions" and method == "GET":
            return self._list_transactions(request, user, conn.id, None)
        if len(rest) != 1:
            return _error(404, "notFound")
        if method == "GET":
            return _json(self._connection_json(conn, expand))
        if method == "DELETE":
            self._delete_connection(conn)
            return web.Response(status=204)
        if method == "PUT":
            if conn.syncing:
                return _error(409, "connectionLocked", "A synchronization is already in progress")
            await self._synchronise(conn)
            return _json(self._connection_json(conn, expand))
        if method == "POST":
            body = await self._body(request)
            if body.get("resume") and conn.state == "decoupled":
                conn.state_after_sync = None
            await self._synchronise(conn)
            return _json(self._connection_json(conn, expand))
        return _error(405, "methodNotAllowed")

    async def _synchronise(self, conn: FakeConnection) -> None:
        """What a sync does: state from ``state_after_sync``; on success ``last_update``."""

        async def finish() -> None:
            conn.state = conn.state_after_sync
            conn.error_message = None if conn.state is None else conn.error_message
            if conn.state is None:
                conn.last_update = self.now()
                for account in self.accounts.values():
                    if account.connection_id == conn.id and account.disabled is None:
                        account.last_update = self.now()
            conn.syncing = False
            if "CONNECTION_SYNCED" in self.webhook_urls:
                self._spawn(self.emit_webhook("CONNECTION_SYNCED", conn))

        if self.sync_seconds > 0:
            conn.syncing = True

            async def later() -> None:
                await self._pause(self.sync_seconds)
                await finish()

            self._spawn(later())
            return
        await finish()

    def _delete_connection(self, conn: FakeConnection) -> None:
        for account in [a for a in self.accounts.values() if a.connection_id == conn.id]:
            for row in [t for t in self.transactions.values() if t.account_id == account.id]:
                del self.transactions[row.id]
            del self.accounts[account.id]
        del self.connections[conn.id]
        if "CONNECTION_DELETED" in self.webhook_urls:
            payload = dumps({"id": conn.id, "id_user": conn.user_id}).encode()
            self._spawn(self.emit_webhook("CONNECTION_DELETED", conn.id, body=payload))

    # -- accounts --------------------------------------------------------------------------

    def _visible_accounts(self, request: web.Request, keep: Any) -> list[FakeAccount]:
        everything = _flag(request, "all")
        return [
            a
            for a in self.accounts.values()
            if keep(a) and (everything or (a.disabled is None and a.deleted is None))
        ]

    async def _accounts(
        self, request: web.Request, user: FakeUser, rest: list[str]
    ) -> web.StreamResponse:
        method = request.method
        if not rest:
            if method != "GET":
                return _error(405, "methodNotAllowed")
            listed = self._visible_accounts(request, lambda a: a.user_id == user.id)
            if not listed:
                return _error(400, "noAccount", "No account")
            balances: dict[str, Decimal] = {}
            for account in listed:
                if account.disabled is None and account.deleted is None:
                    balances[account.currency] = balances.get(
                        account.currency, Decimal(0)
                    ) + Decimal(account.balance)
            return _json(
                {"accounts": [self._account_json(a) for a in listed], "balances": balances}
            )
        if not rest[0].isdigit():
            return _error(400, "invalidValue", "account id")
        account = self.accounts.get(int(rest[0]))
        if account is None or account.user_id != user.id:
            return _error(404, "notFound", "Account not found")
        if account.disabled is not None and not _flag(request, "all"):
            return _error(404, "notFound", "Account not found")  # invisible without ?all
        if len(rest) == 2 and rest[1] == "transactions" and method == "GET":
            return self._list_transactions(request, user, None, account.id)
        if len(rest) != 1:
            return _error(404, "notFound")
        if method == "GET":
            return _json(self._account_json(account))
        if method in ("POST", "PUT"):
            body = await self._body(request)
            if "disabled" in body:
                disabled = body["disabled"]
                if isinstance(disabled, str):
                    disabled = disabled.lower() in ("true", "1")
                if disabled and account.disabled is None:
                    account.disabled = self.now()
                elif not disabled:
                    account.disabled = None
            for name in ("name", "usage"):
                if name in body:
                    setattr(account, name, str(body[name]))
            return _json(self._account_json(account))
        return _error(405, "methodNotAllowed")

    # -- transactions ----------------------------------------------------------------------

    def _list_transactions(
        self,
        request: web.Request,
        user: FakeUser,
        connection_id: int | None,
        account_id: int | None,
    ) -> web.StreamResponse:
        query = request.query
        try:
            limit = int(query.get("limit", "50"))
            offset = int(query.get("offset", "0"))
        except ValueError:
            return _error(400, "invalidValue", "limit/offset")
        if not 1 <= limit <= MAX_LIMIT or offset < 0:
            return _error(400, "invalidValue", f"limit must be 1..{MAX_LIMIT}")
        which = query.get("filter", "application_date")
        if which not in ("application_date", "date"):
            return _error(400, "invalidValue", "filter")
        try:
            low = _date_bound(query.get("min_date"), low=True)
            high = _date_bound(query.get("max_date"), low=False)
            since = parse_paris(query["last_update"]) if query.get("last_update") else None
        except ValueError:
            return _error(400, "invalidValue", "date format")
        if low is None and high is None and self.default_last_month:
            today = self.now().astimezone(PARIS).date()
            low, high = today - dt.timedelta(days=31), today
        everything = _flag(request, "all")
        only_deleted = query.get("deleted", "").lower() in ("true", "1")
        rows: list[FakeTransaction] = []
        for row in self.transactions.values():
            account = self.accounts.get(row.account_id)
            if account is None or account.user_id != user.id:
                continue
            if connection_id is not None and account.connection_id != connection_id:
                continue
            if account_id is not None and account.id != account_id:
                continue
            if only_deleted and row.deleted is None:
                continue
            if row.deleted is not None and not (everything or only_deleted):
                continue
            day = row.date if which == "date" else (row.application_date or row.date)
            if (low is not None and day < low) or (high is not None and day > high):
                continue
            if since is not None and row.last_update <= since:
                continue
            rows.append(row)
        rows.sort(key=lambda r: (r.date, r.id), reverse=True)
        size = min(limit, self.page_size or limit)
        page = rows[offset : offset + size]
        params = [
            (k, v if v != "" or k not in ("all",) else None)
            for k, v in query.items()
            if k != "offset"
        ]
        path = request.path

        def link(at: int) -> dict[str, str]:
            return {"href": self._href(path, [*params, ("offset", str(at))])}

        links: dict[str, Any] = {
            "self": link(offset),
            "prev": link(max(0, offset - size)) if offset else None,
        }
        if offset + size < len(rows):
            links["next"] = link(offset + size)
        elif self.cyclic_links:
            links["next"] = link(0) if offset else link(offset)
        dates = [r.date for r in rows]
        document = {
            "transactions": [self._transaction_json(r) for r in page],
            "first_date": min(dates).isoformat() if dates else None,
            "last_date": max(dates).isoformat() if dates else None,
            "result_min_date": low.isoformat() if low else None,
            "result_max_date": high.isoformat() if high else None,
            "total": len(rows),
            "_links": links,
        }
        if self.omit_links:
            del document["_links"]
        return _json(document)

    # -- Webview ---------------------------------------------------------------------------

    async def _webview(self, request: web.Request) -> web.StreamResponse:
        lang, flow = request.match_info["lang"], request.match_info["flow"]
        params = dict(request.query)
        self.webview_visits.append({"lang": lang, "flow": flow, **params})
        if lang not in ("en", "fr", "de", "nl", "it", "es", "pt") or flow not in (
            "connect",
            "reconnect",
            "manage",
        ):
            return web.Response(status=404, text="Page introuvable")
        if params.get("domain") != self.domain_host or params.get("client_id") != self.client_id:
            return web.Response(status=400, text="Domaine ou client_id inconnu")
        redirect_uri = params.get("redirect_uri", "")
        parts = urlsplit(redirect_uri)
        if (
            not parts.scheme
            or parts.query
            or (self.redirect_uris and redirect_uri not in self.redirect_uris)
        ):
            return web.Response(status=400, text="redirect_uri non autorisée")
        state = params.get("state")
        code = params.get("code")
        outcome = self.webview_outcomes.popleft() if self.webview_outcomes else WebviewOutcome()

        def back(**values: str | None) -> NoReturn:
            query = {k: v for k, v in values.items() if v is not None}
            if state is not None:
                query["state"] = state
            raise web.HTTPFound(f"{redirect_uri}?{urlencode(query)}")

        user: FakeUser | None
        returned_code: str | None = None
        if code:
            user = self._use_code(code)
            if user is None:
                return back(error="session_expired", error_description="Code invalide ou expiré")
        elif flow == "connect":
            user = FakeUser(self._next_id(), secrets.token_urlsafe(32), self.now(), True)
            self.users[user.id] = user
            returned_code = secrets.token_urlsafe(24)
            self._codes[returned_code] = (user.id, self.now() + CODE_LIFETIME, True)
        else:
            return web.Response(status=400, text="code manquant")
        if outcome.error:
            return back(error=outcome.error, error_description=outcome.error_description or None)
        if flow == "connect":
            conn = self.add_connection(
                user, bank_name=outcome.bank_name, connector_uuid=outcome.connector_uuid
            )
            conn.state = outcome.state
            for spec in outcome.accounts:
                chosen = outcome.chosen is None or spec.name in outcome.chosen
                self.add_account(
                    conn,
                    name=spec.name,
                    iban=spec.iban,
                    currency=spec.currency,
                    balance=spec.balance,
                    type=spec.type,
                    disabled=not chosen,
                )
            if "CONNECTION_SYNCED" in self.webhook_urls:
                self._spawn(self.emit_webhook("CONNECTION_SYNCED", conn))
            return back(connection_id=str(conn.id), code=returned_code)
        connection_id = params.get("connection_id")
        conn_obj = (
            self.connections.get(int(connection_id))
            if connection_id and connection_id.isdigit()
            else None
        )
        if flow == "reconnect":
            if conn_obj is None or conn_obj.user_id != user.id:
                return back(error="server_error", error_description="Connexion inconnue")
            conn_obj.state_after_sync = outcome.state
            await self._synchronise(conn_obj)
            if outcome.chosen is not None:
                for account in self.accounts.values():
                    if account.connection_id == conn_obj.id:
                        account.disabled = None if account.name in outcome.chosen else self.now()
            return back()
        # manage
        if conn_obj is not None and conn_obj.user_id == user.id and outcome.delete_connection:
            self._delete_connection(conn_obj)
            return back(connection_id=str(conn_obj.id), connection_deleted="true")
        return back(connection_id=connection_id)


def _flag(request: web.Request, name: str) -> bool:
    """A value-less flag (``?all``): present and not explicitly false."""
    if name not in request.query:
        return False
    return request.query[name].lower() not in ("false", "0")


def _date_bound(text: str | None, *, low: bool) -> dt.date | None:
    """``YYYY-MM-DD``, ``YYYY-MM`` or ``YYYY`` as an inclusive bound."""
    if not text:
        return None
    pieces = text.split("-")
    if len(pieces) == 3:
        return dt.date.fromisoformat(text)
    year = int(pieces[0])
    if len(pieces) == 2:
        month = int(pieces[1])
        day = 1 if low else calendar.monthrange(year, month)[1]
        return dt.date(year, month, day)
    if len(pieces) == 1:
        return dt.date(year, 1, 1) if low else dt.date(year, 12, 31)
    raise ValueError(text)


def demo_data(fake: FakePowens) -> Iterator[str]:
    """A user with one synchronised connection, a few rows, and one connection in error."""
    user = fake.create_user()
    conn = fake.add_connection(user)
    checking = fake.add_account(conn, name="Compte chèque", balance="5939.46")
    fake.add_account(conn, name="Livret A", type="savings", balance="13947.47", disabled=True)
    today = fake.now().astimezone(PARIS).date()
    fake.add_transaction(checking, value="-1234.56", date=today, wording="PRLV SEPA URSSAF")
    fake.add_transaction(checking, value="2500.00", date=today, wording="VIR SEPA CLIENT")
    fake.add_transaction(
        checking, value="-42.10", date=today, wording="CB CARREFOUR", coming=True, type="card"
    )
    broken = fake.add_connection(user, state="SCARequired")
    yield f"user id: {user.id}"
    yield f"permanent token: {user.token}"
    yield f"connection ok: {conn.id}, connection in error (SCARequired): {broken.id}"


async def _serve(port: int) -> None:
    from releves_mailer.clock import SystemClock

    fake = FakePowens(SystemClock())
    await fake.start(port)
    print(f"fake Powens API: {fake.base_url}  webview: {fake.webview_base}")
    print(f"domain: {fake.domain_host}  client_id: {fake.client_id}")
    print(f"client_secret: {fake.client_secret}  webhook_secret: {fake.webhook_secret}")
    for line in demo_data(fake):
        print(line)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the fake Powens server on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    arguments = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(arguments.port))


if __name__ == "__main__":
    main()

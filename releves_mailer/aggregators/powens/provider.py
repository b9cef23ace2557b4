"""The Powens provider: the Provider contract plus the partner-mode calls of the web flow.

One Powens *user* per redevable, created once (``POST /auth/init`` is billed) through
:meth:`PowensProvider.ensure_user`; its permanent token is what :class:`ProviderAccess` carries
(decrypted), and ``connection_id`` names one of the user's connections (empty for user-level
calls such as :meth:`temporary_code`).

Transactions are read per connection (``/users/me/connections/{id}/transactions``) with
``all`` (deleted and coming rows come back), ``limit=1000`` and ``_links.next`` pagination.
``changed_since`` becomes a ``last_update`` filter *minus* :attr:`cursor_overlap` (one hour by
default: Powens stamps rows in naive Paris time at second resolution, the autumn DST hour
repeats, and a row may be committed after a pull that started before it). The rows of the
overlap come back again: the result is a superset of the contract's "strictly later", which the
sync absorbs by upserting on the provider id.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import aiohttp

from releves_mailer.aggregators.powens.client import (
    PowensAPIError,
    PowensClient,
    Query,
    RetryPolicy,
    Sleep,
    Timeouts,
)
from releves_mailer.aggregators.powens.parsing import (
    UNKNOWN_STATE,
    PowensConnection,
    connection_from_json,
    currencies_of,
    paris_naive,
    parse_account,
    parse_transaction,
    status_from_connection,
)
from releves_mailer.aggregators.powens.webview import DEFAULT_WEBVIEW_BASE, build_webview_url
from releves_mailer.clock import PARIS, Clock
from releves_mailer.collect.provider import (
    ConnectionStatus,
    ProviderAccess,
    ProviderAccount,
    ProviderError,
    ProviderTransaction,
)
from releves_mailer.config import PowensSection

__all__ = ["PAGE_LIMIT", "PowensProvider", "TemporaryCode"]

log = logging.getLogger("releves_mailer.aggregators.powens")

#: Powens' maximum page size for transactions.
PAGE_LIMIT = 1000
#: Date bounds sent when the caller gives none: Powens' old API defaulted to "last month"
#: without bounds, and coming rows (deferred card) can be dated weeks ahead.
_EARLIEST = dt.date(2000, 1, 1)
_FUTURE = dt.timedelta(days=400)


@dataclasses.dataclass(frozen=True, slots=True)
class TemporaryCode:
    """A Powens temporary code for the Webview (30 min, single use by default)."""

    code: str
    expires_in: int | None
    single_use: bool

    def __repr__(self) -> str:  # the code is a credential: keep it out of logs
        return f"TemporaryCode(expires_in={self.expires_in}, single_use={self.single_use})"


class PowensProvider:
    """:class:`~releves_mailer.collect.provider.Provider` for Powens, partner mode."""

    name = "powens"
    display_name = "Powens"

    def __init__(
        self,
        client: PowensClient,
        clock: Clock,
        *,
        cursor_overlap: dt.timedelta = dt.timedelta(hours=1),
        page_limit: int = PAGE_LIMIT,
        webview_base: str = DEFAULT_WEBVIEW_BASE,
    ) -> None:
        if not 1 <= page_limit <= PAGE_LIMIT:
            raise ValueError(f"page_limit must be 1..{PAGE_LIMIT}")
        self.client = client
        self.clock = clock
        self.cursor_overlap = cursor_overlap
        self.page_limit = page_limit
        self.webview_base = webview_base

    @classmethod
    def from_config(
        cls,
        section: PowensSection,
        session: aiohttp.ClientSession,
        clock: Clock,
        *,
        base_url: str | None = None,
        webview_base: str = DEFAULT_WEBVIEW_BASE,
        sleep: Sleep | None = None,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
    ) -> PowensProvider:
        """Build from ``[aggregator.powens]``; the caller owns ``session``."""
        extra: dict[str, Any] = {}
        if sleep is not None:
            extra["sleep"] = sleep
        client = PowensClient(
            session,
            domain=section.domain,
            client_id=section.client_id,
            client_secret=section.client_secret.get_secret_value(),
            base_url=base_url,
            clock=clock,
            retry=retry,
            timeouts=timeouts,
            **extra,
        )
        return cls(client, clock, webview_base=webview_base)

    # -- users and codes -------------------------------------------------------------------

    async def ensure_user(self, existing: ProviderAccess | None) -> ProviderAccess:
        """The redevable's Powens user: ``existing`` as is, or a new one when None.

        Creating a user is billed: the caller must store the returned access (token encrypted)
        *before* anything else, and serialise calls for one redevable (the check "has a
        user?" and the creation must not race). The creation is never retried after a
        timeout or a 5xx (Powens may have created the user anyway): the error says so.
        """
        if existing is not None and existing.token and existing.user_id:
            return existing
        try:
            document = await self.client.auth_init()
        except PowensAPIError as error:
            if error.status == 0 or error.status >= 500:
                raise PowensAPIError(
                    error.code,
                    "création de l'utilisateur Powens incertaine (pas de réponse exploitable) : "
                    "vérifier dans la console Powens avant de réessayer ; " + error.detail,
                    status=error.status,
                    powens_code=error.powens_code,
                ) from error
            raise
        token = document.get("auth_token") or document.get("access_token")
        user_id = document.get("id_user")
        if not token or user_id is None:
            raise PowensAPIError(UNKNOWN_STATE, "réponse de /auth/init sans jeton ni id_user")
        if document.get("type", "permanent") != "permanent":
            raise PowensAPIError(UNKNOWN_STATE, "/auth/init a rendu un jeton temporaire")
        log.info("powens user %s created", user_id)
        return ProviderAccess(token=str(token), connection_id="", user_id=str(user_id))

    @staticmethod
    def access_for(user: ProviderAccess, connection_id: str | int) -> ProviderAccess:
        """The access to one connection of a user."""
        return dataclasses.replace(user, connection_id=str(connection_id))

    async def temporary_code(
        self, access: ProviderAccess, *, single_use: bool = True
    ) -> TemporaryCode:
        """A fresh temporary code for the Webview (``GET /auth/token/code``)."""
        kind = "singleAccess" if single_use else "requestAccess"
        document = await self.client.get("auth/token/code", access.token, [("type", kind)])
        code = document.get("code")
        if not code:
            raise PowensAPIError(UNKNOWN_STATE, "réponse de /auth/token/code sans code")
        expires = document.get("expires_in", document.get("expired_in"))
        return TemporaryCode(
            code=str(code),
            expires_in=int(expires) if isinstance(expires, int) else None,
            single_use=single_use,
        )

    def webview_url(
        self,
        kind: Literal["connect", "reconnect", "manage"],
        code: str | TemporaryCode,
        state: str,
        redirect_uri: str,
        connection_id: str | None = None,
        *,
        lang: str = "fr",
        reset_credentials: bool = False,
        connector_uuids: Iterable[str] = (),
        max_connections: int | None = None,
    ) -> str:
        """The Webview URL for ``kind`` (see :func:`build_webview_url`)."""
        return build_webview_url(
            flow=kind,
            domain_host=self.client.domain_host,
            client_id=self.client.client_id,
            code=code.code if isinstance(code, TemporaryCode) else code,
            redirect_uri=redirect_uri,
            state=state,
            connection_id=connection_id,
            lang=lang,
            reset_credentials=reset_credentials,
            connector_uuids=connector_uuids,
            max_connections=max_connections,
            base=self.webview_base,
        )

    # -- connections -----------------------------------------------------------------------

    @staticmethod
    def _connection_id(access: ProviderAccess, connection_id: str | None) -> str:
        chosen = connection_id or access.connection_id
        if not chosen:
            raise ValueError("no Powens connection id given")
        return str(chosen)

    async def get_connection(
        self, access: ProviderAccess, connection_id: str | None = None
    ) -> PowensConnection:
        cid = self._connection_id(access, connection_id)
        document = await self.client.get(
            f"users/me/connections/{cid}", access.token, [("expand", "connector,sources")]
        )
        return connection_from_json(document)

    async def connection_status(self, access: ProviderAccess) -> ConnectionStatus:
        """The connection's state as Powens last saw it (no forced sync: PSD2 caps them)."""
        connection = await self.get_connection(access)
        return status_from_connection(connection, self.clock.now())

    async def consent_expiry(
        self, access: ProviderAccess, connection_id: str | None = None
    ) -> dt.datetime | None:
        """When the PSD2 consent of the connection expires (earliest ``access_expire``)."""
        return (await self.get_connection(access, connection_id)).consent_expires_at

    # -- accounts --------------------------------------------------------------------------

    async def _raw_accounts(self, access: ProviderAccess) -> list[Mapping[str, Any]]:
        cid = self._connection_id(access, None)
        document = await self.client.get(
            f"users/me/connections/{cid}/accounts", access.token, [("all", None)]
        )
        accounts = document.get("accounts")
        if not isinstance(accounts, list):
            raise PowensAPIError(UNKNOWN_STATE, "réponse Powens sans liste de comptes")
        return accounts

    async def list_accounts(self, access: ProviderAccess) -> Sequence[ProviderAccount]:
        """Every account of the connection, disabled (``ProviderAccount.disabled``) and
        deleted ones included."""
        now = self.clock.now()
        return [parse_account(item, now) for item in await self._raw_accounts(access)]

    # -- transactions ----------------------------------------------------------------------

    def transaction_query(
        self,
        *,
        changed_since: dt.datetime | None,
        min_date: dt.date | None,
        max_date: dt.date | None,
    ) -> Query:
        """The query of a transaction pull (exposed for the documentation and the tests)."""
        if changed_since is None and min_date is None and max_date is None:
            raise ValueError("fetch_transactions needs a cursor or a date window")
        today = self.clock.now().astimezone(PARIS).date()
        query: list[tuple[str, str | None]] = [
            ("filter", "date"),
            ("min_date", (min_date or _EARLIEST).isoformat()),
            ("max_date", (max_date or today + _FUTURE).isoformat()),
        ]
        if changed_since is not None:
            query.append(("last_update", paris_naive(changed_since - self.cursor_overlap)))
        query += [("all", None), ("limit", str(self.page_limit))]
        return query

    async def fetch_transactions(
        self,
        access: ProviderAccess,
        *,
        changed_since: dt.datetime | None = None,
        min_date: dt.date | None = None,
        max_date: dt.date | None = None,
    ) -> Sequence[ProviderTransaction]:
        """Rows of the connection's accounts, deleted and coming ones included.

        With ``changed_since`` the rows changed in the overlap before it come back too (see
        the module docstring); date bounds apply to the booking date (``filter=date``).
        """
        query = self.transaction_query(
            changed_since=changed_since, min_date=min_date, max_date=max_date
        )
        cid = self._connection_id(access, None)
        raw_accounts = await self._raw_accounts(access)
        currencies = currencies_of(raw_accounts)
        rows = await self.client.paginate(
            f"users/me/connections/{cid}/transactions", access.token, query, "transactions"
        )
        now = self.clock.now()
        result: list[ProviderTransaction] = []
        for row in rows:
            account_id = str(row.get("id_account"))
            if account_id not in currencies:
                document = await self.client.get(
                    f"users/me/accounts/{account_id}", access.token, [("all", None)]
                )
                currencies.update(currencies_of([document]))
            try:
                result.append(parse_transaction(row, currencies, now))
            except (KeyError, ValueError, TypeError) as error:
                raise ProviderError(
                    UNKNOWN_STATE, f"transaction Powens illisible {row.get('id')!r} : {error}"
                ) from None
        return result

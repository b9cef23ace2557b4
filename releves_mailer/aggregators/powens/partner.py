"""Powens in partner mode: the redevable's user, temporary codes, the Webview and its callback.

:class:`PowensPartner` implements :class:`~releves_mailer.partner.modes.PartnerMode` over
:class:`~releves_mailer.aggregators.powens.PowensProvider`:

- **one Powens user per redevable**, created at most once (``POST /auth/init`` is billed). It
  is found, in this order, on the connection being repaired, on the redevable's earlier
  connections (``request.previous``), in the ``partner_data`` of its links already opened
  (``request.earlier_data``: a webview cancelled or abandoned before the callback), and in
  this process's memory; only then is one created, under a per-redevable lock (two clicks on
  the same link never create two users). The user's permanent token goes into
  ``partner_data``, which the flow stores encrypted on the link;
- the link opens the Webview with a fresh single-use temporary code (the permanent token
  never reaches a browser): ``connect``, or ``reconnect`` with the connection id and
  ``reset_credentials`` when the flow asks for it;
- at the callback the connection ids are never trusted: the connection and its accounts are
  re-read through the API with the user's token. The accounts the client ticked are the
  enabled ones (Powens enables them itself: no activation call is needed), the others come
  back ``disabled`` and stay inactive here. A new connection to the same bank holding the
  same IBANs as an earlier one supersedes it (the flow closes the old one);
- the PSD2 consent expiry is the earliest ``sources[].access_expire`` of the connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Iterable, Mapping, Sequence

from releves_mailer.aggregators.powens.provider import PowensProvider
from releves_mailer.aggregators.powens.webview import parse_webview_callback
from releves_mailer.collect.provider import ProviderAccess, ProviderAccount, ProviderError
from releves_mailer.collect.sync_accounts import normalise_iban
from releves_mailer.partner.modes import (
    PartnerOutcome,
    WebviewError,
    WebviewFlow,
    WebviewRequest,
    WebviewStart,
)

__all__ = ["PowensPartner", "decode_partner_data", "encode_partner_data"]

_log = logging.getLogger(__name__)

_DATA_VERSION = 1


def encode_partner_data(user: ProviderAccess) -> str:
    """What the flow keeps (encrypted) on the link: the Powens user and its token."""
    return json.dumps({"v": _DATA_VERSION, "user_id": user.user_id, "token": user.token})


def decode_partner_data(data: str | None) -> ProviderAccess | None:
    """The user of :func:`encode_partner_data` (None when absent or unreadable)."""
    if not data:
        return None
    try:
        document = json.loads(data)
    except ValueError:
        return None
    if not isinstance(document, dict) or document.get("v") != _DATA_VERSION:
        return None
    token, user_id = document.get("token"), document.get("user_id")
    if not isinstance(token, str) or not isinstance(user_id, str) or not token or not user_id:
        return None
    return ProviderAccess(token=token, connection_id="", user_id=user_id)


def _user_of(access: ProviderAccess | None) -> ProviderAccess | None:
    if access is None or not access.token or not access.user_id:
        return None
    return dataclasses.replace(access, connection_id="")


class PowensPartner:
    """:class:`~releves_mailer.partner.modes.PartnerMode` of Powens."""

    name = PowensProvider.name
    display_name = PowensProvider.display_name

    def __init__(
        self,
        provider: PowensProvider,
        *,
        lang: str = "fr",
        connector_uuids: Iterable[str] = (),
    ) -> None:
        self.provider = provider
        self.lang = lang
        #: Restrict the bank picker of the ``connect`` flow (empty: every bank).
        self.connector_uuids = tuple(connector_uuids)
        self._users: dict[object, ProviderAccess] = {}
        self._locks: dict[object, asyncio.Lock] = {}

    # -- the redevable's user ----------------------------------------------------------------

    @staticmethod
    def _key(request: WebviewRequest) -> object:
        return request.redevable_id if request.redevable_id is not None else request.customer

    def _known_user(self, request: WebviewRequest) -> ProviderAccess | None:
        found = _user_of(request.connection)
        if found is not None:
            return found
        for access in reversed(request.previous):  # newest connection first
            found = _user_of(access)
            if found is not None:
                return found
        for data in request.earlier_data:
            found = decode_partner_data(data)
            if found is not None:
                return found
        return self._users.get(self._key(request))

    async def user_for(self, request: WebviewRequest) -> ProviderAccess:
        """The redevable's Powens user, created (billed) only when it has none anywhere."""
        found = self._known_user(request)
        if found is not None:
            return found
        key = self._key(request)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            found = self._users.get(key)
            if found is None:
                found = await self.provider.ensure_user(None)
                self._users[key] = found
                _log.info("powens user %s created for redevable %s", found.user_id, key)
        return found

    # -- the Webview -------------------------------------------------------------------------

    async def start_webview(self, request: WebviewRequest) -> WebviewStart:
        if request.flow is WebviewFlow.RECONNECT and (
            request.connection is None or not request.connection.connection_id
        ):
            raise ProviderError("bug", "reconnexion sans connexion")
        user = await self.user_for(request)
        code = await self.provider.temporary_code(user)
        if request.flow is WebviewFlow.RECONNECT:
            assert request.connection is not None
            url = self.provider.webview_url(
                "reconnect",
                code,
                request.state,
                request.redirect_uri,
                request.connection.connection_id,
                lang=self.lang,
                reset_credentials=request.reset_credentials,
            )
        else:
            url = self.provider.webview_url(
                "connect",
                code,
                request.state,
                request.redirect_uri,
                lang=self.lang,
                connector_uuids=self.connector_uuids,
            )
        return WebviewStart(url, encode_partner_data(user))

    async def finish_webview(
        self, request: WebviewRequest, params: Mapping[str, str], partner_data: str | None
    ) -> PartnerOutcome:
        try:
            callback = parse_webview_callback(params)
        except ValueError:
            raise WebviewError("server_error") from None
        if callback.error_code is not None:
            raise WebviewError(callback.error_code)
        if callback.state != request.state:
            raise WebviewError("server_error")
        user = decode_partner_data(partner_data) or self._known_user(request)
        if user is None:
            raise WebviewError("session_expired")
        if request.flow is WebviewFlow.RECONNECT:
            assert request.connection is not None
            connection_id = request.connection.connection_id
        else:
            if not callback.connection_ids:
                raise WebviewError("server_error")
            connection_id = callback.connection_ids[0]
        # Never trust the ids of the callback: re-read them with the user's own token.
        connection = await self.provider.get_connection(user, connection_id)
        if connection.user_id and connection.user_id != user.user_id:
            raise WebviewError("server_error")
        access = self.provider.access_for(user, connection.id)
        accounts = await self.provider.list_accounts(access)
        selected = frozenset(
            account.provider_id
            for account in accounts
            if account.deleted_at is None and not account.disabled
        )
        replaces: frozenset[str] = frozenset()
        if request.flow is WebviewFlow.CONNECT:
            replaces = await self._superseded(
                user, connection.id, connection.connector_uuid, accounts, request.previous
            )
        return PartnerOutcome(
            access=access,
            bank_name=connection.bank_name or self.display_name,
            accounts=accounts,
            selected=selected,
            replaces=replaces,
        )

    async def _superseded(
        self,
        user: ProviderAccess,
        connection_id: str,
        connector_uuid: str,
        accounts: Sequence[ProviderAccount],
        previous: Sequence[ProviderAccess],
    ) -> frozenset[str]:
        """Earlier connections of the same bank holding one of the new connection's IBANs."""
        ibans = {normalise_iban(account.iban) for account in accounts} - {None}
        if not ibans or not connector_uuid:
            return frozenset()
        replaced = set()
        for old in previous:
            if not old.connection_id or old.connection_id == connection_id:
                continue
            if old.user_id != user.user_id:
                continue
            try:
                earlier = await self.provider.get_connection(user, old.connection_id)
                if earlier.connector_uuid != connector_uuid:
                    continue
                old_accounts = await self.provider.list_accounts(
                    self.provider.access_for(user, old.connection_id)
                )
            except ProviderError:
                continue  # gone at Powens: nothing to compare with
            if ibans & {normalise_iban(account.iban) for account in old_accounts}:
                replaced.add(old.connection_id)
        return frozenset(replaced)

    # -- consent -----------------------------------------------------------------------------

    async def consent_expiry(
        self, access: ProviderAccess, granted_at: dt.datetime
    ) -> dt.datetime | None:
        """The earliest ``access_expire`` of the connection's sources (None: not reported)."""
        return await self.provider.consent_expiry(access)

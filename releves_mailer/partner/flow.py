"""The webview round trip of a secure link: open it, redirect, and finish at the callback.

Opening a valid link mints a fresh aggregator code and returns the webview URL; ``state`` is
a new random nonce bound to the link (stored), so the callback can only finish the link that
opened the webview. The callback attaches the accounts (new connection) or updates the
credentials (existing connection), marks the link used, records the connection's events and
queues the notification of the account holder, all in one transaction. A replayed callback
changes nothing and shows the same page.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from releves_mailer.collect.connections import add_connection, close_replaced_connection
from releves_mailer.collect.provider import ProviderAccess, ProviderError
from releves_mailer.collect.sync_accounts import (
    new_bank_account,
    normalise_iban,
    reattach_account,
)
from releves_mailer.db import Database
from releves_mailer.db.models import (
    BankAccount,
    BankConnection,
    BankEvent,
    BankEventKind,
    ConnectionState,
    ConnectionWatch,
    PortalAccount,
    Redevable,
    SecureLink,
)
from releves_mailer.notify.outbox import Outbox
from releves_mailer.partner.links import LinkKind, LinkService, LinkState, link_state
from releves_mailer.partner.mails import MailComposer
from releves_mailer.partner.modes import (
    PartnerMode,
    PartnerOutcome,
    WebviewError,
    WebviewFlow,
    WebviewRequest,
)
from releves_mailer.signing.secrets import KeyRing, KeyRingError

__all__ = ["FinishedLink", "LinkProblem", "LinkRefused", "PartnerFlow"]

_log = logging.getLogger(__name__)

#: The callback must come back within this time after the link was opened.
STATE_LIFETIME = dt.timedelta(hours=1)
#: Error codes for which the client is asked for every credential again.
_RESET_CREDENTIALS = frozenset({"wrongpass", "passwordExpired"})
#: How many earlier links' ``partner_data`` a webview request carries.
_EARLIER_DATA = 10


class LinkProblem(enum.StrEnum):
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    USED = "used"
    INACTIVE = "inactive"
    CLOSED = "closed"
    CANCELLED = "cancelled"
    UNAVAILABLE = "unavailable"


_MESSAGES = {
    LinkProblem.UNKNOWN: "Ce lien n'est pas valide. Vérifiez qu'il a été copié en entier "
    "depuis le message reçu, ou demandez un nouveau lien à votre interlocuteur.",
    LinkProblem.EXPIRED: "Ce lien a expiré : il n'était valable que 72 heures. "
    "Demandez un nouveau lien à votre interlocuteur.",
    LinkProblem.USED: "Ce lien a déjà été utilisé : il ne peut servir qu'une seule fois. "
    "Si une nouvelle saisie est nécessaire, demandez un nouveau lien à votre interlocuteur.",
    LinkProblem.INACTIVE: "Le dossier auquel ce lien se rapporte n'est plus actif. "
    "Contactez votre interlocuteur.",
    LinkProblem.CLOSED: "La connexion bancaire que ce lien permettait de mettre à jour "
    "n'est plus utilisée. Contactez votre interlocuteur.",
    LinkProblem.CANCELLED: "L'opération n'a pas été terminée.",
    LinkProblem.UNAVAILABLE: "Le service de connexion bancaire est momentanément "
    "indisponible. Réessayez plus tard avec le même lien.",
}


class LinkRefused(Exception):
    """The link cannot be used; ``message`` is the French text of the page."""

    def __init__(self, problem: LinkProblem, detail: str = "") -> None:
        self.problem = problem
        self.message = _MESSAGES[problem] if not detail else f"{detail} {_MESSAGES[problem]}"
        super().__init__(self.message)


@dataclass(frozen=True, slots=True)
class FinishedLink:
    """What the page after the callback shows."""

    kind: LinkKind
    company: str
    bank_name: str
    accounts: Sequence[str]
    connection_id: int
    replay: bool = False


class PartnerFlow:
    """Open links and finish them at the callback, with any :class:`PartnerMode`."""

    def __init__(
        self,
        database: Database,
        links: LinkService,
        outbox: Outbox,
        composer: MailComposer,
        keyring: KeyRing,
        modes: Mapping[str, PartnerMode],
        *,
        default_mode: str,
        after_finish: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        if default_mode not in modes:
            raise ValueError(f"no partner mode {default_mode!r}")
        self.database = database
        self.links = links
        self.outbox = outbox
        self.composer = composer
        self.keyring = keyring
        self.modes = dict(modes)
        self.default_mode = default_mode
        #: Called with the connection id after a successful callback (the daemon refreshes
        #: the connection at once so that collection resumes without waiting for the night).
        self.after_finish = after_finish

    def _now(self) -> dt.datetime:
        return self.composer.clock.now()

    # -- opening -----------------------------------------------------------------------------

    async def _check(
        self, session: AsyncSession, link: SecureLink | None, now: dt.datetime
    ) -> tuple[SecureLink, Redevable, BankConnection | None]:
        if link is None:
            raise LinkRefused(LinkProblem.UNKNOWN)
        state = link_state(link, now)
        if state is LinkState.USED:
            raise LinkRefused(LinkProblem.USED)
        if state is LinkState.EXPIRED:
            raise LinkRefused(LinkProblem.EXPIRED)
        redevable = await session.get(Redevable, link.redevable_id)
        assert redevable is not None
        if not redevable.active:
            raise LinkRefused(LinkProblem.INACTIVE)
        connection = None
        if link.kind == LinkKind.UPDATE:
            connection = (
                await session.get(BankConnection, link.connection_id)
                if link.connection_id is not None
                else None
            )
            if (
                connection is None
                or connection.state is ConnectionState.CLOSED
                or not connection.active
            ):
                raise LinkRefused(LinkProblem.CLOSED)
        return link, redevable, connection

    async def _previous(
        self, session: AsyncSession, redevable_id: int, provider: str
    ) -> list[ProviderAccess]:
        rows = (
            await session.scalars(
                select(BankConnection)
                .where(BankConnection.redevable_id == redevable_id)
                .where(BankConnection.provider == provider)
                .order_by(BankConnection.id)
            )
        ).all()
        return [self._access(row) for row in rows]

    def _access(self, connection: BankConnection) -> ProviderAccess:
        return ProviderAccess(
            self.keyring.decrypt(connection.token_encrypted),
            connection.provider_connection_id,
            connection.provider_user_id,
        )

    def _mode_for(self, connection: BankConnection | None) -> PartnerMode:
        name = connection.provider if connection is not None else self.default_mode
        mode = self.modes.get(name)
        if mode is None:
            raise LinkRefused(LinkProblem.UNAVAILABLE)
        return mode

    async def _request(
        self,
        session: AsyncSession,
        link: SecureLink,
        redevable: Redevable,
        connection: BankConnection | None,
        mode: PartnerMode,
        state: str,
    ) -> WebviewRequest:
        return WebviewRequest(
            flow=WebviewFlow.RECONNECT if connection is not None else WebviewFlow.CONNECT,
            state=state,
            redirect_uri=self.composer.settings.callback_url,
            customer=redevable.siren,
            company_name=redevable.full_company_name,
            connection=self._access(connection) if connection is not None else None,
            previous=await self._previous(session, redevable.id, mode.name),
            reset_credentials=connection is not None
            and (connection.error_code or "") in _RESET_CREDENTIALS,
            redevable_id=redevable.id,
            earlier_data=await self._earlier_data(session, redevable.id, mode.name),
        )

    async def _earlier_data(
        self, session: AsyncSession, redevable_id: int, provider: str
    ) -> list[str]:
        """``partner_data`` of the redevable's links opened with ``provider``, newest first."""
        stored = (
            await session.scalars(
                select(SecureLink.partner_data)
                .where(SecureLink.redevable_id == redevable_id)
                .where(SecureLink.partner == provider)
                .where(SecureLink.partner_data.is_not(None))
                .order_by(SecureLink.id.desc())
                .limit(_EARLIER_DATA)
            )
        ).all()
        found = []
        for data in stored:
            if data is None:
                continue
            try:
                found.append(self.keyring.decrypt(data))
            except KeyRingError:
                continue
        return found

    async def open_link(self, token: str, kind: LinkKind, connection_id: int | None = None) -> str:
        """The webview URL for a valid link; :class:`LinkRefused` otherwise (nothing changed)."""
        now = self._now()
        async with self.database.session() as session:
            found = await LinkService.find(session, token, kind, connection_id)
            link, redevable, connection = await self._check(session, found, now)
            mode = self._mode_for(connection)
            state = secrets.token_urlsafe(24)
            request = await self._request(session, link, redevable, connection, mode, state)
            link_id = link.id
        try:
            start = await mode.start_webview(request)
        except ProviderError as error:
            _log.warning(
                "webview of link %d could not start: %s",
                link_id,
                error.code,
                extra={"link_id": link_id},
            )
            raise LinkRefused(LinkProblem.UNAVAILABLE) from None
        async with self.database.session() as session:
            updated = await session.execute(
                update(SecureLink)
                .where(SecureLink.id == link_id)
                .where(SecureLink.used_at.is_(None))
                .values(
                    state_nonce=state,
                    opened_at=now,
                    partner=mode.name,
                    partner_data=(
                        self.keyring.encrypt(start.partner_data)
                        if start.partner_data is not None
                        else None
                    ),
                )
            )
            if getattr(updated, "rowcount", 1) != 1:
                raise LinkRefused(LinkProblem.USED)
        _log.info("link %d opened, webview of %s", link_id, mode.name, extra={"link_id": link_id})
        return start.url

    # -- the callback ------------------------------------------------------------------------

    async def finish(self, params: Mapping[str, str]) -> FinishedLink:
        """Finish the link whose ``state`` comes back; idempotent on replays."""
        state = params.get("state", "")
        now = self._now()
        async with self.database.session() as session:
            link = (
                await session.scalar(select(SecureLink).where(SecureLink.state_nonce == state))
                if state
                else None
            )
            if link is None:
                raise LinkRefused(LinkProblem.UNKNOWN)
            if link.used_at is not None:
                return await self._summary(session, link, replay=True)
            if link.opened_at is None or now - link.opened_at >= STATE_LIFETIME:
                raise LinkRefused(LinkProblem.EXPIRED)
            link, redevable, connection = await self._check(session, link, link.opened_at)
            mode = self.modes.get(link.partner or "")
            if mode is None:
                raise LinkRefused(LinkProblem.UNAVAILABLE)
            request = await self._request(session, link, redevable, connection, mode, state)
            partner_data = (
                self.keyring.decrypt(link.partner_data) if link.partner_data is not None else None
            )
            link_id = link.id
        try:
            outcome = await mode.finish_webview(request, params, partner_data)
        except WebviewError as error:
            raise LinkRefused(LinkProblem.CANCELLED, error.message) from None
        except ProviderError as error:
            _log.warning("callback of link %d: %s", link_id, error.code, extra={"link_id": link_id})
            raise LinkRefused(LinkProblem.UNAVAILABLE) from None
        async with self.database.session() as session:
            taken = await session.execute(
                update(SecureLink)
                .where(SecureLink.id == link_id)
                .where(SecureLink.used_at.is_(None))
                .values(used_at=now)
            )
            link = await session.get(SecureLink, link_id, populate_existing=True)
            assert link is not None
            if getattr(taken, "rowcount", 1) != 1:
                return await self._summary(session, link, replay=True)
            owner = await session.get(Redevable, link.redevable_id)
            assert owner is not None
            if link.kind == LinkKind.UPDATE:
                connection = await session.get(BankConnection, link.connection_id)
                assert connection is not None
                await self._update_credentials(session, link, connection, outcome, now)
            else:
                connection = await self._attach(session, link, owner, mode, outcome, now)
                link.connection_id = connection.id
            await session.flush()
            finished = await self._summary(session, link, replay=False)
            await self._notify_holder(session, link, owner, finished)
        if self.after_finish is not None:
            try:
                await self.after_finish(finished.connection_id)
            except Exception:
                _log.exception(
                    "refresh after the callback of link %d failed",
                    link_id,
                    extra={"link_id": link_id},
                )
        return finished

    async def _update_credentials(
        self,
        session: AsyncSession,
        link: SecureLink,
        connection: BankConnection,
        outcome: PartnerOutcome,
        now: dt.datetime,
    ) -> None:
        connection.token_encrypted = self.keyring.encrypt(outcome.access.token)
        connection.provider_connection_id = outcome.access.connection_id
        connection.provider_user_id = outcome.access.user_id
        connection.updated_at = now
        session.add(
            BankEvent(
                at=now,
                kind=BankEventKind.CREDENTIALS_UPDATED,
                connection_id=connection.id,
                message="Identifiants bancaires mis à jour par le redevable",
            )
        )
        self._used_event(session, link, connection.id, now)
        watch = await session.get(ConnectionWatch, connection.id)
        if watch is None:
            watch = ConnectionWatch(connection_id=connection.id, action_failures=0)
            session.add(watch)
        # A new episode starts with the next failure; the consent was renewed by the client.
        watch.action_failures = 0
        watch.episode_started_at = None
        watch.alerted_at = None
        watch.alerted_code = None
        watch.consent_expires_at = None
        watch.consent_notice_for = None
        watch.credentials_at = now
        watch.updated_at = now

    @staticmethod
    def _used_event(
        session: AsyncSession, link: SecureLink, connection_id: int, now: dt.datetime
    ) -> None:
        who = "le titulaire du compte" if link.created_by == "login" else link.recipient
        session.add(
            BankEvent(
                at=now,
                kind=BankEventKind.LINK_USED,
                connection_id=connection_id,
                new_value=link.recipient[:200],
                message=f"Lien sécurisé utilisé par {who}",
            )
        )

    async def _attach(
        self,
        session: AsyncSession,
        link: SecureLink,
        redevable: Redevable,
        mode: PartnerMode,
        outcome: PartnerOutcome,
        now: dt.datetime,
    ) -> BankConnection:
        connection = await session.scalar(
            select(BankConnection)
            .where(BankConnection.redevable_id == redevable.id)
            .where(BankConnection.provider == mode.name)
            .where(BankConnection.provider_connection_id == outcome.access.connection_id)
            .where(BankConnection.state != ConnectionState.CLOSED)
        )
        if connection is None:
            connection = await add_connection(
                session,
                redevable_id=redevable.id,
                provider=mode.name,
                access=outcome.access,
                bank_name=outcome.bank_name,
                keyring=self.keyring,
                now=now,
                message=f"Connexion créée par le redevable ({outcome.bank_name})",
            )
        else:
            connection.token_encrypted = self.keyring.encrypt(outcome.access.token)
            connection.updated_at = now
        if link.sent_at is not None:
            session.add(
                BankEvent(
                    at=link.sent_at,
                    kind=BankEventKind.LINK_SENT,
                    connection_id=connection.id,
                    new_value=link.recipient[:200],
                    message=f"Lien sécurisé d'ajout de comptes bancaires transmis à "
                    f"{link.recipient}",
                )
            )
        self._used_event(session, link, connection.id, now)
        for old in (
            await session.scalars(
                select(BankConnection)
                .where(BankConnection.redevable_id == redevable.id)
                .where(BankConnection.provider == mode.name)
                .where(BankConnection.id != connection.id)
                .where(BankConnection.state != ConnectionState.CLOSED)
            )
        ).all():
            if old.provider_connection_id in outcome.replaces:
                close_replaced_connection(session, old, now)
        await self._attach_accounts(session, redevable, connection, outcome, now)
        return connection

    @staticmethod
    async def _attach_accounts(
        session: AsyncSession,
        redevable: Redevable,
        connection: BankConnection,
        outcome: PartnerOutcome,
        now: dt.datetime,
    ) -> None:
        known = (
            await session.scalars(
                select(BankAccount).where(BankAccount.redevable_id == redevable.id)
            )
        ).all()
        by_iban = {account.iban: account for account in known if account.iban is not None}
        by_provider = {
            account.provider_account_id: account
            for account in known
            if account.connection_id == connection.id
        }
        for remote in outcome.accounts:
            if remote.deleted_at is not None:
                continue
            chosen = outcome.selected is None or remote.provider_id in outcome.selected
            iban = normalise_iban(remote.iban)
            account = by_provider.get(remote.provider_id)
            if account is None and iban is not None:
                account = by_iban.get(iban)
            if account is None:
                account = new_bank_account(redevable.id, connection.id, remote, now, active=chosen)
                account.balance = remote.balance
                account.balance_at = remote.balance_at
                session.add(account)
                await session.flush()
                word = "activé" if chosen else "non retenu par le redevable"
                session.add(
                    BankEvent(
                        at=now,
                        kind=BankEventKind.ACCOUNT_ADDED,
                        connection_id=connection.id,
                        account_id=account.id,
                        new_value=iban,
                        message=f"Nouveau compte bancaire : {remote.label} ({word})",
                    )
                )
                if iban is not None:
                    by_iban[iban] = account
                continue
            if account.connection_id != connection.id:
                reattach_account(session, account, connection.id, remote.provider_id, now)
            if chosen and not account.active:
                account.active = True
                account.activated_at = now
                account.backfill_from = account.last_reported_date
                account.deactivated_at = None
                account.updated_at = now
                session.add(
                    BankEvent(
                        at=now,
                        kind=BankEventKind.ACCOUNT_REACTIVATED,
                        connection_id=connection.id,
                        account_id=account.id,
                        message="Compte bancaire réactivé par le redevable",
                    )
                )

    async def _summary(
        self, session: AsyncSession, link: SecureLink, *, replay: bool
    ) -> FinishedLink:
        redevable = await session.get(Redevable, link.redevable_id)
        assert redevable is not None and link.connection_id is not None
        connection = await session.get(BankConnection, link.connection_id)
        assert connection is not None
        rows = (
            await session.scalars(
                select(BankAccount)
                .where(BankAccount.connection_id == connection.id)
                .where(BankAccount.active.is_(True))
                .order_by(BankAccount.id)
            )
        ).all()
        return FinishedLink(
            kind=LinkKind(link.kind),
            company=redevable.full_company_name,
            bank_name=connection.bank_name,
            accounts=[f"{row.label.upper()} ({connection.bank_name.upper()})" for row in rows],
            connection_id=connection.id,
            replay=replay,
        )

    async def _notify_holder(
        self,
        session: AsyncSession,
        link: SecureLink,
        redevable: Redevable,
        finished: FinishedLink,
    ) -> None:
        holder = await session.get(PortalAccount, redevable.account_id)
        assert holder is not None
        message = self.composer.compose(
            "accounts_added",
            holder.email,
            {
                "update": finished.kind is LinkKind.UPDATE,
                "company": finished.company.upper(),
                "accounts": finished.accounts,
            },
        )
        await self.outbox.enqueue(
            session,
            message,
            kind="accounts_added",
            dedup_key=f"accounts_added:{link.id}",
            fallback_address=self.composer.settings.own_box(holder.login),
        )

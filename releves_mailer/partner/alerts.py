"""Broken connections: after each check, decide the update link and the holder's alert.

Rules (seed 2a and 4.2.1, made precise):

- every failed check maps the connection's state to the error table of
  :mod:`releves_mailer.collect.errors` (French message; the client must act, or transient);
- an error needing the client's action alerts from the **second consecutive** failed check
  needing action: a ``maj`` link is mailed to the redevable (unless "ne pas générer
  automatiquement le jeton" is set, or the redevable has no e-mail), and the account holder
  receives the alert mail saying whether a link was sent and to whom;
- a transient error alerts the holder only once the run of failures has lasted **3 days**
  (no link: the client cannot do anything about it); the scheduler retries meanwhile
  (:attr:`AlertDecision.retry_after`);
- one alert per error episode: an episode is a run of failed checks, ended by a success or
  by the client's new credentials. Within an episode a new alert goes out when the error
  code changes, or again every 7 days while it lasts (a link lives 72 hours, so a client
  who missed it gets a fresh one a few days later, not every night);
- the PSD2 consent expiry reported by the aggregator is watched by :meth:`check_consents`
  (run once a day): 7 days before it the redevable receives a renewal link (once per expiry
  date), so that collection never stops.

Replaying the hook for a check already seen changes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from releves_mailer.collect.errors import describe_error
from releves_mailer.collect.provider import ProviderAccess, ProviderError
from releves_mailer.collect.sync import RefreshResult
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
)
from releves_mailer.notify.outbox import Outbox
from releves_mailer.partner.links import LinkKind, LinkOrigin, LinkService
from releves_mailer.partner.mails import MailComposer
from releves_mailer.partner.modes import PartnerMode
from releves_mailer.signing.secrets import KeyRing

__all__ = [
    "CONSENT_NOTICE",
    "REALERT_AFTER",
    "TRANSIENT_ALERT_AFTER",
    "AlertDecision",
    "AlertService",
    "retry_delay",
]

_log = logging.getLogger(__name__)

#: Failed checks needing action before the first alert (seed: "à compter de la seconde").
ACTION_THRESHOLD = 2
TRANSIENT_ALERT_AFTER = dt.timedelta(days=3)
REALERT_AFTER = dt.timedelta(days=7)
CONSENT_NOTICE = dt.timedelta(days=7)


def retry_delay(consecutive_failures: int) -> dt.timedelta:
    """When to retry a connection in transient error: 1 h, 2 h, 4 h, then every 6 h."""
    hours = 1 << max(min(consecutive_failures, 4) - 1, 0)
    return dt.timedelta(hours=min(hours, 6))


@dataclass(frozen=True, slots=True)
class AlertDecision:
    """What the hook did for one check."""

    connection_id: int
    error_code: str | None = None
    needs_action: bool = False
    #: French message of the error.
    message: str = ""
    alert_sent: bool = False
    #: Where the update link went (None: no link).
    link_sent_to: str | None = None
    #: For transient errors: when the scheduler should try again.
    retry_after: dt.timedelta | None = None


def _labels(accounts: list[BankAccount], bank_name: str | None = None) -> list[str]:
    suffix = f" ({bank_name.upper()})" if bank_name else ""
    return [f"{account.label.upper()}{suffix}" for account in accounts]


class AlertService:
    """The post-refresh hook and the daily consent check."""

    def __init__(
        self,
        database: Database,
        links: LinkService,
        outbox: Outbox,
        composer: MailComposer,
        keyring: KeyRing,
        modes: Mapping[str, PartnerMode],
    ) -> None:
        self.database = database
        self.links = links
        self.outbox = outbox
        self.composer = composer
        self.keyring = keyring
        self.modes = dict(modes)

    async def _watch(self, session: AsyncSession, connection_id: int) -> ConnectionWatch:
        watch = await session.get(ConnectionWatch, connection_id)
        if watch is None:
            watch = ConnectionWatch(
                connection_id=connection_id,
                action_failures=0,
                updated_at=self.composer.clock.now(),
            )
            session.add(watch)
        return watch

    async def after_refresh(self, result: RefreshResult) -> AlertDecision:
        """Call after every refresh (the collection service's after-refresh hook)."""
        now = self.composer.clock.now()
        async with self.database.session() as session:
            connection = await session.get(BankConnection, result.connection_id)
            if (
                connection is None
                or not connection.active
                or connection.state is ConnectionState.CLOSED
                or connection.last_check_at is None
            ):
                return AlertDecision(result.connection_id)
            watch = await self._watch(session, connection.id)
            if watch.seen_check_at == connection.last_check_at:
                return AlertDecision(connection.id, connection.error_code)
            watch.seen_check_at = connection.last_check_at
            watch.updated_at = now
            if connection.state is not ConnectionState.ERROR or connection.error_code is None:
                watch.action_failures = 0
                watch.episode_started_at = None
                watch.alerted_at = None
                watch.alerted_code = None
                return AlertDecision(connection.id)
            error = describe_error(connection.error_code)
            if watch.episode_started_at is None:
                watch.episode_started_at = connection.last_check_at
            if error.needs_action:
                watch.action_failures += 1
                due = watch.action_failures >= ACTION_THRESHOLD
                retry = None
            else:
                due = now - watch.episode_started_at >= TRANSIENT_ALERT_AFTER
                retry = retry_delay(connection.consecutive_failures)
            if due and watch.alerted_at is not None:
                due = watch.alerted_code != error.code or now - watch.alerted_at >= REALERT_AFTER
            decision = AlertDecision(
                connection.id,
                error.code,
                error.needs_action,
                error.message,
                retry_after=retry,
            )
            if not due:
                return decision
            redevable = await session.get(Redevable, connection.redevable_id)
            assert redevable is not None
            if not redevable.active:
                return decision
            link_to: str | None = None
            no_link_reason = ""
            if error.needs_action:
                if redevable.no_auto_link:
                    no_link_reason = (
                        "l'option « Ne pas générer automatiquement le jeton / mail de mise à "
                        "jour des identifiants bancaires » est activée pour ce redevable. "
                        "Vous pouvez lui transmettre un lien depuis sa fiche."
                    )
                elif not redevable.email:
                    no_link_reason = "aucune adresse email n'est renseignée pour ce redevable."
                else:
                    issued = await self.links.issue(
                        session,
                        redevable,
                        kind=LinkKind.UPDATE,
                        origin=LinkOrigin.AUTO,
                        connection=connection,
                        reason=error.code,
                    )
                    link_to = issued.link.recipient
            await self._alert_holder(
                session,
                connection,
                redevable,
                error.message,
                error.needs_action,
                link_to,
                no_link_reason,
                watch.episode_started_at,
                now,
            )
            watch.alerted_at = now
            watch.alerted_code = error.code
            return AlertDecision(
                connection.id,
                error.code,
                error.needs_action,
                error.message,
                alert_sent=True,
                link_sent_to=link_to,
                retry_after=retry,
            )

    async def _alert_holder(
        self,
        session: AsyncSession,
        connection: BankConnection,
        redevable: Redevable,
        message: str,
        needs_action: bool,
        link_to: str | None,
        no_link_reason: str,
        since: dt.datetime,
        now: dt.datetime,
    ) -> None:
        holder = await session.get(PortalAccount, redevable.account_id)
        assert holder is not None
        accounts = list(
            (
                await session.scalars(
                    select(BankAccount)
                    .where(BankAccount.connection_id == connection.id)
                    .where(BankAccount.active.is_(True))
                    .order_by(BankAccount.id)
                )
            ).all()
        )
        mail = self.composer.compose(
            "alert",
            holder.email,
            {
                "bank_name": connection.bank_name,
                "siret": redevable.siret,
                "company": redevable.full_company_name.upper(),
                "login": holder.login,
                "accounts": _labels(accounts),
                "error_message": message,
                "needs_action": needs_action,
                "link_recipient": link_to,
                "no_link_reason": no_link_reason,
                "since": since,
            },
        )
        await self.outbox.enqueue(
            session,
            mail,
            kind="alert",
            dedup_key=f"alert:{connection.id}:{now.isoformat()}",
            fallback_address=self.composer.settings.own_box(holder.login),
        )
        session.add(
            BankEvent(
                at=now,
                kind=BankEventKind.ALERT_SENT,
                connection_id=connection.id,
                error_code=connection.error_code,
                new_value=holder.email[:200],
                message=f"Alerte transmise au titulaire du compte ({holder.email})",
            )
        )

    # -- consent -----------------------------------------------------------------------------

    async def check_consents(self) -> int:
        """Watch consent expiry dates; mail renewal links 7 days ahead. Returns links sent.

        Meant to run once a day (it is idempotent: one renewal link per expiry date).
        """
        now = self.composer.clock.now()
        async with self.database.session() as session:
            rows = (
                await session.execute(
                    select(BankConnection, ConnectionWatch)
                    .outerjoin(ConnectionWatch, ConnectionWatch.connection_id == BankConnection.id)
                    .where(BankConnection.active.is_(True))
                    .where(BankConnection.state != ConnectionState.CLOSED)
                    .order_by(BankConnection.id)
                )
            ).all()
            plans = [
                (
                    connection.id,
                    connection.provider,
                    ProviderAccess(
                        self.keyring.decrypt(connection.token_encrypted),
                        connection.provider_connection_id,
                        connection.provider_user_id,
                    ),
                    (watch.credentials_at if watch is not None else None) or connection.created_at,
                )
                for connection, watch in rows
            ]
        sent = 0
        for connection_id, provider, access, granted_at in plans:
            mode = self.modes.get(provider)
            if mode is None:
                continue
            try:
                expiry = await mode.consent_expiry(access, granted_at)
            except ProviderError as error:
                _log.info("consent of connection %d unknown: %s", connection_id, error.code)
                continue
            try:
                notified = await self._consent(connection_id, expiry, now)
            except IntegrityError:
                # Another daemon created the connection's watch meanwhile: read it again.
                notified = await self._consent(connection_id, expiry, now)
            if notified:
                sent += 1
        return sent

    async def _consent(
        self, connection_id: int, expiry: dt.datetime | None, now: dt.datetime
    ) -> bool:
        async with self.database.session() as session:
            # Locked: daemons sharing the database check consents each day; one notice each.
            connection = await session.get(BankConnection, connection_id, with_for_update=True)
            if connection is None:
                return False
            watch = await self._watch(session, connection_id)
            watch.consent_expires_at = expiry
            watch.updated_at = now
            if expiry is None or now < expiry - CONSENT_NOTICE:
                return False
            if watch.consent_notice_for == expiry:
                return False
            redevable = await session.get(Redevable, connection.redevable_id)
            assert redevable is not None
            watch.consent_notice_for = expiry
            if not redevable.active or redevable.no_auto_link or not redevable.email:
                return False
            await self.links.issue(
                session,
                redevable,
                kind=LinkKind.UPDATE,
                origin=LinkOrigin.AUTO,
                connection=connection,
                reason="consent",
                template="consent_renewal",
                extra={"consent_expires_at": expiry},
            )
            return True

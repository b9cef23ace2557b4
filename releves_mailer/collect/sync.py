"""Incremental sync of bank connections: the steps of a refresh (read, pull, write) and its result.

:meth:`releves_mailer.collect.service.CollectionService.refresh` runs the steps: it reads what
it needs in a short transaction (:func:`prepare_connections`), calls the provider with no
transaction open (:func:`pull_connection`), then applies everything in a single transaction
that first takes a write lock on the connection rows (:func:`write_pulls`), so two refreshes
of the same connection (daemon and command line) are serialised and a crash leaves nothing
half written. Accounts are reconciled in :mod:`.sync_accounts`, transactions upserted in
:mod:`.sync_rows`.

Why nothing is lost: the provider is asked for every row changed since the stored cursor
(minus an overlap) *and*, at every refresh, for every row whose booking date falls in the last
``reread_days`` days before the last successful sync, which catches rows whose ``last_update``
is older than the cursor (late postings back-dated by the bank), even after days of errors.
Why nothing is repeated: rows are keyed by provider id per
account; a booked row that appears under a new id is linked to the pending row it replaces
(which is never reported), and after a reconnection (new provider ids for the same IBAN) rows
are re-keyed one-to-one by (booking date, amount, label) instead of being inserted again.
Running a refresh twice at the same clock time changes nothing the second time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from releves_mailer.clock import PARIS, Clock
from releves_mailer.collect.errors import describe_error
from releves_mailer.collect.provider import (
    Provider,
    ProviderAccess,
    ProviderAccount,
    ProviderError,
    ProviderTransaction,
)
from releves_mailer.collect.sync_accounts import reconcile_accounts
from releves_mailer.collect.sync_rows import CHUNK, WriteBatch, account_work
from releves_mailer.db import Database
from releves_mailer.db.models.collect import (
    BankAccount,
    BankConnection,
    BankEvent,
    BankEventKind,
    ConnectionState,
)
from releves_mailer.signing.secrets import KeyRing

__all__ = [
    "ConnectionPlan",
    "Pull",
    "RefreshResult",
    "SyncSettings",
    "prepare_connections",
    "pull_connection",
    "write_pulls",
]


@dataclass(frozen=True, slots=True)
class SyncSettings:
    """Tuning of the sync; the defaults suit a daily refresh."""

    #: Subtracted from the cursor (clock skew, rows updated during the previous pull).
    cursor_overlap: dt.timedelta = dt.timedelta(hours=1)
    #: Every refresh re-reads the rows booked in the last N days (0 disables it).
    reread_days: int = 10
    #: History read at the first refresh of a connection.
    initial_days: int = 62
    #: A pending row and the booked row replacing it are at most this many days apart.
    match_days: int = 10
    #: ... and their amounts differ by at most this percentage of the pending amount.
    match_amount_percent: int = 25
    #: After a reconnection, rows of the previous provider ids are re-keyed during this time.
    rekey_days: int = 62


@dataclass(slots=True)
class RefreshResult:
    """What one refresh did."""

    connection_id: int
    ok: bool
    error_code: str | None = None
    accounts: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    replaced: int = 0
    rekeyed: int = 0
    unchanged: int = 0
    events: list[str] = field(default_factory=list)


def _paris_date(moment: dt.datetime) -> dt.date:
    return moment.astimezone(PARIS).date()


@dataclass(slots=True)
class ConnectionPlan:
    connection: BankConnection
    access: ProviderAccess
    provider: Provider
    backfill_from: dt.date | None


async def prepare_connections(
    database: Database,
    connection_ids: Sequence[int],
    providers: Mapping[str, Provider],
    keyring: KeyRing,
) -> list[ConnectionPlan]:
    """Every connection with its provider, its decrypted access and its backfill date."""
    backfill = (
        select(func.min(BankAccount.backfill_from))
        .where(BankAccount.connection_id == BankConnection.id)
        .where(BankAccount.backfill_from.is_not(None))
        .scalar_subquery()
    )
    async with database.session() as session:
        found: dict[int, tuple[BankConnection, dt.date | None]] = {}
        for start in range(0, len(connection_ids), CHUNK):
            rows = await session.execute(
                select(BankConnection, backfill).where(
                    BankConnection.id.in_(connection_ids[start : start + CHUNK])
                )
            )
            found.update((connection.id, (connection, date)) for connection, date in rows)
    plans: list[ConnectionPlan] = []
    for connection_id in connection_ids:
        if connection_id not in found:
            raise LookupError(f"bank connection {connection_id} not found")
        connection, backfill_from = found[connection_id]
        provider = providers.get(connection.provider)
        if provider is None:
            raise LookupError(f"no provider {connection.provider!r} configured")
        token = await _decrypt(keyring, connection.token_encrypted)
        access = ProviderAccess(
            token, connection.provider_connection_id, connection.provider_user_id
        )
        plans.append(ConnectionPlan(connection, access, provider, backfill_from))
    return plans


async def _decrypt(keyring: KeyRing, token: bytes) -> str:
    # Fernet is fast; no thread needed for a few hundred bytes.
    return keyring.decrypt(token)


@dataclass(slots=True)
class Pull:
    """What the provider said about one connection (or why it failed)."""

    index: int
    connection_id: int
    now: dt.datetime
    accounts: Sequence[ProviderAccount] = ()
    fetched: list[ProviderTransaction] = field(default_factory=list)
    failure: ProviderError | None = None


async def pull_connection(
    plan: ConnectionPlan, index: int, clock: Clock, settings: SyncSettings
) -> Pull:
    """Call the provider for one connection (no database transaction is open)."""
    now = clock.now()
    today = _paris_date(now)
    connection = plan.connection
    pull = Pull(index, connection.id, now)
    try:
        status = await plan.provider.connection_status(plan.access)
        if status.state is not None:
            raise ProviderError(status.state, status.detail)
        pull.accounts = await plan.provider.list_accounts(plan.access)
        starts = (
            [today - dt.timedelta(days=settings.initial_days)] if connection.cursor is None else []
        )
        if settings.reread_days > 0:
            # After a failure the window reaches back from the last good sync, not from today:
            # a row that appeared while the connection was broken, back-dated by up to
            # ``reread_days``, is older than today's window and invisible to the cursor.
            anchor = today
            if connection.last_success_at is not None:
                anchor = min(anchor, _paris_date(connection.last_success_at))
            starts.append(anchor - dt.timedelta(days=settings.reread_days))
        if plan.backfill_from is not None:
            starts.append(plan.backfill_from)
        if connection.cursor is not None:
            pull.fetched.extend(
                await plan.provider.fetch_transactions(
                    plan.access, changed_since=connection.cursor - settings.cursor_overlap
                )
            )
        if starts:
            pull.fetched.extend(
                await plan.provider.fetch_transactions(plan.access, min_date=min(starts))
            )
    except ProviderError as error:
        pull.failure = error
    return pull


async def write_pulls(
    database: Database, pulls: Sequence[Pull], settings: SyncSettings
) -> list[RefreshResult]:
    """Apply the pulls in one transaction, which locks the connection rows in ascending id
    order first; the results come back in the order of ``pulls``."""
    if not pulls:
        return []
    results: dict[int, RefreshResult] = {}
    async with database.session() as session:
        # Nothing is flushed before the end of the batch unless a query needs it: the
        # updates of every connection and account then go out grouped.
        session.autoflush = False
        batch = WriteBatch(session)
        currents = await _lock_connections(
            session, database, sorted(pull.connection_id for pull in pulls)
        )
        await batch.load_accounts(
            current.redevable_id
            for pull in pulls
            if pull.failure is None
            for current in (currents[pull.connection_id],)
        )
        for pull in pulls:
            current = currents[pull.connection_id]
            if current.redevable_id in batch.redevables:
                # Connections of one redevable share its accounts: the transactions
                # queued by the earlier one are written before the next one reconciles.
                await batch.write_transactions(settings)
            results[pull.index] = await _write(batch, current, pull, settings)
        await batch.write_transactions(settings)
        await batch.insert_versions()
    return [results[pull.index] for pull in pulls]


async def _lock_connections(
    session: AsyncSession, database: Database, ids: list[int]
) -> dict[int, BankConnection]:
    """Take the write lock on the connection rows first (serialises concurrent refreshes)."""
    query = select(BankConnection).where(BankConnection.id.in_(ids)).order_by(BankConnection.id)
    if database.is_sqlite:
        # Any write takes SQLite's database lock; writing first avoids upgrading a read
        # snapshot later (which fails at once instead of waiting for busy_timeout).
        await session.execute(
            update(BankConnection)
            .where(BankConnection.id.in_(ids))
            .values(updated_at=BankConnection.updated_at)
        )
    else:
        query = query.with_for_update()
    found = {
        current.id: current
        for current in await session.scalars(query.execution_options(populate_existing=True))
    }
    for connection_id in ids:
        if connection_id not in found:
            raise LookupError(f"bank connection {connection_id} not found")
    return found


async def _write(
    batch: WriteBatch, current: BankConnection, pull: Pull, settings: SyncSettings
) -> RefreshResult:
    """Apply one connection's pull in the batch's transaction; its transactions are queued."""
    session, now = batch.session, pull.now
    if pull.failure is not None:
        return _record_failure(session, current, pull.failure, now)
    result = RefreshResult(current.id, ok=True)
    _record_success(session, current, now, result)
    by_provider_id = await reconcile_accounts(
        session, current, batch.accounts[current.redevable_id], pull.accounts, now, result
    )
    fetched = pull.fetched
    batch.queue(current.redevable_id, account_work(by_provider_id, fetched, now, result))
    if fetched:
        newest = max(transaction.last_update for transaction in fetched)
        newest = min(newest, now)
        if current.cursor is None or newest > current.cursor:
            current.cursor = newest
    elif current.cursor is None:
        current.cursor = now - settings.cursor_overlap
    for account in by_provider_id.values():
        if account.active and account.connection_id == current.id:
            if account.last_collected_at != now:
                account.last_collected_at = now
            if account.backfill_from is not None:
                account.backfill_from = None
    return result


def _record_failure(
    session: AsyncSession, connection: BankConnection, failure: ProviderError, now: dt.datetime
) -> RefreshResult:
    error = describe_error(failure.code)
    same_check = connection.last_check_at == now and connection.state is ConnectionState.ERROR
    result = RefreshResult(connection.id, ok=False, error_code=error.code)
    if same_check:
        return result
    changed = connection.state is not ConnectionState.ERROR or connection.error_code != error.code
    connection.state = ConnectionState.ERROR
    connection.error_code = error.code
    connection.error_detail = failure.detail[:2000]
    connection.consecutive_failures += 1
    connection.last_check_at = now
    connection.updated_at = now
    if changed:
        session.add(
            BankEvent(
                at=now,
                kind=BankEventKind.CONNECTION_ERROR,
                connection_id=connection.id,
                error_code=error.code,
                message=f"Connexion bancaire en erreur : {error.message}",
            )
        )
        result.events.append(BankEventKind.CONNECTION_ERROR.value)
    return result


def _record_success(
    session: AsyncSession, connection: BankConnection, now: dt.datetime, result: RefreshResult
) -> None:
    if connection.state is not ConnectionState.OK:
        session.add(
            BankEvent(
                at=now,
                kind=BankEventKind.CONNECTION_OK,
                connection_id=connection.id,
                message="Connexion bancaire active",
            )
        )
        result.events.append(BankEventKind.CONNECTION_OK.value)
    connection.state = ConnectionState.OK
    connection.error_code = None
    connection.error_detail = ""
    connection.consecutive_failures = 0
    if connection.last_check_at != now:
        connection.updated_at = now
    connection.last_check_at = now
    connection.last_success_at = now

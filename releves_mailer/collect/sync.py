"""Incremental sync of one bank connection: state, accounts, transactions, events.

:func:`refresh_connection` is the only entry point. It reads what it needs in a short
transaction, calls the provider with no transaction open, then applies everything in a single
transaction that first takes a write lock on the connection row, so two refreshes of the same
connection (daemon and command line) are serialised and a crash leaves nothing half written.

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
import functools
import hashlib
import json
import re
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, cast

from sqlalchemy import Select, Table, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import flag_modified

from releves_mailer.clock import PARIS, Clock
from releves_mailer.collect.errors import describe_error
from releves_mailer.collect.provider import (
    Provider,
    ProviderAccess,
    ProviderAccount,
    ProviderError,
    ProviderTransaction,
)
from releves_mailer.db import Database
from releves_mailer.db.models.collect import (
    BankAccount,
    BankConnection,
    BankEvent,
    BankEventKind,
    BankTransaction,
    BankTransactionVersion,
    ConnectionState,
    TransactionStatus,
)
from releves_mailer.signing.secrets import KeyRing

__all__ = [
    "RefreshResult",
    "SyncSettings",
    "new_bank_account",
    "normalise_iban",
    "reattach_account",
    "refresh_connection",
    "refresh_connections",
]

_CHUNK = 500


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


def new_bank_account(
    redevable_id: int,
    connection_id: int,
    remote: ProviderAccount,
    now: dt.datetime,
    *,
    active: bool = True,
) -> BankAccount:
    """A bank account row for an account the provider shows for the first time."""
    return BankAccount(
        redevable_id=redevable_id,
        connection_id=connection_id,
        provider_account_id=remote.provider_id,
        iban=normalise_iban(remote.iban),
        bic=remote.bic[:11],
        label=remote.label[:200],
        type=remote.type[:40],
        currency=remote.currency[:3],
        number=remote.number[:64],
        active=active,
        activated_at=now,
        deactivated_at=None if active else now,
        created_at=now,
        updated_at=now,
    )


def normalise_iban(value: str | None) -> str | None:
    """Compact upper-case IBAN, or None for an empty value."""
    if value is None:
        return None
    compact = re.sub(r"[\s.-]", "", value).upper()
    return compact or None


def _paris_date(moment: dt.datetime) -> dt.date:
    return moment.astimezone(PARIS).date()


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def _raw(transaction: ProviderTransaction) -> str:
    return _ENCODER.encode(transaction.raw)


def _digest(transaction: ProviderTransaction, raw: str) -> str:
    """The payload hash stored with each row: never change it, or every stored row would
    look changed at the next refresh."""
    fields = (
        transaction.provider_id,
        transaction.booking_date,
        transaction.value_date,
        transaction.amount,
        transaction.raw_label,
        transaction.coming,
        transaction.deleted_at,
        transaction.last_update,
    )
    return hashlib.sha256((raw + repr(fields)).encode()).hexdigest()


class _DigestMemo:
    """Payload hashes by transaction object, a bounded memo.

    Most rows of a refresh are unchanged; a provider that keeps its transaction objects
    between calls (the test bank memoises them) hands the same object again, and hashing
    it again was a good part of a refresh. Entries hold a weak reference: an entry whose
    object is gone (and whose id another object may have taken) is a miss. Provider objects
    are immutable (frozen, their ``raw`` is never modified).
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._digests: dict[int, tuple[weakref.ref[ProviderTransaction], str]] = {}

    def __call__(self, transaction: ProviderTransaction, raws: dict[str, str]) -> str:
        """The payload hash; a raw payload serialised on the way is left in ``raws``."""
        found = self._digests.get(id(transaction))
        if found is not None and found[0]() is transaction:
            return found[1]
        raw = raws[transaction.provider_id] = _raw(transaction)
        digest = _digest(transaction, raw)
        if len(self._digests) >= self._size:
            self._digests.clear()
        self._digests[id(transaction)] = (weakref.ref(transaction), digest)
        return digest


#: About 300 bytes an entry; a daily round of 700 connections reads about 35,000 rows.
_payload_digest = _DigestMemo(65_536)


def _status_of(transaction: ProviderTransaction) -> TransactionStatus:
    if transaction.deleted_at is not None:
        return TransactionStatus.DELETED
    return TransactionStatus.PENDING if transaction.coming else TransactionStatus.BOOKED


_WORD = re.compile(r"[A-Z]{3,}")


def _label_similarity(first: str, second: str) -> float:
    if first == second:
        return 1.0
    a, b = set(_WORD.findall(first.upper())), set(_WORD.findall(second.upper()))
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


# -- reading ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Plan:
    connection: BankConnection
    access: ProviderAccess
    provider: Provider
    backfill_from: dt.date | None


async def _prepare(
    database: Database,
    connection_ids: Sequence[int],
    providers: Mapping[str, Provider],
    keyring: KeyRing,
) -> list[_Plan]:
    """Every connection with its provider, its decrypted access and its backfill date."""
    backfill = (
        select(func.min(BankAccount.backfill_from))
        .where(BankAccount.connection_id == BankConnection.id)
        .where(BankAccount.backfill_from.is_not(None))
        .scalar_subquery()
    )
    async with database.session() as session:
        found: dict[int, tuple[BankConnection, dt.date | None]] = {}
        for start in range(0, len(connection_ids), _CHUNK):
            rows = await session.execute(
                select(BankConnection, backfill).where(
                    BankConnection.id.in_(connection_ids[start : start + _CHUNK])
                )
            )
            found.update((connection.id, (connection, date)) for connection, date in rows)
    plans: list[_Plan] = []
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
        plans.append(_Plan(connection, access, provider, backfill_from))
    return plans


async def _decrypt(keyring: KeyRing, token: bytes) -> str:
    # Fernet is fast; no thread needed for a few hundred bytes.
    return keyring.decrypt(token)


@dataclass(slots=True)
class _Pull:
    """What the provider said about one connection (or why it failed)."""

    index: int
    connection_id: int
    now: dt.datetime
    accounts: Sequence[ProviderAccount] = ()
    fetched: list[ProviderTransaction] = field(default_factory=list)
    failure: ProviderError | None = None


async def _pull(plan: _Plan, index: int, clock: Clock, settings: SyncSettings) -> _Pull:
    """Call the provider for one connection (no database transaction is open)."""
    now = clock.now()
    today = _paris_date(now)
    connection = plan.connection
    pull = _Pull(index, connection.id, now)
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


# -- the entry points ------------------------------------------------------------------------


async def refresh_connection(
    database: Database,
    connection_id: int,
    *,
    providers: Mapping[str, Provider],
    keyring: KeyRing,
    clock: Clock,
    settings: SyncSettings | None = None,
) -> RefreshResult:
    """Check one connection and bring its accounts and transactions up to date.

    Provider errors are recorded on the connection (state, code, consecutive failures,
    event) and reported in the result, never raised. Other exceptions propagate and leave
    the database untouched.
    """
    (result,) = await refresh_connections(
        database,
        [connection_id],
        providers=providers,
        keyring=keyring,
        clock=clock,
        settings=settings,
    )
    return result


async def refresh_connections(
    database: Database,
    connection_ids: Sequence[int],
    *,
    providers: Mapping[str, Provider],
    keyring: KeyRing,
    clock: Clock,
    settings: SyncSettings | None = None,
) -> list[RefreshResult]:
    """Refresh several connections: one read, the provider calls, then one write transaction.

    Each connection gets exactly what :func:`refresh_connection` would have done to it, in
    the order given (results come back in that order). The whole batch is written in a
    single transaction, which locks the connection rows in ascending id order first: a
    provider error stays a per-connection result, but any other exception (an unknown
    connection id or provider, a database error) leaves the database untouched for the whole
    batch. A batch holds the write lock while it is written (a few milliseconds per
    connection), so batches of a few dozen connections suit SQLite.
    """
    settings = settings or SyncSettings()
    ids = list(connection_ids)
    if len(set(ids)) != len(ids):
        raise ValueError("refresh_connections: a connection id is given twice")
    results: list[RefreshResult | None] = [None] * len(ids)
    plans = await _prepare(database, ids, providers, keyring)
    pulls: list[_Pull] = []
    for index, plan in enumerate(plans):
        if not plan.connection.active:
            results[index] = RefreshResult(
                plan.connection.id, ok=False, error_code=plan.connection.error_code
            )
            continue
        pulls.append(await _pull(plan, index, clock, settings))
    if pulls:
        async with database.session() as session:
            # Nothing is flushed before the end of the batch unless a query needs it: the
            # updates of every connection and account then go out grouped.
            session.autoflush = False
            batch = _Batch(session)
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
    done = [result for result in results if result is not None]
    assert len(done) == len(ids)
    return done


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


class _Batch:
    """The write transaction of a batch: the redevables' accounts, the transactions queued by
    the connections written since the last :meth:`write_transactions`, the versions."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.accounts: dict[int, list[BankAccount]] = {}
        self.versions: list[tuple[_Row, dict[str, Any]]] = []
        #: Each queued connection's share of the transactions, account by account.
        self.queued: list[list[_AccountWork]] = []
        #: Redevables of the queued connections.
        self.redevables: set[int] = set()

    async def load_accounts(self, redevable_ids: Iterable[int]) -> None:
        wanted = sorted(set(redevable_ids))
        for redevable_id in wanted:
            self.accounts[redevable_id] = []
        for start in range(0, len(wanted), _CHUNK):
            accounts = await self.session.scalars(
                select(BankAccount)
                .where(BankAccount.redevable_id.in_(wanted[start : start + _CHUNK]))
                .order_by(BankAccount.id)
            )
            for account in accounts:
                self.accounts[account.redevable_id].append(account)

    def queue(self, redevable_id: int, work: list[_AccountWork]) -> None:
        self.redevables.add(redevable_id)
        if work:
            self.queued.append(work)

    async def write_transactions(self, settings: SyncSettings) -> None:
        """Write the queued transactions, all connections together (their accounts differ)."""
        queued, self.queued = self.queued, []
        self.redevables.clear()
        if queued:
            await _apply_transactions(self, queued, settings)

    async def insert_versions(self) -> None:
        if not self.versions:
            return
        for holder, values in self.versions:
            assert holder.id is not None
            values["transaction_id"] = holder.id
        await self.session.execute(insert(_VERSIONS), [values for _holder, values in self.versions])
        self.versions.clear()


async def _write(
    batch: _Batch, current: BankConnection, pull: _Pull, settings: SyncSettings
) -> RefreshResult:
    """Apply one connection's pull in the batch's transaction; its transactions are queued."""
    session, now = batch.session, pull.now
    if pull.failure is not None:
        return _record_failure(session, current, pull.failure, now)
    result = RefreshResult(current.id, ok=True)
    _record_success(session, current, now, result)
    by_provider_id = await _reconcile_accounts(
        session, current, batch.accounts[current.redevable_id], pull.accounts, now, result
    )
    fetched = pull.fetched
    batch.queue(current.redevable_id, _account_work(by_provider_id, fetched, now, result))
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


# -- accounts --------------------------------------------------------------------------------

_FIELD_EVENTS = (
    ("iban", BankEventKind.IBAN_CHANGED, "Mise à jour de l'IBAN"),
    ("bic", BankEventKind.BIC_CHANGED, "Mise à jour du code BIC"),
    ("type", BankEventKind.TYPE_CHANGED, "Mise à jour du type de compte"),
    ("label", BankEventKind.LABEL_CHANGED, "Mise à jour du libellé du compte"),
    ("currency", BankEventKind.CURRENCY_CHANGED, "Mise à jour de la monnaie du compte"),
)


def _account_event(
    session: AsyncSession,
    result: RefreshResult,
    account: BankAccount,
    kind: BankEventKind,
    now: dt.datetime,
    message: str,
    old: str | None = None,
    new: str | None = None,
) -> None:
    session.add(
        BankEvent(
            at=now,
            kind=kind,
            connection_id=account.connection_id,
            account_id=account.id,
            old_value=None if old is None else old[:200],
            new_value=None if new is None else new[:200],
            message=message,
        )
    )
    result.events.append(kind.value)


def reattach_account(
    session: AsyncSession,
    account: BankAccount,
    connection_id: int,
    provider_account_id: str,
    now: dt.datetime,
) -> None:
    """Move an account (same IBAN) to a new connection, keeping its history, with its event."""
    old_ref = f"{account.provider_account_id} (connexion {account.connection_id})"
    account.connection_id = connection_id
    account.provider_account_id = provider_account_id
    account.reattached_at = now
    account.gone_at = None
    account.updated_at = now
    session.add(
        BankEvent(
            at=now,
            kind=BankEventKind.ACCOUNT_REATTACHED,
            connection_id=connection_id,
            account_id=account.id,
            old_value=old_ref[:200],
            new_value=f"{provider_account_id} (connexion {connection_id})"[:200],
            message="Compte rattaché à la nouvelle connexion bancaire",
        )
    )


async def _reconcile_accounts(
    session: AsyncSession,
    connection: BankConnection,
    known: list[BankAccount],
    listed: Sequence[ProviderAccount],
    now: dt.datetime,
    result: RefreshResult,
) -> dict[str, BankAccount]:
    """Match the provider's accounts to ``known`` (the redevable's, new ones are appended);
    returns them by provider account id."""
    by_provider = {a.provider_account_id: a for a in known if a.connection_id == connection.id}
    by_iban = {a.iban: a for a in known if a.iban is not None}
    matched: dict[str, BankAccount] = {}
    for remote in listed:
        iban = normalise_iban(remote.iban)
        account = by_provider.get(remote.provider_id)
        if account is None and iban is not None and iban in by_iban:
            account = by_iban[iban]
            reattach_account(session, account, connection.id, remote.provider_id, now)
            result.events.append(BankEventKind.ACCOUNT_REATTACHED.value)
        if account is None:
            # An account the client left unticked at the provider is not collected there:
            # it is created switched off, for the portfolio's owner to see and decide.
            account = new_bank_account(
                connection.redevable_id, connection.id, remote, now, active=not remote.disabled
            )
            session.add(account)
            await session.flush()
            known.append(account)
            if iban is not None:
                by_iban[iban] = account
            unticked = " (non coché par le client : collecte désactivée)" if remote.disabled else ""
            _account_event(
                session,
                result,
                account,
                BankEventKind.ACCOUNT_ADDED,
                now,
                f"Nouveau compte bancaire : {remote.label}{unticked}",
                None,
                iban,
            )
        else:
            _update_account_fields(session, result, account, remote, iban, by_iban, now)
        if remote.rejected_iban is not None:
            await _report_rejected_iban(session, result, account, remote.rejected_iban, now)
        if remote.balance is not None and (
            account.balance != remote.balance or account.balance_at != remote.balance_at
        ):
            account.balance = remote.balance
            account.balance_at = remote.balance_at or now
            # Written even when only its date moved: the accounts of a batch then change the
            # same columns, which the ORM writes in one executemany instead of row by row.
            flag_modified(account, "balance")
        gone = remote.deleted_at
        if gone is not None and account.gone_at is None:
            account.gone_at = gone
            _account_event(
                session,
                result,
                account,
                BankEventKind.ACCOUNT_GONE,
                now,
                "Compte bancaire supprimé chez la banque",
            )
        elif gone is None and account.gone_at is not None:
            account.gone_at = None
        matched[remote.provider_id] = account
    for account in known:
        if (
            account.connection_id == connection.id
            and account.provider_account_id not in matched
            and account.gone_at is None
        ):
            account.gone_at = now
            _account_event(
                session,
                result,
                account,
                BankEventKind.ACCOUNT_GONE,
                now,
                "Compte bancaire absent de la connexion",
            )
    result.accounts = len(matched)
    return matched


async def _report_rejected_iban(
    session: AsyncSession,
    result: RefreshResult,
    account: BankAccount,
    rejected: str,
    now: dt.datetime,
) -> None:
    """An event in the account's history, once per refused value (not at every check)."""
    shown = rejected[:200]
    last = await session.scalar(
        select(BankEvent.new_value)
        .where(BankEvent.account_id == account.id, BankEvent.kind == BankEventKind.IBAN_REJECTED)
        .order_by(BankEvent.id.desc())
        .limit(1)
    )
    if last == shown:
        return
    _account_event(
        session,
        result,
        account,
        BankEventKind.IBAN_REJECTED,
        now,
        "IBAN transmis par l'agrégateur refusé (caractères ou clé de contrôle invalides) : "
        "non enregistré",
        None,
        shown,
    )


def _update_account_fields(
    session: AsyncSession,
    result: RefreshResult,
    account: BankAccount,
    remote: ProviderAccount,
    iban: str | None,
    by_iban: dict[str, BankAccount],
    now: dt.datetime,
) -> None:
    new_values = {
        # A refused IBAN leaves the stored one as it is.
        "iban": iban if remote.rejected_iban is None else account.iban,
        "bic": remote.bic[:11],
        "type": remote.type[:40],
        "label": remote.label[:200],
        "currency": remote.currency[:3],
    }
    for name, kind, message in _FIELD_EVENTS:
        old = getattr(account, name)
        new = new_values[name]
        if old == new:
            continue
        if name == "iban" and new is not None and new in by_iban and by_iban[new] is not account:
            _account_event(
                session,
                result,
                account,
                BankEventKind.IBAN_CONFLICT,
                now,
                f"IBAN déjà porté par le compte {by_iban[new].id} : non modifié",
                old,
                new,
            )
            continue
        if name == "iban":
            if old is not None:
                by_iban.pop(old, None)
            if new is not None:
                by_iban[new] = account
        setattr(account, name, new)
        account.updated_at = now
        _account_event(session, result, account, kind, now, message, old or "", new or "")
    if account.number != remote.number[:64]:
        account.number = remote.number[:64]


# -- transactions ----------------------------------------------------------------------------
#
# Transaction rows are read and written with Core statements built once (their compiled form
# is cached), not as ORM objects: a refresh touches dozens of rows and reads a few columns.


def _fingerprint(
    booking: dt.date, amount: int, label: str, coming: bool
) -> tuple[dt.date, int, str, bool]:
    return (booking, amount, label, coming)


@dataclass(slots=True, eq=False)
class _Row:
    """A transaction row as the sync sees it: the columns it reads (stored rows are loaded
    with exactly these) and, in ``changes``, the columns to write back by primary key."""

    id: int | None
    account_id: int
    provider_id: str
    status: TransactionStatus
    booking_date: dt.date
    value_date: dt.date | None
    amount: int
    raw_label: str
    coming: bool
    deleted_at: dt.datetime | None
    first_seen_at: dt.datetime
    booked_at: dt.datetime | None
    replaced_by_id: int | None
    replaces_id: int | None
    reported_statement_id: int | None
    payload_hash: str
    changes: dict[str, Any] = field(default_factory=dict)

    def change(self, **values: Any) -> None:
        """Set columns to write back (those the sync reads are updated here too)."""
        for name, value in values.items():
            if name in _READ:
                setattr(self, name, value)
        self.changes.update(values)


_READ = tuple(column.name for column in fields(_Row) if column.name != "changes")
_TRANSACTIONS = cast(Table, BankTransaction.__table__)
_VERSIONS = cast(Table, BankTransactionVersion.__table__)
_T = _TRANSACTIONS.c
_LOAD = select(*(_T[name] for name in _READ))
#: Connections (or parts of one) whose stored hashes one query reads.
_HASH_TERMS = 8


@functools.cache
def _stored_hashes(terms: int) -> Select[int, int, str, str]:
    """Ids and payload hashes of the stored rows of ``terms`` pairs of (accounts, provider
    ids) lists: each pair is one connection's, so that the unique index is probed only for
    the pairs of one connection, not of every account with every provider id."""
    return select(_T.id, _T.account_id, _T.provider_id, _T.payload_hash).where(
        or_(
            *(
                and_(
                    _T.account_id.in_(bindparam(f"accounts_{term}", expanding=True)),
                    _T.provider_id.in_(bindparam(f"provider_ids_{term}", expanding=True)),
                )
                for term in range(terms)
            )
        )
    )


_BY_ID = _LOAD.where(_T.id.in_(bindparam("ids", expanding=True)))
_LEGACY = (
    _LOAD.where(_T.account_id == bindparam("account_id"))
    .where(_T.provider_account_id != bindparam("provider_account_id"))
    .where(_T.booking_date >= bindparam("low"))
    .order_by(_T.id)
)
# Candidates come in id order: when two of them tie, the older one is linked first.
_PENDING_CANDIDATES = (
    _LOAD.where(_T.account_id.in_(bindparam("accounts", expanding=True)))
    .where(_T.status == TransactionStatus.DELETED)
    .where(_T.coming.is_(True))
    .where(_T.replaced_by_id.is_(None))
    .where(_T.deleted_at >= bindparam("since"))
    .order_by(_T.id)
)
_BOOKED_CANDIDATES = (
    _LOAD.where(_T.account_id.in_(bindparam("accounts", expanding=True)))
    .where(_T.status == TransactionStatus.BOOKED)
    .where(_T.replaces_id.is_(None))
    .where(_T.first_seen_at >= bindparam("since"))
    .where(_T.booking_date.between(bindparam("low"), bindparam("high")))
    .order_by(_T.id)
)


class _Rows:
    """The rows one write has read or inserted, one object per row (like the ORM's identity
    map: a row read again keeps the changes made to it, which are not written yet)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.by_id: dict[int, _Row] = {}

    async def load(self, statement: Select[Any], **params: Any) -> list[_Row]:
        found: list[_Row] = []
        for record in await self.session.execute(statement, params):
            row = self.by_id.get(record.id)
            if row is None:
                row = self.by_id[record.id] = _Row(*record)
            found.append(row)
        return found

    async def write_changes(self) -> None:
        changed = sorted(
            (row for row in self.by_id.values() if row.changes),
            key=lambda row: tuple(row.changes),
        )
        if changed:
            # ORM bulk update by primary key: one executemany per set of changed columns.
            await self.session.execute(
                update(BankTransaction), [{"id": row.id, **row.changes} for row in changed]
            )


@dataclass(slots=True)
class _AccountWork:
    """One account's share of a refresh: its transactions, then what the matching needs."""

    account: BankAccount
    #: The account's id, read once (an ORM attribute read costs more than a plain one).
    account_id: int
    transactions: list[ProviderTransaction]
    now: dt.datetime
    result: RefreshResult
    #: Payload hash by provider id.
    digests: dict[str, str]
    #: Raw payloads already serialised (those whose hash was not memoised) by provider id.
    raws: dict[str, str]
    #: Stored rows changed by this refresh (not written yet: queries see their old state).
    touched: dict[int, _Row] = field(default_factory=dict)
    new_booked: list[_Row] = field(default_factory=list)
    gone_pending: list[_Row] = field(default_factory=list)

    def raw(self, transaction: ProviderTransaction) -> str:
        found = self.raws.get(transaction.provider_id)
        return _raw(transaction) if found is None else found


def _account_work(
    accounts: Mapping[str, BankAccount],
    fetched: Iterable[ProviderTransaction],
    now: dt.datetime,
    result: RefreshResult,
) -> list[_AccountWork]:
    """One connection's transactions (the latest state of each), by collected account."""
    latest: dict[str, ProviderTransaction] = {}
    for transaction in fetched:
        previous = latest.get(transaction.provider_id)
        if previous is None or transaction.last_update >= previous.last_update:
            latest[transaction.provider_id] = transaction
    grouped: dict[str, list[ProviderTransaction]] = defaultdict(list)
    for transaction in latest.values():
        grouped[transaction.account_provider_id].append(transaction)
    work: list[_AccountWork] = []
    for provider_account_id, transactions in grouped.items():
        account = accounts.get(provider_account_id)
        if account is None or not account.active:
            # Deactivated accounts are not collected; reactivation re-reads from the
            # last reported date.
            continue
        transactions.sort(key=lambda t: (t.last_update, t.provider_id))
        raws: dict[str, str] = {}
        digests = {t.provider_id: _payload_digest(t, raws) for t in transactions}
        work.append(_AccountWork(account, account.id, transactions, now, result, digests, raws))
    return work


def _chunks(values: Sequence[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield list(values[start : start + _CHUNK])


async def _apply_transactions(
    batch: _Batch, queued: Sequence[Sequence[_AccountWork]], settings: SyncSettings
) -> None:
    """Upsert the transactions of several connections (whose accounts differ), as each
    connection's refresh would: stored hashes first, whole rows only for changed payloads,
    one insert, one matching query per kind, one update per set of changed columns."""
    session = batch.session
    rows = _Rows(session)
    work = [item for items in queued for item in items]
    hashes = await _read_hashes(session, queued)
    changed = [
        hit[0]
        for item in work
        for provider_id, digest in item.digests.items()
        if (hit := hashes.get((item.account_id, provider_id))) is not None and hit[1] != digest
    ]
    for ids in _chunks(changed):
        await rows.load(_BY_ID, ids=ids)

    inserted: list[tuple[_Row, dict[str, Any]]] = []
    for item in work:
        await _apply_account(batch, rows, item, hashes, inserted, settings)
    if inserted:
        # Several rows per INSERT; RETURNING order is not guaranteed, so rows are told apart
        # by their unique key (asking for parameter order would insert one row at a time).
        keyed = {(row.account_id, row.provider_id): row for row, _values in inserted}
        returned = await session.execute(
            insert(_TRANSACTIONS).returning(_T.id, _T.account_id, _T.provider_id),
            [values for _row, values in inserted],
        )
        for row_id, account_id, provider_id in returned:
            row = keyed[(account_id, provider_id)]
            row.id = row_id
            rows.by_id[row_id] = row
    await _match_replacements(rows, work, settings)
    await rows.write_changes()


async def _read_hashes(
    session: AsyncSession, queued: Sequence[Sequence[_AccountWork]]
) -> dict[tuple[int, str], tuple[int, str]]:
    """Id and payload hash of every stored row the queued transactions may update."""
    terms: list[tuple[list[int], list[str]]] = []
    wanted: set[tuple[int, str]] = set()
    for items in queued:
        accounts = sorted({item.account_id for item in items})
        wanted.update((item.account_id, pid) for item in items for pid in item.digests)
        for provider_ids in _chunks([pid for item in items for pid in item.digests]):
            terms.append((accounts, provider_ids))
    hashes: dict[tuple[int, str], tuple[int, str]] = {}
    for start in range(0, len(terms), _HASH_TERMS):
        chunk = terms[start : start + _HASH_TERMS]
        params: dict[str, list[Any]] = {}
        for term, (accounts, provider_ids) in enumerate(chunk):
            params[f"accounts_{term}"] = accounts
            params[f"provider_ids_{term}"] = provider_ids
        for row_id, account_id, provider_id, digest in await session.execute(
            _stored_hashes(len(chunk)), params
        ):
            if (account_id, provider_id) in wanted:
                hashes[(account_id, provider_id)] = (row_id, digest)
    return hashes


async def _apply_account(
    batch: _Batch,
    rows: _Rows,
    item: _AccountWork,
    hashes: Mapping[tuple[int, str], tuple[int, str]],
    inserted: list[tuple[_Row, dict[str, Any]]],
    settings: SyncSettings,
) -> None:
    account, account_id = item.account, item.account_id
    transactions, now, result = item.transactions, item.now, item.result
    unknown = [t for t in transactions if (account_id, t.provider_id) not in hashes]
    legacy: dict[tuple[dt.date, int, str, bool], list[_Row]] = defaultdict(list)
    if (
        unknown
        and account.reattached_at is not None
        and now - account.reattached_at <= dt.timedelta(days=settings.rekey_days)
    ):
        low = min(t.booking_date for t in unknown) - dt.timedelta(days=settings.match_days)
        for old_row in await rows.load(
            _LEGACY,
            account_id=account_id,
            provider_account_id=account.provider_account_id,
            low=low,
        ):
            key = _fingerprint(
                old_row.booking_date, old_row.amount, old_row.raw_label, old_row.coming
            )
            legacy[key].append(old_row)

    for transaction in transactions:
        digest = item.digests[transaction.provider_id]
        hit = hashes.get((account_id, transaction.provider_id))
        row: _Row | None = None
        if hit is not None:
            if hit[1] == digest:
                result.unchanged += 1
                continue
            row = rows.by_id[hit[0]]
        else:
            key = _fingerprint(
                transaction.booking_date,
                transaction.amount,
                transaction.raw_label,
                transaction.coming,
            )
            candidates = legacy.get(key)
            if candidates:
                # Same transaction seen under the provider ids of a previous connection.
                row = candidates.pop(0)
                row.change(
                    provider_id=transaction.provider_id,
                    provider_account_id=transaction.account_provider_id,
                )
                assert row.id is not None
                item.touched[row.id] = row
                result.rekeyed += 1
        if row is None:
            values = _new_row(account, transaction, item.raw(transaction), digest, now)
            new_row = _Row(
                id=None,
                replaced_by_id=None,
                replaces_id=None,
                reported_statement_id=None,
                **{name: values[name] for name in _READ if name in values},
            )
            inserted.append((new_row, values))
            result.inserted += 1
            if new_row.status is TransactionStatus.BOOKED:
                item.new_booked.append(new_row)
            batch.versions.append((new_row, _new_version(values, now)))
            continue
        if row.payload_hash == digest:
            result.unchanged += 1
            continue
        was_pending_alive = row.status is TransactionStatus.PENDING
        raw = item.raw(transaction)
        _update_row(row, transaction, raw, digest, now, result)
        assert row.id is not None
        item.touched[row.id] = row
        batch.versions.append((row, _version(row, raw, now)))
        if was_pending_alive and row.status is TransactionStatus.DELETED and row.coming:
            item.gone_pending.append(row)


def _new_row(
    account: BankAccount, transaction: ProviderTransaction, raw: str, digest: str, now: dt.datetime
) -> dict[str, Any]:
    status = _status_of(transaction)
    return {
        "account_id": account.id,
        "provider_id": transaction.provider_id,
        "provider_account_id": transaction.account_provider_id,
        "status": status,
        "booking_date": transaction.booking_date,
        "value_date": transaction.value_date,
        "real_date": transaction.real_date,
        "amount": transaction.amount,
        "currency": transaction.currency[:3],
        "raw_label": transaction.raw_label[:500],
        "type": transaction.type[:40],
        "counterparty_label": _cut(transaction.counterparty_label, 200),
        "counterparty_iban": normalise_iban(transaction.counterparty_iban),
        "reference": _cut(transaction.reference, 200),
        "coming": transaction.coming,
        "deleted_at": transaction.deleted_at,
        "provider_last_update": transaction.last_update,
        "first_seen_at": now,
        "last_change_seen_at": now,
        "booked_at": now if status is TransactionStatus.BOOKED else None,
        "raw": raw,
        "payload_hash": digest,
        "correction_pending": False,
    }


def _new_version(values: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    return {
        "seen_at": now,
        "provider_id": values["provider_id"],
        "status": values["status"],
        "booking_date": values["booking_date"],
        "value_date": values["value_date"],
        "amount": values["amount"],
        "raw_label": values["raw_label"],
        "coming": values["coming"],
        "deleted_at": values["deleted_at"],
        "after_report": False,
        "raw": values["raw"],
    }


def _cut(value: str | None, size: int) -> str | None:
    return None if value is None else value[:size]


def _version(row: _Row, raw: str, now: dt.datetime) -> dict[str, Any]:
    return {
        "seen_at": now,
        "provider_id": row.provider_id,
        "status": row.status,
        "booking_date": row.booking_date,
        "value_date": row.value_date,
        "amount": row.amount,
        "raw_label": row.raw_label,
        "coming": row.coming,
        "deleted_at": row.deleted_at,
        "after_report": row.reported_statement_id is not None,
        "raw": raw,
    }


def _update_row(
    row: _Row,
    transaction: ProviderTransaction,
    raw: str,
    digest: str,
    now: dt.datetime,
    result: RefreshResult,
) -> None:
    reported = row.reported_statement_id is not None
    old_status = row.status
    raw_label = transaction.raw_label[:500]
    reportable_changed = (
        row.amount != transaction.amount
        or row.booking_date != transaction.booking_date
        or row.value_date != transaction.value_date
        or row.raw_label != raw_label
    )
    new_status = _status_of(transaction)
    if old_status is TransactionStatus.REPLACED and new_status is not TransactionStatus.BOOKED:
        # A pending row already matched to its booked successor keeps its link.
        new_status = TransactionStatus.REPLACED
    row.change(
        booking_date=transaction.booking_date,
        value_date=transaction.value_date,
        real_date=transaction.real_date,
        amount=transaction.amount,
        raw_label=raw_label,
        type=transaction.type[:40],
        counterparty_label=_cut(transaction.counterparty_label, 200),
        counterparty_iban=normalise_iban(transaction.counterparty_iban),
        reference=_cut(transaction.reference, 200),
        coming=transaction.coming,
        deleted_at=transaction.deleted_at,
        provider_last_update=transaction.last_update,
        last_change_seen_at=now,
        raw=raw,
        payload_hash=digest,
        status=new_status,
    )
    if new_status is TransactionStatus.BOOKED and row.booked_at is None:
        row.change(booked_at=now)
    if (
        old_status is TransactionStatus.BOOKED
        and new_status is TransactionStatus.BOOKED
        and reportable_changed
    ):
        row.change(changed_at=now)
        if reported:
            row.change(correction_pending=True)
    if new_status is TransactionStatus.DELETED and old_status is not TransactionStatus.DELETED:
        result.deleted += 1
        if reported:
            row.change(correction_pending=True)
    else:
        result.updated += 1
    if reported and old_status is TransactionStatus.BOOKED and new_status is not old_status:
        row.change(correction_pending=True)


async def _match_replacements(
    rows: _Rows, work: Sequence[_AccountWork], settings: SyncSettings
) -> None:
    """Link pending rows the bank withdrew to the booked rows that replace them.

    Candidates stored before are read with one query per kind for all the accounts that need
    them. Rows inserted by this write are in the database (and come back as the objects that
    stand for them); rows it changed are not written yet, so the query skips them and they
    are tested here instead, on their new state.
    """
    touched = {row_id for item in work for row_id in item.touched}
    stored_pending = await _candidates(
        rows,
        _PENDING_CANDIDATES,
        [item for item in work if item.new_booked],
        touched,
        _is_pending_candidate,
        settings,
    )
    booked_for = [item for item in work if item.gone_pending]
    stored_booked: Mapping[int, list[_Row]] = {}
    if booked_for:
        # Every pending row the matching will see is known now: a booked row booked more
        # than match_days away from all of them cannot replace any, so it is not read.
        dates = [
            row.booking_date
            for item in booked_for
            for row in (*item.gone_pending, *stored_pending.get(item.account_id, ()))
        ]
        span = dt.timedelta(days=settings.match_days)
        stored_booked = await _candidates(
            rows,
            _BOOKED_CANDIDATES,
            booked_for,
            touched,
            _is_booked_candidate,
            settings,
            low=min(dates) - span,
            high=max(dates) + span,
        )
    for item in work:
        if item.new_booked or item.gone_pending:
            account_id = item.account_id
            _match_account(
                item,
                stored_pending.get(account_id, []),
                stored_booked.get(account_id, []),
                settings,
            )


async def _candidates(
    rows: _Rows,
    statement: Select[Any],
    items: Sequence[_AccountWork],
    touched: set[int],
    candidate: Callable[[_Row, dt.datetime], bool],
    settings: SyncSettings,
    **bounds: Any,
) -> dict[int, list[_Row]]:
    """Candidates by account: stored ones as they are in the database (or as inserted by
    this write), then rows this write changed, on their new state."""
    found: dict[int, list[_Row]] = defaultdict(list)
    if not items:
        return found
    # Each connection has its own clock reading: one query from the earliest, then each
    # account keeps what its own refresh would have read.
    since = {item.account_id: item.now - dt.timedelta(days=settings.match_days) for item in items}
    earliest = min(since.values())
    for accounts in _chunks(sorted(since)):
        for row in await rows.load(statement, accounts=accounts, since=earliest, **bounds):
            if row.id not in touched and candidate(row, since[row.account_id]):
                found[row.account_id].append(row)
    for item in items:
        account_id = item.account_id
        found[account_id].extend(
            row for row in item.touched.values() if candidate(row, since[account_id])
        )
    return found


def _is_pending_candidate(row: _Row, since: dt.datetime) -> bool:
    return (
        row.status is TransactionStatus.DELETED
        and row.coming is True
        and row.replaced_by_id is None
        and row.deleted_at is not None
        and row.deleted_at >= since
    )


def _is_booked_candidate(row: _Row, since: dt.datetime) -> bool:
    return (
        row.status is TransactionStatus.BOOKED
        and row.replaces_id is None
        and row.first_seen_at >= since
    )


def _match_account(
    item: _AccountWork,
    stored_pending: Iterable[_Row],
    stored_booked: Iterable[_Row],
    settings: SyncSettings,
) -> None:
    pending: dict[int | None, _Row] = {row.id: row for row in item.gone_pending}
    booked: dict[int | None, _Row] = {row.id: row for row in item.new_booked}
    if item.new_booked:
        pending.update((row.id, row) for row in stored_pending)
    if item.gone_pending:
        booked.update((row.id, row) for row in stored_booked)
    if not pending or not booked:
        return
    scored: list[tuple[tuple[float, int, int, int], _Row, _Row]] = []
    for old in pending.values():
        for new in booked.values():
            if new.replaces_id is not None or (old.amount < 0) != (new.amount < 0):
                continue
            if new.first_seen_at < old.first_seen_at:
                continue
            gap = abs(new.amount - old.amount)
            if gap * 100 > abs(old.amount) * settings.match_amount_percent:
                continue
            days = abs((new.booking_date - old.booking_date).days)
            if days > settings.match_days:
                continue
            similarity = _label_similarity(old.raw_label, new.raw_label)
            if similarity < 0.5:
                continue
            assert new.id is not None
            scored.append(((-similarity, gap, days, new.id), old, new))
    scored.sort(key=lambda entry: entry[0])
    used_old: set[int | None] = set()
    used_new: set[int | None] = set()
    for _score, old, new in scored:
        if old.id in used_old or new.id in used_new:
            continue
        used_old.add(old.id)
        used_new.add(new.id)
        old.change(status=TransactionStatus.REPLACED, replaced_by_id=new.id)
        new.change(replaces_id=old.id)
        item.result.replaced += 1

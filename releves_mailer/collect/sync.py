"""Incremental sync of one bank connection: state, accounts, transactions, events.

:func:`refresh_connection` is the only entry point. It reads what it needs in a short
transaction, calls the provider with no transaction open, then applies everything in a single
transaction that first takes a write lock on the connection row, so two refreshes of the same
connection (daemon and command line) are serialised and a crash leaves nothing half written.

Why nothing is lost: the provider is asked for every row changed since the stored cursor
(minus an overlap) *and*, at every refresh, for every row whose booking date falls in the last
``reread_days`` days, which catches rows whose ``last_update`` is older than the cursor (late
postings back-dated by the bank). Why nothing is repeated: rows are keyed by provider id per
account; a booked row that appears under a new id is linked to the pending row it replaces
(which is never reported), and after a reconnection (new provider ids for the same IBAN) rows
are re-keyed one-to-one by (booking date, amount, label) instead of being inserted again.
Running a refresh twice at the same clock time changes nothing the second time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from releves_mailer.clock import PARIS, Clock
from releves_mailer.collect.errors import describe_error
from releves_mailer.collect.provider import (
    ConnectionStatus,
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

__all__ = ["RefreshResult", "SyncSettings", "normalise_iban", "refresh_connection"]

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


def normalise_iban(value: str | None) -> str | None:
    """Compact upper-case IBAN, or None for an empty value."""
    if value is None:
        return None
    compact = re.sub(r"[\s.-]", "", value).upper()
    return compact or None


def _paris_date(moment: dt.datetime) -> dt.date:
    return moment.astimezone(PARIS).date()


def _payload(transaction: ProviderTransaction) -> tuple[str, str]:
    raw = json.dumps(transaction.raw, sort_keys=True, separators=(",", ":"), default=str)
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
    digest = hashlib.sha256((raw + repr(fields)).encode()).hexdigest()
    return raw, digest


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


# -- reading ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Plan:
    connection: BankConnection
    access: ProviderAccess
    provider: Provider
    backfill_from: dt.date | None


async def _prepare(
    database: Database,
    connection_id: int,
    providers: Mapping[str, Provider],
    keyring: KeyRing,
) -> _Plan:
    async with database.session() as session:
        connection = await session.get(BankConnection, connection_id)
        if connection is None:
            raise LookupError(f"bank connection {connection_id} not found")
        provider = providers.get(connection.provider)
        if provider is None:
            raise LookupError(f"no provider {connection.provider!r} configured")
        backfill = await session.scalar(
            select(BankAccount.backfill_from)
            .where(BankAccount.connection_id == connection_id)
            .where(BankAccount.backfill_from.is_not(None))
            .order_by(BankAccount.backfill_from)
            .limit(1)
        )
        token = await _decrypt(keyring, connection.token_encrypted)
    access = ProviderAccess(token, connection.provider_connection_id, connection.provider_user_id)
    return _Plan(connection, access, provider, backfill)


async def _decrypt(keyring: KeyRing, token: bytes) -> str:
    # Fernet is fast; no thread needed for a few hundred bytes.
    return keyring.decrypt(token)


# -- the entry point -------------------------------------------------------------------------


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
    settings = settings or SyncSettings()
    plan = await _prepare(database, connection_id, providers, keyring)
    now = clock.now()
    today = _paris_date(now)
    connection = plan.connection
    if not connection.active:
        return RefreshResult(connection_id, ok=False, error_code=connection.error_code)

    status: ConnectionStatus | None = None
    accounts: Sequence[ProviderAccount] = ()
    fetched: list[ProviderTransaction] = []
    failure: ProviderError | None = None
    try:
        status = await plan.provider.connection_status(plan.access)
        if status.state is not None:
            raise ProviderError(status.state, status.detail)
        accounts = await plan.provider.list_accounts(plan.access)
        starts = (
            [today - dt.timedelta(days=settings.initial_days)] if connection.cursor is None else []
        )
        if settings.reread_days > 0:
            starts.append(today - dt.timedelta(days=settings.reread_days))
        if plan.backfill_from is not None:
            starts.append(plan.backfill_from)
        if connection.cursor is not None:
            fetched.extend(
                await plan.provider.fetch_transactions(
                    plan.access, changed_since=connection.cursor - settings.cursor_overlap
                )
            )
        if starts:
            fetched.extend(
                await plan.provider.fetch_transactions(plan.access, min_date=min(starts))
            )
    except ProviderError as error:
        failure = error

    async with database.session() as session:
        # Take the write lock on the connection first: serialises concurrent refreshes.
        await session.execute(
            update(BankConnection)
            .where(BankConnection.id == connection_id)
            .values(updated_at=BankConnection.updated_at)
        )
        current = await session.get(BankConnection, connection_id, populate_existing=True)
        assert current is not None
        if failure is not None:
            return await _record_failure(session, current, failure, now)
        result = RefreshResult(connection_id, ok=True)
        await _record_success(session, current, now, result)
        by_provider_id = await _reconcile_accounts(session, current, accounts, now, result)
        await _apply_transactions(session, by_provider_id, fetched, now, settings, result)
        if fetched:
            newest = max(transaction.last_update for transaction in fetched)
            newest = min(newest, now)
            if current.cursor is None or newest > current.cursor:
                current.cursor = newest
        elif current.cursor is None:
            current.cursor = now - settings.cursor_overlap
        for account in by_provider_id.values():
            if account.active and account.connection_id == current.id:
                account.last_collected_at = now
                account.backfill_from = None
        return result


async def _record_failure(
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


async def _record_success(
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


async def _reconcile_accounts(
    session: AsyncSession,
    connection: BankConnection,
    listed: Sequence[ProviderAccount],
    now: dt.datetime,
    result: RefreshResult,
) -> dict[str, BankAccount]:
    """Match the provider's accounts to ours; returns them by provider account id."""
    known = list(
        (
            await session.scalars(
                select(BankAccount).where(BankAccount.redevable_id == connection.redevable_id)
            )
        ).all()
    )
    by_provider = {a.provider_account_id: a for a in known if a.connection_id == connection.id}
    by_iban = {a.iban: a for a in known if a.iban is not None}
    matched: dict[str, BankAccount] = {}
    for remote in listed:
        iban = normalise_iban(remote.iban)
        account = by_provider.get(remote.provider_id)
        if account is None and iban is not None and iban in by_iban:
            account = by_iban[iban]
            old_ref = f"{account.provider_account_id} (connexion {account.connection_id})"
            account.connection_id = connection.id
            account.provider_account_id = remote.provider_id
            account.reattached_at = now
            account.gone_at = None
            account.updated_at = now
            _account_event(
                session,
                result,
                account,
                BankEventKind.ACCOUNT_REATTACHED,
                now,
                "Compte rattaché à la nouvelle connexion bancaire",
                old_ref,
                f"{remote.provider_id} (connexion {connection.id})",
            )
        if account is None:
            account = BankAccount(
                redevable_id=connection.redevable_id,
                connection_id=connection.id,
                provider_account_id=remote.provider_id,
                iban=iban,
                bic=remote.bic[:11],
                label=remote.label[:200],
                type=remote.type[:40],
                currency=remote.currency[:3],
                number=remote.number[:64],
                active=True,
                activated_at=now,
                created_at=now,
                updated_at=now,
            )
            session.add(account)
            await session.flush()
            if iban is not None:
                by_iban[iban] = account
            _account_event(
                session,
                result,
                account,
                BankEventKind.ACCOUNT_ADDED,
                now,
                f"Nouveau compte bancaire : {remote.label}",
                None,
                iban,
            )
        else:
            _update_account_fields(session, result, account, remote, iban, by_iban, now)
        if remote.balance is not None and (
            account.balance != remote.balance or account.balance_at != remote.balance_at
        ):
            account.balance = remote.balance
            account.balance_at = remote.balance_at or now
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
        "iban": iban,
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


def _fingerprint(
    booking: dt.date, amount: int, label: str, coming: bool
) -> tuple[dt.date, int, str, bool]:
    return (booking, amount, label, coming)


async def _apply_transactions(
    session: AsyncSession,
    accounts: Mapping[str, BankAccount],
    fetched: Iterable[ProviderTransaction],
    now: dt.datetime,
    settings: SyncSettings,
    result: RefreshResult,
) -> None:
    latest: dict[str, ProviderTransaction] = {}
    for transaction in fetched:
        previous = latest.get(transaction.provider_id)
        if previous is None or transaction.last_update >= previous.last_update:
            latest[transaction.provider_id] = transaction
    grouped: dict[str, list[ProviderTransaction]] = defaultdict(list)
    for transaction in latest.values():
        grouped[transaction.account_provider_id].append(transaction)
    for provider_account_id, transactions in grouped.items():
        account = accounts.get(provider_account_id)
        if account is None or not account.active:
            # Deactivated accounts are not collected; reactivation re-reads from the
            # last reported date.
            continue
        await _apply_account(session, account, transactions, now, settings, result)


async def _apply_account(
    session: AsyncSession,
    account: BankAccount,
    transactions: list[ProviderTransaction],
    now: dt.datetime,
    settings: SyncSettings,
    result: RefreshResult,
) -> None:
    ids = [t.provider_id for t in transactions]
    existing: dict[str, BankTransaction] = {}
    for start in range(0, len(ids), _CHUNK):
        rows = await session.scalars(
            select(BankTransaction)
            .where(BankTransaction.account_id == account.id)
            .where(BankTransaction.provider_id.in_(ids[start : start + _CHUNK]))
        )
        existing.update((hit.provider_id, hit) for hit in rows)

    unknown = [t for t in transactions if t.provider_id not in existing]
    legacy: dict[tuple[dt.date, int, str, bool], list[BankTransaction]] = defaultdict(list)
    if (
        unknown
        and account.reattached_at is not None
        and now - account.reattached_at <= dt.timedelta(days=settings.rekey_days)
    ):
        low = min(t.booking_date for t in unknown) - dt.timedelta(days=settings.match_days)
        rows = await session.scalars(
            select(BankTransaction)
            .where(BankTransaction.account_id == account.id)
            .where(BankTransaction.provider_account_id != account.provider_account_id)
            .where(BankTransaction.booking_date >= low)
            .order_by(BankTransaction.id)
        )
        for old_row in rows:
            key = _fingerprint(
                old_row.booking_date, old_row.amount, old_row.raw_label, old_row.coming
            )
            legacy[key].append(old_row)

    new_booked: list[BankTransaction] = []
    gone_pending: list[BankTransaction] = []
    versions: list[tuple[BankTransaction, BankTransactionVersion]] = []
    for transaction in sorted(transactions, key=lambda t: (t.last_update, t.provider_id)):
        raw, digest = _payload(transaction)
        row = existing.get(transaction.provider_id)
        if row is None:
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
                row.provider_id = transaction.provider_id
                row.provider_account_id = transaction.account_provider_id
                existing[transaction.provider_id] = row
                result.rekeyed += 1
        if row is None:
            status = _status_of(transaction)
            row = BankTransaction(
                account_id=account.id,
                provider_id=transaction.provider_id,
                provider_account_id=transaction.account_provider_id,
                status=status,
                booking_date=transaction.booking_date,
                value_date=transaction.value_date,
                real_date=transaction.real_date,
                amount=transaction.amount,
                currency=transaction.currency[:3],
                raw_label=transaction.raw_label[:500],
                type=transaction.type[:40],
                counterparty_label=_cut(transaction.counterparty_label, 200),
                counterparty_iban=normalise_iban(transaction.counterparty_iban),
                reference=_cut(transaction.reference, 200),
                coming=transaction.coming,
                deleted_at=transaction.deleted_at,
                provider_last_update=transaction.last_update,
                first_seen_at=now,
                last_change_seen_at=now,
                booked_at=now if status is TransactionStatus.BOOKED else None,
                raw=raw,
                payload_hash=digest,
                correction_pending=False,
            )
            session.add(row)
            existing[transaction.provider_id] = row
            result.inserted += 1
            if status is TransactionStatus.BOOKED:
                new_booked.append(row)
            versions.append((row, _version(row, now)))
            continue
        if row.payload_hash == digest:
            result.unchanged += 1
            continue
        was_pending_alive = row.status is TransactionStatus.PENDING
        _update_row(row, transaction, raw, digest, now, result)
        versions.append((row, _version(row, now)))
        if was_pending_alive and row.status is TransactionStatus.DELETED and row.coming:
            gone_pending.append(row)
    await session.flush()
    for row, version in versions:
        version.transaction_id = row.id
        session.add(version)
    if new_booked or gone_pending:
        await _match_replacements(session, account, new_booked, gone_pending, now, settings, result)


def _cut(value: str | None, size: int) -> str | None:
    return None if value is None else value[:size]


def _version(row: BankTransaction, now: dt.datetime) -> BankTransactionVersion:
    return BankTransactionVersion(
        seen_at=now,
        provider_id=row.provider_id,
        status=row.status,
        booking_date=row.booking_date,
        value_date=row.value_date,
        amount=row.amount,
        raw_label=row.raw_label,
        coming=row.coming,
        deleted_at=row.deleted_at,
        after_report=row.reported_statement_id is not None,
        raw=row.raw,
    )


def _update_row(
    row: BankTransaction,
    transaction: ProviderTransaction,
    raw: str,
    digest: str,
    now: dt.datetime,
    result: RefreshResult,
) -> None:
    reported = row.reported_statement_id is not None
    old_status = row.status
    reportable_changed = (
        row.amount != transaction.amount
        or row.booking_date != transaction.booking_date
        or row.value_date != transaction.value_date
        or row.raw_label != transaction.raw_label[:500]
    )
    new_status = _status_of(transaction)
    if old_status is TransactionStatus.REPLACED and new_status is not TransactionStatus.BOOKED:
        # A pending row already matched to its booked successor keeps its link.
        new_status = TransactionStatus.REPLACED
    row.booking_date = transaction.booking_date
    row.value_date = transaction.value_date
    row.real_date = transaction.real_date
    row.amount = transaction.amount
    row.raw_label = transaction.raw_label[:500]
    row.type = transaction.type[:40]
    row.counterparty_label = _cut(transaction.counterparty_label, 200)
    row.counterparty_iban = normalise_iban(transaction.counterparty_iban)
    row.reference = _cut(transaction.reference, 200)
    row.coming = transaction.coming
    row.deleted_at = transaction.deleted_at
    row.provider_last_update = transaction.last_update
    row.last_change_seen_at = now
    row.raw = raw
    row.payload_hash = digest
    row.status = new_status
    if new_status is TransactionStatus.BOOKED and row.booked_at is None:
        row.booked_at = now
    if (
        old_status is TransactionStatus.BOOKED
        and new_status is TransactionStatus.BOOKED
        and reportable_changed
    ):
        row.changed_at = now
        if reported:
            row.correction_pending = True
    if new_status is TransactionStatus.DELETED and old_status is not TransactionStatus.DELETED:
        result.deleted += 1
        if reported:
            row.correction_pending = True
    else:
        result.updated += 1
    if reported and old_status is TransactionStatus.BOOKED and new_status is not old_status:
        row.correction_pending = True


async def _match_replacements(
    session: AsyncSession,
    account: BankAccount,
    new_booked: list[BankTransaction],
    gone_pending: list[BankTransaction],
    now: dt.datetime,
    settings: SyncSettings,
    result: RefreshResult,
) -> None:
    """Link pending rows the bank withdrew to the booked rows that replace them."""
    since = now - dt.timedelta(days=settings.match_days)
    pending = {row.id: row for row in gone_pending}
    booked = {row.id: row for row in new_booked}
    if new_booked:
        rows = await session.scalars(
            select(BankTransaction)
            .where(BankTransaction.account_id == account.id)
            .where(BankTransaction.status == TransactionStatus.DELETED)
            .where(BankTransaction.coming.is_(True))
            .where(BankTransaction.replaced_by_id.is_(None))
            .where(BankTransaction.deleted_at >= since)
        )
        pending.update((row.id, row) for row in rows)
    if gone_pending:
        rows = await session.scalars(
            select(BankTransaction)
            .where(BankTransaction.account_id == account.id)
            .where(BankTransaction.status == TransactionStatus.BOOKED)
            .where(BankTransaction.replaces_id.is_(None))
            .where(BankTransaction.first_seen_at >= since)
        )
        booked.update((row.id, row) for row in rows)
    if not pending or not booked:
        return
    scored: list[tuple[tuple[float, int, int, int], BankTransaction, BankTransaction]] = []
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
            scored.append(((-similarity, gap, days, new.id), old, new))
    scored.sort(key=lambda entry: entry[0])
    used_old: set[int] = set()
    used_new: set[int] = set()
    for _score, old, new in scored:
        if old.id in used_old or new.id in used_new:
            continue
        used_old.add(old.id)
        used_new.add(new.id)
        old.status = TransactionStatus.REPLACED
        old.replaced_by_id = new.id
        new.replaces_id = old.id
        result.replaced += 1

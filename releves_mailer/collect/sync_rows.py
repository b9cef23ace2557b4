"""Sync of a connection's transactions: upsert the provider's rows, link replacements.

Transaction rows are read and written with Core statements built once (their compiled form
is cached), not as ORM objects: a refresh touches dozens of rows and reads a few columns.
A booked row that appears under a new id is linked to the pending row it replaces; after a
reconnection, rows are re-keyed one-to-one by (booking date, amount, label).
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
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Select, Table, and_, bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from releves_mailer.collect.provider import ProviderTransaction
from releves_mailer.collect.sync_accounts import normalise_iban
from releves_mailer.db.models.collect import (
    BankAccount,
    BankTransaction,
    BankTransactionVersion,
    TransactionStatus,
)

if TYPE_CHECKING:
    from releves_mailer.collect.sync import RefreshResult, SyncSettings

__all__ = ["CHUNK", "WriteBatch", "account_work"]

#: Values per ``IN`` list.
CHUNK = 500


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


def account_work(
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
    for start in range(0, len(values), CHUNK):
        yield list(values[start : start + CHUNK])


async def _apply_transactions(
    batch: WriteBatch, queued: Sequence[Sequence[_AccountWork]], settings: SyncSettings
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
    batch: WriteBatch,
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


class WriteBatch:
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
        for start in range(0, len(wanted), CHUNK):
            accounts = await self.session.scalars(
                select(BankAccount)
                .where(BankAccount.redevable_id.in_(wanted[start : start + CHUNK]))
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

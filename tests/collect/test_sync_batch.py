"""Batched refreshes: a batch does to each connection what a refresh of it alone does."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
from sqlalchemy import select

from releves_mailer.aggregators.testbank import TestBank, parse_scheduled_error
from releves_mailer.clock import PARIS, ManualClock
from releves_mailer.collect.connections import (
    add_connection,
    connect_test_bank,
    set_account_active,
)
from releves_mailer.collect.service import CollectionService
from releves_mailer.collect.sync import RefreshResult
from releves_mailer.db import Database
from releves_mailer.db.models import (
    BankAccount,
    BankConnection,
    BankEvent,
    BankTransaction,
    BankTransactionVersion,
)
from releves_mailer.signing.secrets import KeyRing

from .conftest import Portfolio, make_portfolio

DAY = dt.timedelta(days=1)


async def _connections(
    database: Database, portfolio: Portfolio, bank: TestBank, keyring: KeyRing, clock: ManualClock
) -> list[int]:
    today = clock.now().astimezone(PARIS).date()
    failing = parse_scheduled_error(
        f"wrongpass@{(today + 4 * DAY).isoformat()}..{(today + 6 * DAY).isoformat()}"
    )
    first = await connect_test_bank(
        database, portfolio.redevable_id, bank=bank, keyring=keyring, clock=clock
    )
    second = await connect_test_bank(
        database,
        portfolio.other_redevable_id,
        bank=bank,
        keyring=keyring,
        clock=clock,
        errors=[failing],
    )
    return [second.id, first.id]


async def _snapshot(database: Database) -> dict[str, list[tuple[object, ...]]]:
    async with database.session() as session:
        rows = (await session.scalars(select(BankTransaction).order_by(BankTransaction.id))).all()
        by_id = {row.id: row.provider_id for row in rows}
        versions = (
            await session.scalars(
                select(BankTransactionVersion).order_by(BankTransactionVersion.id)
            )
        ).all()
        accounts = (await session.scalars(select(BankAccount).order_by(BankAccount.id))).all()
        connections = (
            await session.scalars(select(BankConnection).order_by(BankConnection.id))
        ).all()
        events = (await session.scalars(select(BankEvent).order_by(BankEvent.id))).all()
    return {
        "transactions": [
            (
                row.account_id,
                row.provider_id,
                row.status,
                row.amount,
                row.booking_date,
                row.value_date,
                row.raw_label,
                row.coming,
                row.deleted_at,
                row.first_seen_at,
                row.booked_at,
                row.changed_at,
                row.payload_hash,
                by_id.get(row.replaced_by_id or 0),
                by_id.get(row.replaces_id or 0),
            )
            for row in rows
        ],
        "versions": [
            (by_id[v.transaction_id], v.seen_at, v.status, v.amount, v.raw) for v in versions
        ],
        "accounts": [
            (a.provider_account_id, a.iban, a.balance, a.last_collected_at, a.active)
            for a in accounts
        ],
        "connections": [
            (c.state, c.error_code, c.consecutive_failures, c.cursor, c.last_check_at)
            for c in connections
        ],
        "events": [(e.at, e.kind, e.account_id, e.message) for e in events],
    }


def _counts(results: list[RefreshResult]) -> list[tuple[object, ...]]:
    return [
        (
            r.ok,
            r.error_code,
            r.accounts,
            r.inserted,
            r.updated,
            r.deleted,
            r.replaced,
            r.rekeyed,
            r.unchanged,
            r.events,
        )
        for r in results
    ]


async def _active_ids(database: Database) -> list[int]:
    async with database.session() as session:
        return list(
            await session.scalars(
                select(BankConnection.id)
                .where(BankConnection.active)
                .order_by(BankConnection.id.desc())
            )
        )


async def test_batch_matches_one_by_one(
    database: Database,
    portfolio: Portfolio,
    bank: TestBank,
    keyring: KeyRing,
    clock: ManualClock,
    other_database: Database,
) -> None:
    other_clock = ManualClock(clock.now())
    other_bank = TestBank(other_clock, seed=bank.seed)
    other_portfolio = await make_portfolio(other_database, other_clock.now())
    batched_ids = await _connections(database, portfolio, bank, keyring, clock)
    single_ids = await _connections(
        other_database, other_portfolio, other_bank, keyring, other_clock
    )
    providers = {"testbank": bank}
    other_providers = {"testbank": other_bank}
    failures = 0
    for day in range(25):
        if day == 8:
            # An account switched off for a while is re-read from where it stopped.
            for db, cl in ((database, clock), (other_database, other_clock)):
                async with db.session() as session:
                    account_id = await session.scalar(
                        select(BankAccount.id).order_by(BankAccount.id).limit(1)
                    )
                assert account_id is not None
                await set_account_active(db, account_id, False, clock=cl)
        if day == 14:
            for db, cl in ((database, clock), (other_database, other_clock)):
                async with db.session() as session:
                    account_id = await session.scalar(
                        select(BankAccount.id).order_by(BankAccount.id).limit(1)
                    )
                assert account_id is not None
                await set_account_active(db, account_id, True, clock=cl)
        batched = await CollectionService(database, clock, providers, keyring).refresh(batched_ids)
        single: list[RefreshResult] = [
            await CollectionService(
                other_database, other_clock, other_providers, keyring
            ).refresh_one(connection_id)
            for connection_id in single_ids
        ]
        assert [r.connection_id for r in batched] == batched_ids
        assert _counts(batched) == _counts(single)
        failures += sum(not r.ok for r in batched)
        clock.advance(DAY)
        other_clock.advance(DAY)
    assert failures == 3  # the scheduled error, one batch member failing alone
    assert await _snapshot(database) == await _snapshot(other_database)


async def test_connections_of_one_redevable_in_one_batch_match_one_by_one(
    database: Database,
    portfolio: Portfolio,
    bank: TestBank,
    keyring: KeyRing,
    clock: ManualClock,
    other_database: Database,
) -> None:
    """Two connections of one redevable to the same accounts (a second generation left
    open, so each refresh re-attaches the accounts and re-keys their rows), then a
    reconnection: within a batch, each connection does what it would do alone."""
    other_clock = ManualClock(clock.now())
    other_bank = TestBank(other_clock, seed=bank.seed)
    other_portfolio = await make_portfolio(other_database, other_clock.now())
    setups = (
        (database, portfolio, bank, clock),
        (other_database, other_portfolio, other_bank, other_clock),
    )
    for db, owned, provider, at in setups:
        for redevable_id in (owned.redevable_id, owned.other_redevable_id):
            await connect_test_bank(db, redevable_id, bank=provider, keyring=keyring, clock=at)
        access, _token = provider.open_connection("732829320", generation=1)
        async with db.session() as session:
            await add_connection(
                session,
                redevable_id=owned.redevable_id,
                provider=provider.name,
                access=access,
                bank_name=provider.display_name,
                keyring=keyring,
                now=at.now(),
                message="second connection",
            )
    totals: Counter[str] = Counter()
    for step in range(24):
        if step == 12:
            for db, owned, provider, at in setups:
                await connect_test_bank(
                    db, owned.redevable_id, bank=provider, keyring=keyring, clock=at
                )
        batched_ids = await _active_ids(database)
        assert batched_ids == await _active_ids(other_database)
        assert len(batched_ids) == (3 if step < 12 else 2)
        batched = await CollectionService(database, clock, {"testbank": bank}, keyring).refresh(
            batched_ids
        )
        single = [
            await CollectionService(
                other_database, other_clock, {"testbank": other_bank}, keyring
            ).refresh_one(connection_id)
            for connection_id in batched_ids
        ]
        assert _counts(batched) == _counts(single)
        for result in batched:
            totals.update(inserted=result.inserted, replaced=result.replaced)
            totals.update(updated=result.updated, rekeyed=result.rekeyed)
        clock.advance(DAY / 2)
        other_clock.advance(DAY / 2)
    assert min(totals.values()) > 0, totals
    assert await _snapshot(database) == await _snapshot(other_database)


async def test_batch_refuses_unknown_and_repeated_ids(
    database: Database, portfolio: Portfolio, bank: TestBank, keyring: KeyRing, clock: ManualClock
) -> None:
    connection = await connect_test_bank(
        database, portfolio.redevable_id, bank=bank, keyring=keyring, clock=clock
    )
    collection = CollectionService(database, clock, {"testbank": bank}, keyring)
    with pytest.raises(ValueError, match="twice"):
        await collection.refresh([connection.id, connection.id])
    with pytest.raises(LookupError):
        await collection.refresh([connection.id, 999_999])
    # Nothing was written by the refused batch.
    async with database.session() as session:
        stored = await session.get(BankConnection, connection.id)
        assert stored is not None and stored.last_check_at is None
    assert await collection.refresh([]) == []

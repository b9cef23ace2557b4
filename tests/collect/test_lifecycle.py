"""A redevable's deactivation switches its accounts off; reactivation restores only those."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from releves_mailer.aggregators.testbank import TestBank
from releves_mailer.clock import ManualClock
from releves_mailer.collect.connections import connect_test_bank, set_account_active
from releves_mailer.collect.lifecycle import deactivate_with_accounts, reactivate_with_accounts
from releves_mailer.collect.service import CollectionService
from releves_mailer.db import Database
from releves_mailer.db.models import BankAccount, Redevable
from releves_mailer.signing.secrets import KeyRing

from .conftest import Portfolio


async def accounts_state(database: Database, redevable_id: int) -> dict[int, bool]:
    async with database.session() as session:
        rows = await session.execute(
            select(BankAccount.id, BankAccount.active).where(
                BankAccount.redevable_id == redevable_id
            )
        )
        return {account_id: active for account_id, active in rows}


async def test_cascade_and_restore(
    database: Database,
    clock: ManualClock,
    keyring: KeyRing,
    bank: TestBank,
    portfolio: Portfolio,
) -> None:
    connection = await connect_test_bank(
        database, portfolio.redevable_id, bank=bank, keyring=keyring, clock=clock
    )
    await CollectionService(database, clock, {bank.name: bank}, keyring).refresh_one(connection.id)
    before = await accounts_state(database, portfolio.redevable_id)
    assert len(before) >= 2 and all(before.values())
    switched_off_alone = min(before)
    await set_account_active(database, switched_off_alone, False, clock=clock)

    clock.advance(dt.timedelta(days=1))
    assert (
        await deactivate_with_accounts(database, clock, portfolio.redevable_id) == len(before) - 1
    )
    assert not any((await accounts_state(database, portfolio.redevable_id)).values())
    async with database.session() as session:
        redevable = await session.get_one(Redevable, portfolio.redevable_id)
        assert not redevable.active

    clock.advance(dt.timedelta(days=10))
    assert (
        await reactivate_with_accounts(database, clock, portfolio.redevable_id) == len(before) - 1
    )
    after = await accounts_state(database, portfolio.redevable_id)
    assert after == {account: account != switched_off_alone for account in before}

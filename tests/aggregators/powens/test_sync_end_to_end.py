"""The incremental sync of the collect package driven through the Powens provider and the fake."""

from __future__ import annotations

import datetime as dt

from cryptography.fernet import Fernet
from sqlalchemy import func, select

from releves_mailer.aggregators.powens import PowensProvider
from releves_mailer.clock import ManualClock
from releves_mailer.collect.service import CollectionService
from releves_mailer.collect.sync import RefreshResult
from releves_mailer.db import Database
from releves_mailer.db.models.collect import (
    BankAccount,
    BankEvent,
    BankEventKind,
    BankTransaction,
)
from releves_mailer.signing.secrets import KeyRing
from tests.collect.conftest import make_portfolio
from tests.factories import add_powens_connection
from tests.fakes.powens_server import FakePowens

DAY = dt.date(2026, 3, 1)


async def test_refresh_through_powens(
    database: Database, fake: FakePowens, provider: PowensProvider, clock: ManualClock
) -> None:
    keyring = KeyRing([Fernet.generate_key()])
    portfolio = await make_portfolio(database, clock.now())
    user = fake.create_user()
    remote = fake.add_connection(user)
    checking = fake.add_account(remote, name="Compte chèque", balance="100.00")
    fake.add_account(remote, name="Livret A", type="savings", disabled=True)
    booked = fake.add_transaction(checking, value="-12.34", date=DAY)
    coming = fake.add_transaction(checking, value="-5.00", date=DAY, coming=True, type="card")
    connection_id = await add_powens_connection(
        database,
        keyring,
        clock.now(),
        portfolio.redevable_id,
        user_id=user.id,
        user_token=user.token,
        connection_id=remote.id,
    )

    async def refresh() -> RefreshResult:
        return await CollectionService(database, clock, {"powens": provider}, keyring).refresh_one(
            connection_id
        )

    first = await refresh()
    assert first.ok and first.inserted == 2
    # The account the client left unticked at Powens is known, switched off, and said so.
    async with database.session() as session:
        accounts = (
            await session.execute(
                select(BankAccount.label, BankAccount.active).order_by(BankAccount.id)
            )
        ).all()
        added = (
            await session.scalars(
                select(BankEvent.message).where(BankEvent.kind == BankEventKind.ACCOUNT_ADDED)
            )
        ).all()
    assert accounts == [("Compte chèque", True), ("Livret A", False)]
    assert sorted(added) == [
        "Nouveau compte bancaire : Compte chèque",
        "Nouveau compte bancaire : Livret A (non coché par le client : collecte désactivée)",
    ]

    clock.advance(dt.timedelta(days=1))
    fake.book(coming, new_id=True, date=DAY + dt.timedelta(1), value="-5.20")
    fake.delete_transaction(booked)
    second = await refresh()
    assert second.ok and second.inserted == 1
    # Both rows are gone at Powens; the coming one is linked to its booked replacement.
    assert second.deleted == 2 and second.replaced == 1

    clock.advance(dt.timedelta(hours=1))
    fake.set_state(remote, "SCARequired")
    failed = await refresh()
    assert not failed.ok and failed.error_code == "SCARequired"

    clock.advance(dt.timedelta(hours=1))
    fake.set_state(remote, None)
    again = await refresh()
    assert again.ok and again.inserted == 0
    async with database.session() as session:
        count = await session.scalar(select(func.count()).select_from(BankTransaction))
    assert count == 3  # booked (deleted), coming (replaced), its booked replacement

"""Fixtures of the collection tests: a portfolio made with the ORM, a key ring, a test bank."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
from cryptography.fernet import Fernet

from releves_mailer.clock import ManualClock
from releves_mailer.collect.testbank import TestBank
from releves_mailer.db import Database
from releves_mailer.db.models import Periodicity, PortalAccount, Redevable
from releves_mailer.signing.secrets import KeyRing

FIRST_KEY = Fernet.generate_key()
START = dt.datetime(2026, 3, 2, 2, 0, tzinfo=dt.UTC)  # Monday 03:00 Paris


@dataclass
class Portfolio:
    account_id: int
    redevable_id: int
    other_redevable_id: int


async def make_portfolio(database: Database, now: dt.datetime) -> Portfolio:
    async with database.session() as session:
        account = PortalAccount(
            login="cabinet",
            company_name="CABINET TEST",
            siret="40483304800022",
            email="cabinet@example.org",
            password_hash="not-a-real-hash",
            created_at=now,
            updated_at=now,
        )
        session.add(account)
        await session.flush()
        redevables = [
            Redevable(
                account_id=account.id,
                family_id=account.id,
                siren=siren,
                company_name=name,
                periodicity=Periodicity.JOURNALIERE,
                created_at=now,
                updated_at=now,
            )
            for siren, name in (("732829320", "ENTREPRISE TEST"), ("404833048", "TEST PRM2"))
        ]
        session.add_all(redevables)
        await session.flush()
        return Portfolio(account.id, redevables[0].id, redevables[1].id)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def keyring() -> KeyRing:
    return KeyRing([FIRST_KEY])


@pytest.fixture
def bank(clock: ManualClock) -> TestBank:
    return TestBank(clock, seed=1)


@pytest.fixture
async def portfolio(database: Database, clock: ManualClock) -> Portfolio:
    return await make_portfolio(database, clock.now())

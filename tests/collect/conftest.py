"""Fixtures of the collection tests: a portfolio made with the ORM, a key ring, a test bank."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
from cryptography.fernet import Fernet

from releves_mailer.aggregators.testbank import TestBank
from releves_mailer.clock import ManualClock
from releves_mailer.db import Database
from releves_mailer.signing.secrets import KeyRing
from tests.factories import Spec, add_portfolio

FIRST_KEY = Fernet.generate_key()
START = dt.datetime(2026, 3, 2, 2, 0, tzinfo=dt.UTC)  # Monday 03:00 Paris


@dataclass
class Portfolio:
    account_id: int
    redevable_id: int
    other_redevable_id: int


async def make_portfolio(database: Database, now: dt.datetime) -> Portfolio:
    account_id, (first, other) = await add_portfolio(
        database,
        now,
        [
            Spec(siren="732829320", name="ENTREPRISE TEST"),
            Spec(siren="404833048", name="TEST PRM2"),
        ],
    )
    return Portfolio(account_id, first, other)


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

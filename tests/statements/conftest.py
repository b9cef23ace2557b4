"""Fixtures of the statement tests: a key ring and a simulation helper."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
from cryptography.fernet import Fernet

from releves_mailer.aggregators.testbank import TestBank
from releves_mailer.clock import ManualClock
from releves_mailer.collect.service import CollectionService
from releves_mailer.collect.simulate import SimulationReport
from releves_mailer.db import Database
from releves_mailer.signing.secrets import KeyRing
from releves_mailer.statements.audit import Problem, TestBankTruth, audit

from .scenario import Spec, build_portfolio, paris_night

KEY = Fernet.generate_key()


@pytest.fixture
def keyring() -> KeyRing:
    return KeyRing([KEY])


@dataclass
class World:
    """A portfolio on the test bank and a manual clock, ready to be simulated."""

    database: Database
    clock: ManualClock
    bank: TestBank
    keyring: KeyRing
    redevable_ids: list[int]

    async def simulate(
        self, first: dt.date, last: dt.date, *, step_minutes: int = 60
    ) -> SimulationReport:
        collection = CollectionService(
            self.database, self.clock, {self.bank.name: self.bank}, self.keyring
        )
        return await collection.simulate(first, last, step_minutes=step_minutes)

    async def audit(self) -> list[Problem]:
        return await audit(self.database, truth=TestBankTruth(self.bank, self.keyring))


async def make_world(
    database: Database, keyring: KeyRing, specs: tuple[Spec, ...], start: dt.date, seed: int = 7
) -> World:
    clock = ManualClock(paris_night(start - dt.timedelta(days=1)))
    bank = TestBank(clock, seed=seed)
    ids = await build_portfolio(database, clock, keyring, bank, specs)
    return World(database, clock, bank, keyring, ids)

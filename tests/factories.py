"""Builders of valid test data shared by every test folder and by the benchmarks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from stdnum import luhn

from releves_mailer.aggregators.testbank import TestBank, parse_error_schedule
from releves_mailer.clock import Clock
from releves_mailer.collect.connections import connect_test_bank
from releves_mailer.db import Database
from releves_mailer.db.models import (
    BankConnection,
    ConnectionState,
    Periodicity,
    PortalAccount,
    Redevable,
)
from releves_mailer.portfolio.accounts import AccountInput, create_account
from releves_mailer.signing.secrets import KeyRing

PASSWORD = "correct horse battery"


def make_siren(index: int) -> str:
    """A valid SIREN (Luhn) distinct for each ``index``."""
    base = f"9{index:07d}"
    return base + luhn.calc_check_digit(base)


def make_nic(siren: str, establishment: int = 1) -> str:
    base = f"{establishment:04d}"
    return base + luhn.calc_check_digit(siren + base)


#: The primary account most tests log in with (password ``PASSWORD``).
CABINET = AccountInput(
    login="cabinet",
    company_name="Cabinet Martin",
    siret=make_siren(1) + make_nic(make_siren(1)),
    email="chef@cabinet.example",
)


@dataclass(frozen=True)
class Spec:
    """One redevable to create: its schedule and options, and its test bank errors."""

    periodicity: Periodicity = Periodicity.JOURNALIERE
    month: int | None = None
    day: int | None = None
    include_pending: bool = False
    #: Test bank errors of this connection only (``CODE@YYYY-MM-DD[..YYYY-MM-DD]``).
    errors: tuple[str, ...] = ()
    #: Defaults: a SIREN made from the redevable's index, "REDEVABLE nn".
    siren: str | None = None
    name: str | None = None
    email: str = ""
    remote_entry: bool = False


@dataclass(frozen=True)
class Holder:
    """The portal account the redevables belong to."""

    login: str = "cabinet"
    company_name: str = "CABINET TEST"
    email: str = "cabinet@example.org"
    phone: str = ""


async def add_portfolio(
    database: Database,
    now: dt.datetime,
    specs: Sequence[Spec],
    *,
    holder: Holder = Holder(),
    first_index: int = 100,
) -> tuple[int, list[int]]:
    """A portal account and one redevable per spec: (account id, redevable ids in order)."""
    async with database.session() as session:
        account = PortalAccount(
            login=holder.login,
            company_name=holder.company_name,
            siret="40483304800022",
            email=holder.email,
            phone=holder.phone,
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
                siren=spec.siren or make_siren(first_index + index),
                company_name=spec.name or f"REDEVABLE {index:02d}",
                email=spec.email,
                remote_entry=spec.remote_entry,
                periodicity=spec.periodicity,
                month=spec.month,
                day=spec.day,
                include_pending=spec.include_pending,
                created_at=now,
                updated_at=now,
            )
            for index, spec in enumerate(specs)
        ]
        session.add_all(redevables)
        await session.flush()
        return account.id, [redevable.id for redevable in redevables]


async def build_portfolio(
    database: Database,
    clock: Clock,
    keyring: KeyRing,
    bank: TestBank,
    specs: Sequence[Spec],
    *,
    first_index: int = 100,
) -> list[int]:
    """:func:`add_portfolio`, then each redevable connected to the test bank."""
    _account_id, ids = await add_portfolio(
        database,
        clock.now(),
        specs,
        holder=Holder(login=f"cabinet{first_index}", company_name="CABINET SIMULATION"),
        first_index=first_index,
    )
    for redevable_id, spec in zip(ids, specs, strict=True):
        await connect_test_bank(
            database,
            redevable_id,
            bank=bank,
            keyring=keyring,
            clock=clock,
            errors=parse_error_schedule(spec.errors),
        )
    return ids


async def add_subscribed_account(
    database: Database, clock: Clock, login: str, index: int, parent: str | None = None
) -> int:
    """A portal account subscribed to the service (password :data:`PASSWORD`); its id."""
    siren = make_siren(index)
    async with database.session() as session:
        account = await create_account(
            session,
            clock,
            AccountInput(
                login=login,
                company_name=f"Cabinet {login}",
                siret=siren + make_nic(siren),
                email=f"{login}@cabinet.example",
                parent_login=parent,
            ),
            PASSWORD,
        )
        account.subscribed = True
        account.terms_accepted_at = clock.now()
        await session.flush()
        return account.id


async def add_powens_connection(
    database: Database,
    keyring: KeyRing,
    now: dt.datetime,
    redevable_id: int,
    *,
    user_id: int,
    user_token: str,
    connection_id: int,
) -> int:
    """The row of a redevable's Powens connection (a user and connection of the fake); its id."""
    async with database.session() as session:
        row = BankConnection(
            redevable_id=redevable_id,
            provider="powens",
            provider_connection_id=str(connection_id),
            provider_user_id=str(user_id),
            token_encrypted=keyring.encrypt(user_token),
            bank_name="Connecteur de test",
            state=ConnectionState.NEW,
            consecutive_failures=0,
            active=True,
            created_at=now,
            updated_at=now,
        )
        session.add(row)
        await session.flush()
        return row.id

"""Creating bank connections and switching bank accounts on and off.

A direct connection is only possible with the test bank (the secure-link flow for real
aggregators comes later). Connecting a redevable that already has a test bank connection with
the same seed is a *reconnection*: the previous connection is closed, the bank gives new
provider ids for the same IBANs, and the sync re-attaches the existing accounts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from releves_mailer.aggregators.testbank import ScheduledError, TestBank, TestBankToken
from releves_mailer.aggregators.testbank.schedule import parse_error_schedule
from releves_mailer.clock import PARIS, Clock
from releves_mailer.collect.provider import ProviderAccess
from releves_mailer.config import Config
from releves_mailer.db import Database
from releves_mailer.db.models.collect import (
    BankAccount,
    BankConnection,
    BankEvent,
    BankEventKind,
    ConnectionState,
)
from releves_mailer.db.models.portfolio import Redevable
from releves_mailer.errors import UserError
from releves_mailer.signing.secrets import KeyRing

__all__ = [
    "add_connection",
    "build_test_bank",
    "close_replaced_connection",
    "connect_test_bank",
    "connections_named",
    "rotate_tokens",
    "set_account_active",
    "set_redevable_accounts_active",
]


def build_test_bank(config: Config, clock: Clock) -> TestBank:
    """The test bank configured by ``aggregator.testbank`` (errors validated here)."""
    section = config.aggregator.testbank
    try:
        errors = parse_error_schedule(section.errors)
    except UserError as error:
        raise UserError(f"aggregator.testbank.errors : {error.message}", field="errors") from None
    return TestBank(clock, seed=section.seed, errors=errors)


def close_replaced_connection(
    session: AsyncSession, connection: BankConnection, now: dt.datetime
) -> None:
    """Close a connection superseded by a new one (reconnection), with its event."""
    connection.state = ConnectionState.CLOSED
    connection.active = False
    connection.closed_at = now
    connection.updated_at = now
    session.add(
        BankEvent(
            at=now,
            kind=BankEventKind.CONNECTION_CLOSED,
            connection_id=connection.id,
            message="Connexion bancaire remplacée par une nouvelle connexion",
        )
    )


async def add_connection(
    session: AsyncSession,
    *,
    redevable_id: int,
    provider: str,
    access: ProviderAccess,
    bank_name: str,
    keyring: KeyRing,
    now: dt.datetime,
    message: str,
) -> BankConnection:
    """Store a new connection (token encrypted) and its "created" event."""
    connection = BankConnection(
        redevable_id=redevable_id,
        provider=provider,
        provider_connection_id=access.connection_id,
        provider_user_id=access.user_id,
        token_encrypted=keyring.encrypt(access.token),
        bank_name=bank_name[:100],
        state=ConnectionState.NEW,
        consecutive_failures=0,
        active=True,
        created_at=now,
        updated_at=now,
    )
    session.add(connection)
    await session.flush()
    session.add(
        BankEvent(
            at=now,
            kind=BankEventKind.CONNECTION_CREATED,
            connection_id=connection.id,
            message=message,
        )
    )
    return connection


async def connect_test_bank(
    database: Database,
    redevable_id: int,
    *,
    bank: TestBank,
    keyring: KeyRing,
    clock: Clock,
    seed: int | None = None,
    errors: Iterable[ScheduledError] = (),
) -> BankConnection:
    """Create (or renew) the test bank connection of a redevable; the token is encrypted."""
    now = clock.now()
    seed = bank.seed if seed is None else seed
    async with database.session() as session:
        redevable = await session.get(Redevable, redevable_id)
        if redevable is None:
            raise UserError(f"redevable {redevable_id} introuvable")
        previous = (
            await session.scalars(
                select(BankConnection)
                .where(BankConnection.redevable_id == redevable_id)
                .where(BankConnection.provider == TestBank.name)
                .order_by(BankConnection.id)
            )
        ).all()
        generation = 0
        epoch: dt.date | None = None
        for old in previous:
            token = TestBankToken.decode(keyring.decrypt(old.token_encrypted))
            if token.seed != seed or token.customer != redevable.siren:
                continue
            generation = max(generation, token.generation + 1)
            epoch = epoch or token.epoch
            if old.state is not ConnectionState.CLOSED:
                close_replaced_connection(session, old, now)
        access, token = bank.open_connection(
            redevable.siren, seed=seed, errors=errors, generation=generation, epoch=epoch
        )
        return await add_connection(
            session,
            redevable_id=redevable_id,
            provider=TestBank.name,
            access=access,
            bank_name=bank.display_name,
            keyring=keyring,
            now=now,
            message=f"Connexion créée ({bank.display_name}, graine {token.seed})",
        )


async def connections_named(database: Database, provider: str, remote_id: str) -> list[int]:
    """Local ids of the open connections the provider knows as ``remote_id``."""
    async with database.session() as session:
        found = await session.scalars(
            select(BankConnection.id)
            .where(BankConnection.provider == provider)
            .where(BankConnection.provider_connection_id == remote_id)
            .where(BankConnection.state != ConnectionState.CLOSED)
            .order_by(BankConnection.id)
        )
        return list(found)


async def set_account_active(
    database: Database, account_id: int, active: bool, *, clock: Clock
) -> BankAccount:
    """Deactivate or reactivate one bank account (idempotent)."""
    async with database.session() as session:
        account = await session.get(BankAccount, account_id)
        if account is None:
            raise UserError(f"compte bancaire {account_id} introuvable")
        _switch(session, account, active, clock.now())
        return account


async def set_redevable_accounts_active(
    database: Database, redevable_id: int, active: bool, *, clock: Clock
) -> list[BankAccount]:
    """What deactivating or reactivating a redevable does to its bank accounts."""
    async with database.session() as session:
        accounts = (
            await session.scalars(
                select(BankAccount).where(BankAccount.redevable_id == redevable_id)
            )
        ).all()
        now = clock.now()
        for account in accounts:
            _switch(session, account, active, now)
        return list(accounts)


def _switch(session: AsyncSession, account: BankAccount, active: bool, now: dt.datetime) -> None:
    if account.active == active:
        return
    account.active = active
    account.updated_at = now
    if active:
        account.activated_at = now
        # Transactions were not collected while off: re-read from the last reported date
        # (or from the deactivation) at the next refresh.
        start = account.last_reported_date
        if start is None and account.deactivated_at is not None:
            start = account.deactivated_at.astimezone(PARIS).date()
        account.backfill_from = start
        account.deactivated_at = None
        kind, message = BankEventKind.ACCOUNT_REACTIVATED, "Compte bancaire réactivé"
    else:
        account.deactivated_at = now
        kind, message = BankEventKind.ACCOUNT_DEACTIVATED, "Compte bancaire désactivé"
    session.add(
        BankEvent(
            at=now,
            kind=kind,
            connection_id=account.connection_id,
            account_id=account.id,
            message=message,
        )
    )


async def rotate_tokens(database: Database, keyring: KeyRing) -> int:
    """Re-encrypt every stored token with the newest key; returns how many were rewritten.

    Run after :func:`releves_mailer.signing.secrets.add_key`; older keys can then be removed.
    """
    async with database.session() as session:
        connections = (await session.scalars(select(BankConnection))).all()
        for connection in connections:
            connection.token_encrypted = keyring.rotate(connection.token_encrypted)
        return len(connections)

"""Deactivating and reactivating a redevable together with its bank accounts.

Deactivating a redevable deactivates every active bank account it has (seed: "tous les
RIB/IBAN associés ... deviennent inactifs"); reactivating it restores exactly those, not the
accounts that had been deactivated one by one before. The command line and the portal pages
both go through here.
"""

from __future__ import annotations

from sqlalchemy import select

from releves_mailer.clock import Clock
from releves_mailer.collect.connections import set_account_active
from releves_mailer.db import Database
from releves_mailer.db.models import BankAccount, Redevable
from releves_mailer.errors import UserError
from releves_mailer.portfolio.redevables import deactivate_redevable, reactivate_redevable

__all__ = ["deactivate_with_accounts", "reactivate_with_accounts"]


async def deactivate_with_accounts(database: Database, clock: Clock, redevable_id: int) -> int:
    """Deactivate the redevable, then its active accounts; returns how many accounts."""
    async with database.session() as session:
        redevable = await session.get(Redevable, redevable_id)
        if redevable is None:
            raise UserError(f"redevable {redevable_id} introuvable")
        await deactivate_redevable(session, clock, redevable)
        accounts = (
            await session.scalars(
                select(BankAccount.id).where(
                    BankAccount.redevable_id == redevable_id, BankAccount.active.is_(True)
                )
            )
        ).all()
    for account_id in accounts:
        await set_account_active(database, account_id, False, clock=clock)
    return len(accounts)


async def reactivate_with_accounts(database: Database, clock: Clock, redevable_id: int) -> int:
    """Reactivate the redevable and the accounts its deactivation switched off."""
    async with database.session() as session:
        redevable = await session.get(Redevable, redevable_id)
        if redevable is None:
            raise UserError(f"redevable {redevable_id} introuvable")
        since = redevable.deactivated_at
        await reactivate_redevable(session, clock, redevable)
        query = select(BankAccount.id).where(
            BankAccount.redevable_id == redevable_id, BankAccount.active.is_(False)
        )
        if since is not None:
            query = query.where(BankAccount.deactivated_at >= since)
        accounts = (await session.scalars(query)).all()
    for account_id in accounts:
        await set_account_active(database, account_id, True, clock=clock)
    return len(accounts)

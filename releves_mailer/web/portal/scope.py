"""Access control of the portal, in one place: which portal accounts' data a user may see.

A secondary account sees only its own data. A primary account may see its secondaries'
data too; its lists show them only when asked ("Afficher ... secondaires"). Every handler
reads objects through the helpers below, which answer 404 (not 403) for an object outside
the user's scope, so that guessing ids reveals nothing.
"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from releves_mailer.db.models import BankAccount, PortalAccount, Redevable, Statement
from releves_mailer.portfolio.accounts import family_ids

__all__ = [
    "allowed_account_ids",
    "bank_account_or_404",
    "listed_account_ids",
    "redevable_or_404",
    "statement_or_404",
]


async def allowed_account_ids(session: AsyncSession, user: PortalAccount) -> list[int]:
    """Every portal account whose data ``user`` may read or change."""
    return await family_ids(session, user)


async def listed_account_ids(
    session: AsyncSession, user: PortalAccount, include_secondaries: bool
) -> list[int]:
    """The accounts a list shows: the user's own, plus its secondaries' when asked (primary)."""
    if include_secondaries and user.is_primary:
        return await allowed_account_ids(session, user)
    return [user.id]


def _not_found() -> web.HTTPNotFound:
    return web.HTTPNotFound(text="Page introuvable.", content_type="text/plain")


async def redevable_or_404(
    session: AsyncSession, user: PortalAccount, redevable_id: int
) -> Redevable:
    redevable = await session.get(Redevable, redevable_id)
    if redevable is None or redevable.account_id not in await allowed_account_ids(session, user):
        raise _not_found()
    return redevable


async def bank_account_or_404(
    session: AsyncSession, user: PortalAccount, account_id: int
) -> tuple[BankAccount, Redevable]:
    row = (
        await session.execute(
            select(BankAccount, Redevable)
            .join(Redevable, Redevable.id == BankAccount.redevable_id)
            .where(BankAccount.id == account_id)
        )
    ).first()
    if row is None or row[1].account_id not in await allowed_account_ids(session, user):
        raise _not_found()
    return row[0], row[1]


async def statement_or_404(
    session: AsyncSession, user: PortalAccount, statement_id: int
) -> tuple[Statement, Redevable]:
    row = (
        await session.execute(
            select(Statement, Redevable)
            .join(Redevable, Redevable.id == Statement.redevable_id)
            .where(Statement.id == statement_id)
        )
    ).first()
    if row is None or row[1].account_id not in await allowed_account_ids(session, user):
        raise _not_found()
    return row[0], row[1]

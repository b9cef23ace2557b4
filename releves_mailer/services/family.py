"""A primary account's secondaries (create, deactivate, set a password) and password changes.

A primary account opens up to ``max_secondaries`` active secondary accounts (the admin's
``portal.max_secondary_accounts``, the manual's "Vous avez souscrit à N compte(s)
secondaire(s)"). Every account changes its own password, the old one asked; a new password
takes effect at once for the portal and the mail protocols (each login checks the stored
hash), and the account's other portal sessions end, so a stolen session does not outlive it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from releves_mailer.clock import Clock
from releves_mailer.db import Database
from releves_mailer.db.models import PortalAccount, PortalSession
from releves_mailer.errors import UserError
from releves_mailer.portfolio import accounts as account_rules
from releves_mailer.portfolio.passwords import check_password_strength, verify_password
from releves_mailer.services.portfolio import AccountView, account_view

__all__ = ["DEFAULT_MAX_SECONDARIES", "Family", "FamilyView", "SecondaryInput"]

#: Active secondary accounts a primary account may open when the config says nothing.
DEFAULT_MAX_SECONDARIES = 10


@dataclasses.dataclass(frozen=True, slots=True)
class SecondaryInput:
    """The fields a primary account types to open a secondary account."""

    login: str
    company_name: str
    siret: str
    email: str
    contact_name: str = ""
    phone: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class FamilyView:
    """A primary account's secondaries and how many more it may open."""

    secondaries: Sequence[AccountView]
    allowed: int
    active: int

    @property
    def remaining(self) -> int:
        return max(0, self.allowed - self.active)


async def _end_sessions(session: AsyncSession, account_id: int, keep: str | None = None) -> None:
    query = delete(PortalSession).where(PortalSession.account_id == account_id)
    if keep is not None:
        query = query.where(PortalSession.id != keep)
    await session.execute(query)


class Family:
    """Secondary accounts managed by their primary, and every account's own password."""

    def __init__(
        self, database: Database, clock: Clock, max_secondaries: int = DEFAULT_MAX_SECONDARIES
    ) -> None:
        self.database = database
        self.clock = clock
        self.max_secondaries = max_secondaries

    async def view(self, primary: AccountView) -> FamilyView:
        _require_primary(primary)
        async with self.database.session() as session:
            rows = [
                account_view(account)
                for account in await session.scalars(
                    select(PortalAccount)
                    .where(PortalAccount.parent_id == primary.id)
                    .order_by(PortalAccount.login)
                )
            ]
        return FamilyView(rows, self.max_secondaries, sum(1 for row in rows if row.active))

    async def create(
        self, primary: AccountView, data: SecondaryInput, password: str
    ) -> AccountView:
        """Open a secondary account (not yet subscribed: it accepts the CGAU at first login)."""
        _require_primary(primary)
        async with self.database.session() as session:
            await self._check_room(session, primary.id)
            created = await account_rules.create_account(
                session,
                self.clock,
                account_rules.AccountInput(
                    login=data.login,
                    company_name=data.company_name,
                    siret=data.siret,
                    email=data.email,
                    contact_name=data.contact_name,
                    phone=data.phone,
                    parent_login=primary.login,
                ),
                password,
            )
            return account_view(created)

    async def set_active(
        self, primary: AccountView, secondary_id: int, active: bool
    ) -> AccountView:
        """Deactivate (its sessions end, no more logins) or reactivate a secondary account."""
        async with self.database.session() as session:
            secondary = await _secondary(session, primary, secondary_id)
            if active and not secondary.active:
                await self._check_room(session, primary.id)
            if not active:
                await _end_sessions(session, secondary.id)
            secondary.active = active
            secondary.updated_at = self.clock.now()
            return account_view(secondary)

    async def set_password(self, primary: AccountView, secondary_id: int, password: str) -> None:
        """A primary account sets a secondary's password; the secondary's sessions end."""
        async with self.database.session() as session:
            secondary = await _secondary(session, primary, secondary_id)
            await account_rules.set_password(session, self.clock, secondary, password)
            await _end_sessions(session, secondary.id)

    async def change_own_password(
        self, user: AccountView, old: str, new: str, *, current_session: str | None
    ) -> None:
        """Change one's own password; the other portal sessions of the account end."""
        check_password_strength(new)
        async with self.database.session() as session:
            account = await session.get(PortalAccount, user.id)
            if account is None or not account.active:
                raise UserError("compte introuvable")
            if not await verify_password(account.password_hash, old):
                raise UserError("l'ancien mot de passe est incorrect", field="old_password")
            if new == old:
                raise UserError(
                    "le nouveau mot de passe doit être différent de l'ancien", field="password"
                )
            await account_rules.set_password(session, self.clock, account, new)
            await _end_sessions(session, account.id, keep=current_session)

    async def _check_room(self, session: AsyncSession, primary_id: int) -> None:
        active = await session.scalar(
            select(func.count(PortalAccount.id)).where(
                PortalAccount.parent_id == primary_id, PortalAccount.active.is_(True)
            )
        )
        if int(active or 0) >= self.max_secondaries:
            raise UserError(
                f"vous avez déjà {self.max_secondaries} compte(s) secondaire(s) ouvert(s), "
                "le nombre autorisé par votre abonnement : désactivez-en un ou demandez à "
                "l'administrateur d'en autoriser davantage",
                field="login",
            )


def _require_primary(user: AccountView) -> None:
    if not user.is_primary:
        raise UserError("seul un compte principal gère des comptes secondaires")


async def _secondary(
    session: AsyncSession, primary: AccountView, secondary_id: int
) -> PortalAccount:
    """A secondary of ``primary`` (refused, as unknown, when it is anybody else's)."""
    _require_primary(primary)
    found = await session.get(PortalAccount, secondary_id)
    if found is None or found.parent_id != primary.id:
        raise UserError(f"compte secondaire {secondary_id} introuvable", field="id")
    return found

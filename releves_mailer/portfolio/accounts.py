"""Portal accounts: creation, edition, subscription, passwords, and the family of a primary."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from releves_mailer.clock import Clock
from releves_mailer.db.models import PortalAccount, ReceptionMode, Redevable
from releves_mailer.errors import UserError
from releves_mailer.portfolio.passwords import hash_password
from releves_mailer.portfolio.validation import (
    check_email,
    check_login,
    check_siret,
    check_text,
)

__all__ = [
    "AccountChanges",
    "AccountInput",
    "count_redevables",
    "create_account",
    "edit_account",
    "family_ids",
    "get_account",
    "list_accounts",
    "set_password",
    "subscribe",
]


@dataclasses.dataclass(frozen=True)
class AccountInput:
    """The fields of a new portal account, as typed by an admin."""

    login: str
    company_name: str
    siret: str
    email: str
    contact_name: str = ""
    phone: str = ""
    parent_login: str | None = None
    reception_mode: ReceptionMode = ReceptionMode.DEFAULT


@dataclasses.dataclass(frozen=True)
class AccountChanges:
    """Fields to change on an account; ``None`` keeps the current value."""

    company_name: str | None = None
    siret: str | None = None
    email: str | None = None
    contact_name: str | None = None
    phone: str | None = None
    reception_mode: ReceptionMode | None = None


def _check_phone(value: str) -> str:
    phone = " ".join(value.split())
    if len(phone) > 30 or any(c not in "0123456789 +.()-" for c in phone):
        raise UserError(f"numéro de téléphone invalide « {value} »", field="phone")
    return phone


async def get_account(session: AsyncSession, login: str) -> PortalAccount:
    account = await session.scalar(
        select(PortalAccount).where(PortalAccount.login == login.strip().lower())
    )
    if account is None:
        raise UserError(f"compte « {login} » introuvable", field="login")
    return account


async def list_accounts(session: AsyncSession) -> Sequence[PortalAccount]:
    return (await session.scalars(select(PortalAccount).order_by(PortalAccount.login))).all()


async def family_ids(session: AsyncSession, account: PortalAccount) -> list[int]:
    """The account and, for a primary account, its secondaries."""
    if not account.is_primary:
        return [account.id]
    children = await session.scalars(
        select(PortalAccount.id).where(PortalAccount.parent_id == account.id)
    )
    return [account.id, *children]


async def create_account(
    session: AsyncSession, clock: Clock, data: AccountInput, password: str
) -> PortalAccount:
    login = check_login(data.login)
    if await session.scalar(select(PortalAccount.id).where(PortalAccount.login == login)):
        raise UserError(f"le compte « {login} » existe déjà", field="login")
    parent_id = None
    if data.parent_login:
        parent = await get_account(session, data.parent_login)
        if not parent.is_primary:
            raise UserError(
                f"« {parent.login} » est un compte secondaire : un compte secondaire "
                "ne peut pas avoir de comptes secondaires",
                field="parent",
            )
        parent_id = parent.id
    now = clock.now()
    account = PortalAccount(
        login=login,
        company_name=check_text(
            data.company_name, field="name", label="raison sociale", max_length=70, required=True
        ),
        siret=check_siret(data.siret),
        email=check_email(data.email, required=True),
        contact_name=check_text(
            data.contact_name, field="contact", label="responsable", max_length=100, required=False
        ),
        phone=_check_phone(data.phone),
        parent_id=parent_id,
        subscribed=False,
        reception_mode=data.reception_mode,
        password_hash=await hash_password(password),
        created_at=now,
        updated_at=now,
    )
    session.add(account)
    await session.flush()
    return account


async def edit_account(
    session: AsyncSession, clock: Clock, account: PortalAccount, changes: AccountChanges
) -> PortalAccount:
    if changes.company_name is not None:
        account.company_name = check_text(
            changes.company_name, field="name", label="raison sociale", max_length=70, required=True
        )
    if changes.siret is not None:
        account.siret = check_siret(changes.siret)
    if changes.email is not None:
        account.email = check_email(changes.email, required=True)
    if changes.contact_name is not None:
        account.contact_name = check_text(
            changes.contact_name,
            field="contact",
            label="responsable",
            max_length=100,
            required=False,
        )
    if changes.phone is not None:
        account.phone = _check_phone(changes.phone)
    if changes.reception_mode is not None:
        account.reception_mode = changes.reception_mode
    account.updated_at = clock.now()
    await session.flush()
    return account


async def subscribe(
    session: AsyncSession,
    clock: Clock,
    account: PortalAccount,
    *,
    accept_terms: bool,
    reception_mode: ReceptionMode,
) -> PortalAccount:
    """Subscribe to the service: the terms (CGAU) must be accepted; the date is kept."""
    if not accept_terms:
        raise UserError(
            "vous devez accepter les Conditions Générales d'Adhésion et d'Utilisation",
            field="cgau",
        )
    now = clock.now()
    if account.terms_accepted_at is None:
        account.terms_accepted_at = now
    account.subscribed = True
    account.reception_mode = reception_mode
    account.updated_at = now
    await session.flush()
    return account


async def set_password(
    session: AsyncSession, clock: Clock, account: PortalAccount, password: str
) -> None:
    account.password_hash = await hash_password(password)
    account.updated_at = clock.now()
    await session.flush()


async def count_redevables(session: AsyncSession, account: PortalAccount) -> int:
    count = await session.scalar(
        select(func.count()).select_from(Redevable).where(Redevable.account_id == account.id)
    )
    return int(count or 0)

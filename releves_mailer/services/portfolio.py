"""Portfolio reads and writes for the portal and the command line: accounts, redevables, scope.

Every method opens its own database session and returns plain frozen dataclasses, so that
the protocol adapters (``web/``, ``cli/``) never hold an ORM object or a session.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from releves_mailer.clock import Clock
from releves_mailer.collect.lifecycle import deactivate_with_accounts, reactivate_with_accounts
from releves_mailer.db import Database
from releves_mailer.db.models import (
    BankAccount,
    Periodicity,
    PortalAccount,
    ReceptionMode,
    Redevable,
)
from releves_mailer.errors import UserError
from releves_mailer.partner.links import IssuedLink, LinkService
from releves_mailer.portfolio import accounts as account_rules
from releves_mailer.portfolio import redevables as redevable_rules
from releves_mailer.portfolio.auth import verified_account
from releves_mailer.portfolio.importer import DEFAULT_MAX_LINES, ImportIssue, import_redevables
from releves_mailer.portfolio.periodicity import Schedule
from releves_mailer.portfolio.redevables import RedevableInput, RedevableSearch, Written
from releves_mailer.services.links import IssuedView, issued_view

__all__ = [
    "AccountDetail",
    "AccountView",
    "ImportResult",
    "Periodicity",
    "Portfolio",
    "ReceptionMode",
    "RedevablePage",
    "RedevableView",
    "account_view",
    "family_of",
]


@dataclasses.dataclass(frozen=True, slots=True)
class AccountView:
    """A portal account as the adapters see it (the logged-in user, a listed account)."""

    id: int
    login: str
    company_name: str
    siret: str
    contact_name: str
    email: str
    phone: str
    is_primary: bool
    parent_id: int | None
    subscribed: bool
    terms_accepted_at: dt.datetime | None
    reception_mode: ReceptionMode
    created_at: dt.datetime
    active: bool = True


def account_view(account: PortalAccount) -> AccountView:
    return AccountView(
        id=account.id,
        login=account.login,
        company_name=account.company_name,
        siret=account.siret,
        contact_name=account.contact_name,
        email=account.email,
        phone=account.phone,
        is_primary=account.is_primary,
        parent_id=account.parent_id,
        subscribed=account.subscribed,
        terms_accepted_at=account.terms_accepted_at,
        reception_mode=account.reception_mode,
        created_at=account.created_at,
        active=account.active,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class AccountDetail:
    """An account with its primary account's login and, when counted, its redevables."""

    account: AccountView
    parent_login: str | None
    redevables: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class RedevableView:
    """A redevable as the adapters see it, with its account's login and its schedule."""

    id: int
    account_id: int
    account_login: str
    siren: str
    nic: str
    siret: str
    company_name: str
    company_name_2: str
    full_company_name: str
    email: str
    periodicity: Periodicity
    month: int | None
    day: int | None
    #: The schedule in words ("Mensuelle, le 5").
    schedule: str
    remote_entry: bool
    no_auto_link: bool
    include_pending: bool
    skip_empty_mail: bool
    active: bool
    deactivated_at: dt.datetime | None
    created_at: dt.datetime


def redevable_view(redevable: Redevable, login: str) -> RedevableView:
    return RedevableView(
        id=redevable.id,
        account_id=redevable.account_id,
        account_login=login,
        siren=redevable.siren,
        nic=redevable.nic,
        siret=redevable.siret,
        company_name=redevable.company_name,
        company_name_2=redevable.company_name_2,
        full_company_name=redevable.full_company_name,
        email=redevable.email,
        periodicity=redevable.periodicity,
        month=redevable.month,
        day=redevable.day,
        schedule=Schedule.for_redevable(redevable).describe(),
        remote_entry=redevable.remote_entry,
        no_auto_link=redevable.no_auto_link,
        include_pending=redevable.include_pending,
        skip_empty_mail=redevable.skip_empty_mail,
        active=redevable.active,
        deactivated_at=redevable.deactivated_at,
        created_at=redevable.created_at,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class RedevablePage:
    """One page of a redevable search, its total, and the active bank accounts per row."""

    rows: Sequence[RedevableView]
    total: int
    active_accounts: Mapping[int, int]


@dataclasses.dataclass(frozen=True, slots=True)
class ImportResult:
    """What an Annexe 1 import did (or would do, on a dry run) and the links it mailed."""

    created: int
    updated: int
    dry_run: bool
    ok: bool
    #: Why a refused file was refused, in French (after ``<file name> : ``).
    summary: str
    issues: Sequence[ImportIssue]
    issue_count: int
    stopped_at: int | None
    links_sent: int


async def family_of(session: AsyncSession, user: AccountView) -> list[int]:
    """Every portal account whose data ``user`` may read or change (itself, its secondaries)."""
    if not user.is_primary:
        return [user.id]
    return await account_rules.family_ids(session, await _account(session, user.id))


async def _account(session: AsyncSession, account_id: int) -> PortalAccount:
    account = await session.get(PortalAccount, account_id)
    if account is None:
        raise UserError(f"compte {account_id} introuvable")
    return account


class Portfolio:
    """Portal accounts and redevables, read and changed each in one transaction."""

    def __init__(self, database: Database, clock: Clock, links: LinkService | None) -> None:
        self.database = database
        self.clock = clock
        self._links = links

    async def _mail_links(self, session: AsyncSession, written: list[Written]) -> list[IssuedLink]:
        """The remote-entry rule, in the caller's transaction (no link service: none sent)."""
        if self._links is None:
            return []
        return await self._links.send_remote_entry_links(session, written)

    # ------------------------------------------------------------------------ accounts

    async def verify_login(self, login: str, password: str) -> AccountView | None:
        """The account of ``login`` when ``password`` is its password, else None."""
        account = await verified_account(self.database, login, password)
        return None if account is None else account_view(account)

    async def account(self, login: str) -> AccountView:
        async with self.database.session() as session:
            return account_view(await account_rules.get_account(session, login))

    async def account_ids(self, login: str, *, secondaries: bool = False) -> list[int]:
        """The id of account ``login`` and, with ``secondaries``, of its secondaries
        (the ``--account LOGIN [--secondaries]`` options of the list commands)."""
        async with self.database.session() as session:
            account = await account_rules.get_account(session, login)
            if secondaries:
                return await account_rules.family_ids(session, account)
            return [account.id]

    async def accounts(self) -> list[AccountView]:
        """Every portal account, by login."""
        async with self.database.session() as session:
            return [account_view(a) for a in await account_rules.list_accounts(session)]

    async def account_detail(self, login: str) -> AccountDetail:
        async with self.database.session() as session:
            account = await account_rules.get_account(session, login)
            return AccountDetail(
                account_view(account),
                await _parent_login(session, account),
                await account_rules.count_redevables(session, account),
            )

    async def create_account(
        self, data: account_rules.AccountInput, password: str, *, accept_terms: bool
    ) -> AccountDetail:
        """Create an account (and its box); subscribed at once when the terms are accepted."""
        async with self.database.session() as session:
            account = await account_rules.create_account(session, self.clock, data, password)
            if accept_terms:
                await account_rules.subscribe(
                    session,
                    self.clock,
                    account,
                    accept_terms=True,
                    reception_mode=data.reception_mode,
                )
            return AccountDetail(account_view(account), await _parent_login(session, account))

    async def set_password(self, login: str, password: str) -> AccountView:
        async with self.database.session() as session:
            account = await account_rules.get_account(session, login)
            await account_rules.set_password(session, self.clock, account, password)
            return account_view(account)

    async def edit_account(
        self, login: str, changes: account_rules.AccountChanges, *, accept_terms: bool
    ) -> AccountView:
        async with self.database.session() as session:
            account = await account_rules.get_account(session, login)
            await account_rules.edit_account(session, self.clock, account, changes)
            if accept_terms:
                await account_rules.subscribe(
                    session,
                    self.clock,
                    account,
                    accept_terms=True,
                    reception_mode=changes.reception_mode or account.reception_mode,
                )
            return account_view(account)

    async def subscribe(
        self, account_id: int, *, accept_terms: bool, reception_mode: ReceptionMode
    ) -> None:
        """Subscribe to the service (the terms must be accepted; the date is kept)."""
        async with self.database.session() as session:
            await account_rules.subscribe(
                session,
                self.clock,
                await _account(session, account_id),
                accept_terms=accept_terms,
                reception_mode=reception_mode,
            )

    # ---------------------------------------------------------------------- redevables

    async def search(
        self, viewer: AccountView, criteria: RedevableSearch, *, count_accounts: bool = False
    ) -> RedevablePage:
        """The "Paramétrage" search; with ``count_accounts``, the active bank accounts too."""
        async with self.database.session() as session:
            found = await redevable_rules.search_redevables(
                session, await _account(session, viewer.id), criteria, self.clock.now()
            )
            rows = [redevable_view(r, r.account.login) for r in found.rows]
            ids = [row.id for row in rows]
            counts: dict[int, int] = {}
            if count_accounts and ids:
                counts = {
                    redevable_id: int(count)
                    for redevable_id, count in await session.execute(
                        select(BankAccount.redevable_id, func.count())
                        .where(BankAccount.redevable_id.in_(ids), BankAccount.active.is_(True))
                        .group_by(BankAccount.redevable_id)
                    )
                }
        return RedevablePage(rows, found.total, counts)

    async def redevable_in_scope(
        self, user: AccountView, redevable_id: int
    ) -> RedevableView | None:
        """The redevable when ``user`` may see it, else None (unknown or another family's)."""
        async with self.database.session() as session:
            row = (
                await session.execute(
                    select(Redevable, PortalAccount.login)
                    .join(PortalAccount, PortalAccount.id == Redevable.account_id)
                    .where(Redevable.id == redevable_id)
                )
            ).first()
            if row is None or row[0].account_id not in await family_of(session, user):
                return None
            return redevable_view(row[0], row[1])

    async def redevable_by_siret(self, viewer: AccountView, siret: str) -> RedevableView:
        """The redevable of ``viewer``'s family by SIRET, or by SIREN when unambiguous."""
        async with self.database.session() as session:
            found = await redevable_rules.get_redevable(
                session, await _account(session, viewer.id), siret
            )
            return redevable_view(found, found.account.login)

    async def find_redevable(self, siren_or_siret: str, login: str | None = None) -> RedevableView:
        """The redevable with this SIREN (or SIRET) across the installation (admin commands)."""
        async with self.database.session() as session:
            found = await redevable_rules.find_redevable(session, siren_or_siret, login)
            return redevable_view(found, found.account.login)

    async def create_redevable(
        self, owner_id: int, data: RedevableInput
    ) -> tuple[RedevableView, list[IssuedView]]:
        """Create a redevable; its remote-entry link is queued in the same transaction."""
        async with self.database.session() as session:
            owner = await _account(session, owner_id)
            redevable = await redevable_rules.create_redevable(session, self.clock, owner, data)
            sent = await self._mail_links(session, [Written(redevable)])
            return redevable_view(redevable, owner.login), [issued_view(i) for i in sent]

    async def update_redevable(
        self, redevable_id: int, data: RedevableInput
    ) -> tuple[RedevableView, list[IssuedView]]:
        """Replace a redevable's fields; a link is queued when field 9 has just become 1."""
        async with self.database.session() as session:
            redevable = await session.get(Redevable, redevable_id)
            if redevable is None:
                raise UserError(f"redevable {redevable_id} introuvable")
            was_remote = redevable.remote_entry
            await redevable_rules.update_redevable(session, self.clock, redevable, data)
            sent = await self._mail_links(session, [Written(redevable, was_remote=was_remote)])
            owner = await _account(session, redevable.account_id)
            return redevable_view(redevable, owner.login), [issued_view(i) for i in sent]

    async def set_redevable_active(self, redevable_id: int, active: bool) -> int:
        """(De)activate a redevable and its bank accounts; returns how many accounts followed."""
        switch = reactivate_with_accounts if active else deactivate_with_accounts
        return await switch(self.database, self.clock, redevable_id)

    async def import_file(
        self,
        owner_id: int,
        data: bytes,
        *,
        update: bool = False,
        dry_run: bool = False,
        no_auto_link: bool = False,
        max_lines: int = DEFAULT_MAX_LINES,
    ) -> ImportResult:
        """Import an Annexe 1 file into an account and queue the remote-entry links."""
        async with self.database.session() as session:
            report = await import_redevables(
                session,
                self.clock,
                await _account(session, owner_id),
                data,
                update=update,
                dry_run=dry_run,
                no_auto_link=no_auto_link,
                max_lines=max_lines,
            )
            sent = await self._mail_links(session, report.written)
        return ImportResult(
            created=report.created,
            updated=report.updated,
            dry_run=report.dry_run,
            ok=report.ok,
            summary=report.summary(),
            issues=tuple(report.issues),
            issue_count=report.issue_count,
            stopped_at=report.stopped_at,
            links_sent=len(sent),
        )


async def _parent_login(session: AsyncSession, account: PortalAccount) -> str | None:
    if account.parent_id is None:
        return None
    return await session.scalar(
        select(PortalAccount.login).where(PortalAccount.id == account.parent_id)
    )

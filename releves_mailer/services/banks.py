"""Bank accounts for the portal and the command line: lists, detail with history, switches.

The one history query of a bank account (its own events and its connection's) lives here,
for both the portal's detail page and ``banks show``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from releves_mailer.clock import Clock
from releves_mailer.collect.connections import set_account_active
from releves_mailer.collect.errors import describe_error
from releves_mailer.db import Database
from releves_mailer.db.models import (
    BankAccount,
    BankConnection,
    BankEvent,
    BankEventKind,
    BankTransaction,
    ConnectionState,
    PortalAccount,
    Redevable,
    SecureLink,
    TransactionStatus,
)
from releves_mailer.errors import UserError
from releves_mailer.partner.links import STATE_LABELS, LinkState, link_state
from releves_mailer.services.portfolio import AccountView, RedevableView, family_of, redevable_view

__all__ = [
    "AccountRow",
    "BankAccountEntry",
    "BankAccountSearch",
    "BankAccountView",
    "Banks",
    "BareConnectionRow",
    "ConnectionState",
    "ConnectionView",
    "EventView",
    "TransactionStatus",
    "TransactionView",
]

_CONNECTION_FILTERS = {"succes": ConnectionState.OK, "erreur": ConnectionState.ERROR}


@dataclasses.dataclass(frozen=True, slots=True)
class BankAccountView:
    id: int
    redevable_id: int
    connection_id: int
    type: str
    label: str
    iban: str | None
    bic: str
    currency: str
    active: bool
    created_at: dt.datetime
    activated_at: dt.datetime
    deactivated_at: dt.datetime | None
    last_collected_at: dt.datetime | None
    last_reported_date: dt.date | None
    balance: int | None
    balance_at: dt.datetime | None


if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_View = TypeVar("_View", bound="DataclassInstance")


def _copy_fields(view: type[_View], row: object) -> _View:
    """A view holding the row's attributes of the same names (the view lists what is shown)."""
    return view(**{field.name: getattr(row, field.name) for field in dataclasses.fields(view)})


def _account_view(account: BankAccount) -> BankAccountView:
    return _copy_fields(BankAccountView, account)


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectionView:
    id: int
    provider: str
    bank_name: str
    state: ConnectionState
    error_code: str | None
    consecutive_failures: int
    last_check_at: dt.datetime | None


def _connection_view(connection: BankConnection) -> ConnectionView:
    return _copy_fields(ConnectionView, connection)


@dataclasses.dataclass(frozen=True, slots=True)
class EventView:
    """One change or check in a bank account's history."""

    at: dt.datetime
    kind: BankEventKind
    message: str
    old_value: str | None
    new_value: str | None
    error_code: str | None

    @property
    def ok(self) -> bool:
        """False for an error or a refused IBAN (shown with a warning sign)."""
        return not self.kind.endswith("error") and self.kind not in (
            BankEventKind.IBAN_CONFLICT,
            BankEventKind.IBAN_REJECTED,
            BankEventKind.BALANCE_MISMATCH,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class BankAccountEntry:
    """A bank account with its connection, its redevable and, when asked, its history."""

    account: BankAccountView
    connection: ConnectionView
    redevable: RedevableView
    events: Sequence[EventView] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class AccountRow:
    """One line of a bank accounts table of the portal."""

    id: int
    login: str
    siren: str
    nic: str
    company: str
    bank_name: str
    label: str
    type: str
    iban: str
    active: bool
    connection_id: int
    connection_ok: bool
    connection_state: str
    connection_error: str
    last_check_at: dt.datetime | None
    collection_ok: bool
    last_collected_at: dt.datetime | None
    link_state: str
    link_label: str
    link_at: dt.datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class BareConnectionRow:
    """A live connection without any bank account yet (e.g. it failed its very first check)."""

    id: int
    redevable_id: int
    login: str
    siren: str
    nic: str
    company: str
    bank_name: str
    connection_ok: bool
    connection_state: str
    connection_error: str
    last_check_at: dt.datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class BankAccountSearch:
    """The filters of the "Gestion des comptes bancaires" screen."""

    siret: str = ""
    name: str = ""
    iban: str = ""
    #: ``"succes"`` or ``"erreur"``: the state of the account's connection.
    connection: str = ""
    #: ``"valide"``, ``"expire"`` or ``"utilise"``: the state of the connection's last link.
    link: str = ""
    include_inactive: bool = False
    include_secondaries: bool = False
    limit: int = 50
    offset: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class TransactionView:
    """One collected transaction, with its state and its statement."""

    id: int
    provider_id: str
    booking_date: dt.date
    value_date: dt.date | None
    real_date: dt.date | None
    amount: int
    currency: str
    raw_label: str
    type: str
    status: TransactionStatus
    changed: bool
    deleted_at: dt.datetime | None
    replaced_by_id: int | None
    reported_statement_id: int | None
    correction_pending: bool


def _latest_link_id() -> Any:
    return (
        select(SecureLink.id)
        .where(SecureLink.connection_id == BankAccount.connection_id)
        .order_by(SecureLink.created_at.desc(), SecureLink.id.desc())
        .limit(1)
        .correlate(BankAccount)
        .scalar_subquery()
    )


def _rows_query() -> Select[BankAccount, BankConnection, Redevable, str, SecureLink]:
    return (
        select(BankAccount, BankConnection, Redevable, PortalAccount.login, SecureLink)
        .join(BankConnection, BankConnection.id == BankAccount.connection_id)
        .join(Redevable, Redevable.id == BankAccount.redevable_id)
        .join(PortalAccount, PortalAccount.id == Redevable.account_id)
        .outerjoin(SecureLink, SecureLink.id == _latest_link_id())
    )


def _row(
    account: BankAccount,
    connection: BankConnection,
    redevable: Redevable,
    login: str,
    link: SecureLink | None,
    now: dt.datetime,
) -> AccountRow:
    state = link_state(link, now) if link is not None else None
    link_at = None
    if link is not None:
        link_at = {
            LinkState.USED: link.used_at,
            LinkState.EXPIRED: link.expires_at,
        }.get(state or LinkState.VALID, link.created_at)
    error = describe_error(connection.error_code).message if connection.error_code else ""
    check = connection.last_check_at
    collected = account.last_collected_at
    return AccountRow(
        id=account.id,
        login=login,
        siren=redevable.siren,
        nic=redevable.nic,
        company=redevable.full_company_name,
        bank_name=connection.bank_name,
        label=account.label,
        type=account.type,
        iban=account.iban or "",
        active=account.active and redevable.active,
        connection_id=connection.id,
        connection_ok=connection.state is ConnectionState.OK,
        connection_state=connection.state.value,
        connection_error=error,
        last_check_at=check,
        collection_ok=collected is not None and (check is None or collected >= check),
        last_collected_at=collected,
        link_state=state.value if state is not None else "",
        link_label=STATE_LABELS[state] if state is not None else "",
        link_at=link_at,
    )


def _entries_query() -> Select[BankAccount, BankConnection, Redevable, str]:
    return (
        select(BankAccount, BankConnection, Redevable, PortalAccount.login)
        .join(BankConnection, BankConnection.id == BankAccount.connection_id)
        .join(Redevable, Redevable.id == BankAccount.redevable_id)
        .join(PortalAccount, PortalAccount.id == Redevable.account_id)
    )


async def _history(
    session: AsyncSession, account: BankAccount, limit: int | None
) -> list[EventView]:
    """The account's events and those of its connection that name no account, oldest first."""
    query = (
        select(BankEvent)
        .where(
            or_(
                BankEvent.account_id == account.id,
                and_(
                    BankEvent.account_id.is_(None),
                    BankEvent.connection_id == account.connection_id,
                ),
            )
        )
        .order_by(BankEvent.at, BankEvent.id)
    )
    if limit is not None:
        query = query.limit(limit)
    return [
        EventView(
            at=event.at,
            kind=event.kind,
            message=event.message,
            old_value=event.old_value,
            new_value=event.new_value,
            error_code=event.error_code,
        )
        for event in await session.scalars(query)
    ]


class Banks:
    """Bank accounts and their connections, as the portal and the command line read them."""

    def __init__(self, database: Database, clock: Clock) -> None:
        self.database = database
        self.clock = clock

    async def rows_of_redevable(self, redevable_id: int) -> list[AccountRow]:
        """Every bank account of one redevable (the "Comptes bancaires" tab)."""
        now = self.clock.now()
        async with self.database.session() as session:
            rows = await session.execute(
                _rows_query()
                .where(BankAccount.redevable_id == redevable_id)
                .order_by(BankAccount.active.desc(), BankAccount.id)
            )
            return [_row(a, c, r, login, link, now) for a, c, r, login, link in rows]

    async def row(self, account_id: int) -> AccountRow | None:
        now = self.clock.now()
        async with self.database.session() as session:
            found = (
                await session.execute(_rows_query().where(BankAccount.id == account_id))
            ).first()
            return None if found is None else _row(*found, now)

    async def search(
        self, viewer: AccountView, criteria: BankAccountSearch
    ) -> tuple[list[AccountRow], int]:
        """One page of the portal's bank accounts list and the number of matches."""
        now = self.clock.now()
        async with self.database.session() as session:
            if criteria.include_secondaries and viewer.is_primary:
                ids = await family_of(session, viewer)
            else:
                ids = [viewer.id]
            query = _rows_query().where(Redevable.account_id.in_(ids))
            siret = criteria.siret.replace(" ", "")
            if siret:
                query = query.where(
                    (Redevable.siren + Redevable.nic).startswith(siret, autoescape=True)
                )
            if criteria.name:
                full = func.lower(Redevable.company_name + " " + Redevable.company_name_2)
                query = query.where(full.contains(criteria.name.lower(), autoescape=True))
            iban = criteria.iban.replace(" ", "").upper()
            if iban:
                query = query.where(BankAccount.iban.contains(iban, autoescape=True))
            if criteria.connection in _CONNECTION_FILTERS:
                query = query.where(
                    BankConnection.state == _CONNECTION_FILTERS[criteria.connection]
                )
            if criteria.link == "valide":
                query = query.where(SecureLink.used_at.is_(None), SecureLink.expires_at > now)
            elif criteria.link == "utilise":
                query = query.where(SecureLink.used_at.is_not(None))
            elif criteria.link == "expire":
                query = query.where(SecureLink.used_at.is_(None), SecureLink.expires_at <= now)
            if not criteria.include_inactive:
                query = query.where(BankAccount.active.is_(True), Redevable.active.is_(True))
            total = int(
                await session.scalar(select(func.count()).select_from(query.subquery())) or 0
            )
            rows = [
                _row(a, c, r, login, link, now)
                for a, c, r, login, link in await session.execute(
                    query.order_by(Redevable.company_name, Redevable.siren, BankAccount.id)
                    .limit(criteria.limit)
                    .offset(criteria.offset)
                )
            ]
        return rows, total

    async def bare_connections(
        self, viewer: AccountView, criteria: BankAccountSearch, *, limit: int = 200
    ) -> list[BareConnectionRow]:
        """The live connections of the list's scope that hold no bank account, so that one
        that failed its first check shows with its error (SIRET, name, state filters apply;
        an IBAN or link filter matches none of them)."""
        if criteria.iban.strip() or criteria.link:
            return []
        async with self.database.session() as session:
            if criteria.include_secondaries and viewer.is_primary:
                ids = await family_of(session, viewer)
            else:
                ids = [viewer.id]
            query = (
                select(BankConnection, Redevable, PortalAccount.login)
                .join(Redevable, Redevable.id == BankConnection.redevable_id)
                .join(PortalAccount, PortalAccount.id == Redevable.account_id)
                .where(
                    Redevable.account_id.in_(ids),
                    BankConnection.active.is_(True),
                    BankConnection.state != ConnectionState.CLOSED,
                    ~select(BankAccount.id)
                    .where(BankAccount.connection_id == BankConnection.id)
                    .exists(),
                )
            )
            siret = criteria.siret.replace(" ", "")
            if siret:
                query = query.where(
                    (Redevable.siren + Redevable.nic).startswith(siret, autoescape=True)
                )
            if criteria.name:
                full = func.lower(Redevable.company_name + " " + Redevable.company_name_2)
                query = query.where(full.contains(criteria.name.lower(), autoescape=True))
            if criteria.connection in _CONNECTION_FILTERS:
                query = query.where(
                    BankConnection.state == _CONNECTION_FILTERS[criteria.connection]
                )
            if not criteria.include_inactive:
                query = query.where(Redevable.active.is_(True))
            rows = await session.execute(
                query.order_by(Redevable.company_name, Redevable.siren, BankConnection.id).limit(
                    limit
                )
            )
            return [
                BareConnectionRow(
                    id=connection.id,
                    redevable_id=redevable.id,
                    login=login,
                    siren=redevable.siren,
                    nic=redevable.nic,
                    company=redevable.full_company_name,
                    bank_name=connection.bank_name,
                    connection_ok=connection.state is ConnectionState.OK,
                    connection_state=connection.state.value,
                    connection_error=describe_error(connection.error_code).message
                    if connection.error_code
                    else "",
                    last_check_at=connection.last_check_at,
                )
                for connection, redevable, login in rows
            ]

    async def in_scope(self, viewer: AccountView, account_id: int) -> BankAccountEntry | None:
        """A bank account ``viewer`` may see (None when unknown or another family's)."""
        async with self.database.session() as session:
            found = (
                await session.execute(_entries_query().where(BankAccount.id == account_id))
            ).first()
            if found is None:
                return None
            account, connection, redevable, login = found
            if redevable.account_id not in await family_of(session, viewer):
                return None
            return BankAccountEntry(
                _account_view(account),
                _connection_view(connection),
                redevable_view(redevable, login),
            )

    async def entries(
        self,
        *,
        siren: str | None,
        include_inactive: bool,
        account_ids: Sequence[int] | None = None,
    ) -> list[BankAccountEntry]:
        """Every collected bank account (of one SIREN, of some portal accounts), by SIREN
        (``banks list``)."""
        query = _entries_query().order_by(Redevable.siren, BankAccount.id)
        if siren is not None:
            query = query.where(Redevable.siren == siren)
        if account_ids is not None:
            query = query.where(Redevable.account_id.in_(account_ids))
        if not include_inactive:
            query = query.where(BankAccount.active.is_(True))
        async with self.database.session() as session:
            return [
                BankAccountEntry(_account_view(a), _connection_view(c), redevable_view(r, login))
                for a, c, r, login in await session.execute(query)
            ]

    async def detail(
        self, account_id: int, *, history_limit: int | None = None
    ) -> BankAccountEntry:
        """A bank account with its history (at most ``history_limit`` events, oldest first)."""
        async with self.database.session() as session:
            found = (
                await session.execute(_entries_query().where(BankAccount.id == account_id))
            ).first()
            if found is None:
                raise UserError(f"compte bancaire {account_id} introuvable")
            account, connection, redevable, login = found
            return BankAccountEntry(
                _account_view(account),
                _connection_view(connection),
                redevable_view(redevable, login),
                await _history(session, account, history_limit),
            )

    async def transactions(self, account_id: int) -> list[TransactionView]:
        """Every collected transaction of a bank account, by booking date."""
        async with self.database.session() as session:
            if await session.get(BankAccount, account_id) is None:
                raise UserError(f"compte bancaire {account_id} introuvable")
            rows = await session.scalars(
                select(BankTransaction)
                .where(BankTransaction.account_id == account_id)
                .order_by(BankTransaction.booking_date, BankTransaction.id)
            )
            return [
                TransactionView(
                    id=row.id,
                    provider_id=row.provider_id,
                    booking_date=row.booking_date,
                    value_date=row.value_date,
                    real_date=row.real_date,
                    amount=row.amount,
                    currency=row.currency,
                    raw_label=row.raw_label,
                    type=row.type,
                    status=row.status,
                    changed=row.changed_at is not None,
                    deleted_at=row.deleted_at,
                    replaced_by_id=row.replaced_by_id,
                    reported_statement_id=row.reported_statement_id,
                    correction_pending=row.correction_pending,
                )
                for row in rows
            ]

    async def count(self) -> int:
        """How many bank accounts exist (active or not)."""
        async with self.database.session() as session:
            return int(await session.scalar(select(func.count(BankAccount.id))) or 0)

    async def set_active(self, account_id: int, active: bool) -> BankAccountView:
        """Deactivate or reactivate one bank account (idempotent)."""
        account = await set_account_active(self.database, account_id, active, clock=self.clock)
        return _account_view(account)

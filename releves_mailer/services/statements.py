"""Statements for the portal and the command line: searches, detail, files to download.

The portal's search keeps its SQLite planner hint here, next to the query it tunes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection, Sequence

from sqlalchemy import ColumnElement, Select, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from releves_mailer.clock import PARIS
from releves_mailer.db import Database
from releves_mailer.db.models import (
    BankAccount,
    LineKind,
    PortalAccount,
    Redevable,
    Statement,
    StatementLine,
    StatementState,
)
from releves_mailer.services.portfolio import AccountView, family_of
from releves_mailer.statements.audit import Problem, audit
from releves_mailer.statements.exports import ExportFile, read_files
from releves_mailer.vocabulary import french

__all__ = [
    "ExportFile",
    "LineView",
    "Problem",
    "StatementDetail",
    "StatementFilter",
    "StatementRow",
    "StatementSearch",
    "StatementState",
    "StatementView",
    "Statements",
    "undelivered",
]

_NEWEST_FIRST = (Statement.created_at.desc(), Statement.id.desc())


@dataclasses.dataclass(frozen=True, slots=True)
class StatementView:
    """A statement with its redevable's identity (``banks``-style listings and the detail)."""

    id: int
    account_id: int
    siren: str
    nic: str
    company: str
    iban: str | None
    sequence: int
    due_date: dt.date
    period_start: dt.date
    period_end: dt.date
    created_at: dt.datetime
    state: StatementState
    reason: str
    movement_count: int
    deleted_count: int
    currency: str
    opening_balance: int | None
    closing_balance: int | None
    bank_balance: int | None
    balance_mismatch: bool
    delivered_at: dt.datetime | None
    delivery_box: str | None


def _view(statement: Statement, redevable: Redevable) -> StatementView:
    return StatementView(
        id=statement.id,
        account_id=statement.account_id,
        siren=redevable.siren,
        nic=redevable.nic,
        company=redevable.full_company_name,
        iban=statement.iban,
        sequence=statement.sequence,
        due_date=statement.due_date,
        period_start=statement.period_start,
        period_end=statement.period_end,
        created_at=statement.created_at,
        state=statement.state,
        reason=statement.reason,
        movement_count=statement.movement_count,
        deleted_count=statement.deleted_count,
        currency=statement.currency,
        opening_balance=statement.opening_balance,
        closing_balance=statement.closing_balance,
        bank_balance=statement.bank_balance,
        balance_mismatch=statement.balance_mismatch,
        delivered_at=statement.delivered_at,
        delivery_box=statement.delivery_box,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class StatementRow:
    """One line of the portal's tracking table."""

    id: int
    login: str
    siren: str
    nic: str
    company: str
    iban: str
    period_start: dt.date
    period_end: dt.date
    received_at: dt.datetime
    state: str
    state_label: str
    reason: str
    movements: int
    deleted: int
    has_cfonb: bool
    has_csv: bool


def _row(statement: Statement, redevable: Redevable, login: str) -> StatementRow:
    return StatementRow(
        id=statement.id,
        login=login,
        siren=redevable.siren,
        nic=redevable.nic,
        company=redevable.full_company_name,
        iban=statement.iban or "",
        period_start=statement.period_start,
        period_end=statement.period_end,
        received_at=statement.created_at,
        state=statement.state.value,
        state_label=french(statement.state).capitalize(),
        reason=statement.reason,
        movements=statement.movement_count,
        deleted=statement.deleted_count,
        has_cfonb=statement.state is StatementState.PRODUCED and statement.cfonb_size is not None,
        has_csv=statement.state is StatementState.PRODUCED and statement.csv_size is not None,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class LineView:
    """One movement or correction of a statement."""

    kind: LineKind
    booking_date: dt.date
    value_date: dt.date | None
    label: str
    amount: int
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class StatementDetail:
    """A statement, its table row, its movements and its corrections."""

    statement: StatementView
    row: StatementRow
    movements: Sequence[LineView]
    corrections: Sequence[LineView]


@dataclasses.dataclass(frozen=True, slots=True)
class StatementSearch:
    """The filters of the portal's "Suivi et téléchargement" screen (dates in Paris time)."""

    start: dt.date
    end: dt.date | None = None
    siret: str = ""
    name: str = ""
    iban: str = ""
    state: StatementState | None = None
    include_secondaries: bool = False
    #: Only the statements produced and still waiting for their delivery into a box.
    undelivered: bool = False


def undelivered() -> ColumnElement[bool]:
    """A statement produced and still waiting for its delivery into a box.

    ``delivery_box IS NULL`` as written in ``ix_statement_undelivered``'s WHERE, so that the
    planner may read that small partial index; the state is compared through ``|| ''`` so
    that SQLite does not prefer the state index (nearly every statement is produced).
    """
    state = Statement.state.op("||")(literal_column("''"))
    return Statement.delivery_box.is_(None) & (state == StatementState.PRODUCED.value)


@dataclasses.dataclass(frozen=True, slots=True)
class StatementFilter:
    """The filters of ``statements list`` (the whole installation)."""

    siret: str | None = None
    iban: str | None = None
    first: dt.date | None = None
    last: dt.date | None = None
    state: StatementState | None = None
    #: Only the redevables of these portal accounts (``--account``); None: all.
    account_ids: Sequence[int] | None = None


def _conditions(criteria: StatementSearch, account_ids: list[int]) -> list[ColumnElement[bool]]:
    """The conditions on ``statement`` alone (served by its indexes; no join to count)."""
    redevables = select(Redevable.id).where(Redevable.account_id.in_(account_ids))
    siret = criteria.siret.replace(" ", "")
    if siret:
        redevables = redevables.where(
            (Redevable.siren + Redevable.nic).startswith(siret, autoescape=True)
        )
    if criteria.name:
        full = func.lower(Redevable.company_name + " " + Redevable.company_name_2)
        redevables = redevables.where(full.contains(criteria.name.lower(), autoescape=True))
    start = dt.datetime.combine(criteria.start, dt.time(), tzinfo=PARIS)
    # Without a SIRET or name, most redevables match: "+ 0" keeps SQLite off the
    # per-redevable index so that it scans the covering index by date instead (PostgreSQL
    # plans on its own either way).
    narrow = bool(siret or criteria.name)
    scope = Statement.redevable_id if narrow else Statement.redevable_id + 0
    conditions: list[ColumnElement[bool]] = [
        scope.in_(redevables),
        Statement.created_at >= start,
    ]
    if criteria.end is not None:
        end = criteria.end + dt.timedelta(days=1)
        conditions.append(Statement.created_at < dt.datetime.combine(end, dt.time(), PARIS))
    iban = criteria.iban.replace(" ", "").upper()
    if iban:
        # The account's IBAN (searched among the accounts, not along every statement).
        conditions.append(
            Statement.account_id.in_(
                select(BankAccount.id).where(BankAccount.iban.contains(iban, autoescape=True))
            )
        )
    if criteria.state is not None:
        conditions.append(Statement.state == criteria.state)
    if criteria.undelivered:
        conditions.append(undelivered())
    return conditions


def _with_owner() -> Select[Statement, Redevable, str]:
    return (
        select(Statement, Redevable, PortalAccount.login)
        .join(Redevable, Redevable.id == Statement.redevable_id)
        .join(PortalAccount, PortalAccount.id == Redevable.account_id)
    )


async def _listed(session: AsyncSession, viewer: AccountView, secondaries: bool) -> list[int]:
    """The accounts a list shows: the user's own, plus its secondaries' when asked (primary)."""
    if secondaries and viewer.is_primary:
        return await family_of(session, viewer)
    return [viewer.id]


class Statements:
    """Statements as the portal and the command line read them."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def search(
        self, viewer: AccountView, criteria: StatementSearch, *, limit: int, offset: int
    ) -> tuple[list[StatementRow], int]:
        """One page of the portal's search, newest first, and the number of matches."""
        async with self.database.session() as session:
            ids = await _listed(session, viewer, criteria.include_secondaries)
            conditions = _conditions(criteria, ids)
            total = int(
                await session.scalar(select(func.count(Statement.id)).where(*conditions)) or 0
            )
            # Ids first (an index-only scan, even deep in the list), then their rows.
            page_ids = list(
                await session.scalars(
                    select(Statement.id)
                    .where(*conditions)
                    .order_by(*_NEWEST_FIRST)
                    .limit(limit)
                    .offset(offset)
                )
            )
            if not page_ids:
                return [], total
            found = {
                statement.id: _row(statement, redevable, login)
                for statement, redevable, login in await session.execute(
                    _with_owner().where(Statement.id.in_(page_ids))
                )
            }
        return [found[statement_id] for statement_id in page_ids], total

    async def in_scope(
        self, viewer: AccountView, statement_id: int, *, line_limit: int = 2000
    ) -> StatementDetail | None:
        """A statement ``viewer`` may see, with its lines (None when not his or unknown)."""
        async with self.database.session() as session:
            found = await _owned(session, viewer, statement_id)
            if found is None:
                return None
            statement, redevable = found
            lines = [
                LineView(
                    line.kind,
                    line.booking_date,
                    line.value_date,
                    line.label,
                    line.amount,
                    line.reason,
                )
                for line in await session.scalars(
                    select(StatementLine)
                    .where(StatementLine.statement_id == statement.id)
                    .order_by(StatementLine.kind, StatementLine.position)
                    .limit(line_limit)
                )
            ]
        return StatementDetail(
            _view(statement, redevable),
            _row(statement, redevable, ""),
            [line for line in lines if line.kind is LineKind.MOVEMENT],
            [line for line in lines if line.kind is LineKind.CORRECTION],
        )

    async def download(
        self, viewer: AccountView, statement_id: int, kind: str
    ) -> list[ExportFile] | None:
        """The stored file ``kind`` of a statement ``viewer`` may see (None when he may not).

        Empty when the statement is not produced or has no such file.
        """
        async with self.database.session() as session:
            found = await _owned(session, viewer, statement_id)
            if found is None:
                return None
            if found[0].state is not StatementState.PRODUCED:
                return []
            return await read_files(session, [found[0]], (kind,))

    async def files_of_search(
        self, viewer: AccountView, criteria: StatementSearch, *, limit: int
    ) -> list[ExportFile]:
        """The files of the newest ``limit`` produced statements a search finds."""
        async with self.database.session() as session:
            ids = await _listed(session, viewer, criteria.include_secondaries)
            found = await session.scalars(
                select(Statement)
                .where(*_conditions(criteria, ids))
                .order_by(*_NEWEST_FIRST)
                .limit(limit)
            )
            ready = [s for s in found if s.state is StatementState.PRODUCED]
            return await read_files(session, ready)

    async def files_of_selection(
        self, viewer: AccountView, wanted: Collection[int]
    ) -> list[ExportFile] | None:
        """The files of the statements ``wanted``; None when one of them is not ``viewer``'s."""
        async with self.database.session() as session:
            found = list(
                await session.scalars(
                    select(Statement)
                    .join(Redevable, Redevable.id == Statement.redevable_id)
                    .where(Statement.id.in_(wanted))
                    .where(Redevable.account_id.in_(await family_of(session, viewer)))
                    .order_by(*_NEWEST_FIRST)
                )
            )
            if len(found) != len(wanted):
                return None
            ready = [s for s in found if s.state is StatementState.PRODUCED]
            return await read_files(session, ready)

    async def rows_of_account(self, account_id: int, *, limit: int = 10) -> list[StatementRow]:
        """The last statements of a bank account, by due date, newest first."""
        async with self.database.session() as session:
            return [
                _row(statement, redevable, "")
                for statement, redevable, _ in await session.execute(
                    _with_owner()
                    .where(Statement.account_id == account_id)
                    .order_by(Statement.due_date.desc())
                    .limit(limit)
                )
            ]

    async def listing(self, criteria: StatementFilter) -> list[StatementView]:
        """Every statement matching ``statements list``'s filters, newest first."""
        query = (
            select(Statement, Redevable)
            .join(Redevable, Redevable.id == Statement.redevable_id)
            .order_by(*_NEWEST_FIRST)
        )
        if criteria.siret:
            key = criteria.siret.replace(" ", "")
            query = query.where(Redevable.siren == key[:9])
            if len(key) == 14:
                query = query.where(Redevable.nic == key[9:])
        if criteria.iban:
            query = query.where(Statement.iban == criteria.iban.replace(" ", "").upper())
        if criteria.first is not None:
            start = dt.datetime.combine(criteria.first, dt.time(), tzinfo=PARIS)
            query = query.where(Statement.created_at >= start)
        if criteria.last is not None:
            end = criteria.last + dt.timedelta(days=1)
            query = query.where(
                Statement.created_at < dt.datetime.combine(end, dt.time(), tzinfo=PARIS)
            )
        if criteria.state is not None:
            query = query.where(Statement.state == criteria.state)
        if criteria.account_ids is not None:
            query = query.where(Redevable.account_id.in_(criteria.account_ids))
        async with self.database.session() as session:
            return [
                _view(statement, redevable) for statement, redevable in await session.execute(query)
            ]

    async def get(self, statement_id: int) -> StatementView | None:
        async with self.database.session() as session:
            found = (
                await session.execute(
                    select(Statement, Redevable)
                    .join(Redevable, Redevable.id == Statement.redevable_id)
                    .where(Statement.id == statement_id)
                )
            ).first()
            return None if found is None else _view(found[0], found[1])

    async def files(self, statement_ids: Sequence[int]) -> list[ExportFile]:
        """The stored files of the statements, in that order (CFONB before CSV)."""
        async with self.database.session() as session:
            found = [await session.get(Statement, statement_id) for statement_id in statement_ids]
            return await read_files(session, [s for s in found if s is not None])

    async def audit(self) -> list[Problem]:
        """Every inconsistency of the stored statements (balances, periods, files)."""
        return list(await audit(self.database))


async def _owned(
    session: AsyncSession, viewer: AccountView, statement_id: int
) -> tuple[Statement, Redevable] | None:
    row = (
        await session.execute(
            select(Statement, Redevable)
            .join(Redevable, Redevable.id == Statement.redevable_id)
            .where(Statement.id == statement_id)
        )
    ).first()
    if row is None or row[1].account_id not in await family_of(session, viewer):
        return None
    return row[0], row[1]

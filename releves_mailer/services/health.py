"""Collection health of a portfolio at a glance: the figures of the portal's home page.

Every figure is counted with the same conditions as the filtered list it links to (the
redevables, bank accounts and statements searches), so that a user who clicks a figure finds
as many rows as the figure says.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from releves_mailer.clock import PARIS, Clock
from releves_mailer.collect.errors import describe_error
from releves_mailer.collect.scheduler import RefreshPlan
from releves_mailer.db import Database
from releves_mailer.db.models import (
    BankConnection,
    ConnectionState,
    Redevable,
    Statement,
)
from releves_mailer.portfolio.redevables import collection_condition, latest_link_in_state
from releves_mailer.services.portfolio import AccountView, family_of
from releves_mailer.services.statements import undelivered

__all__ = [
    "ErrorFigure",
    "Health",
    "HealthReport",
    "NightRound",
    "last_night",
    "live_connection",
]


@dataclasses.dataclass(frozen=True, slots=True)
class ErrorFigure:
    """Connections failing with one error code, with the manual's French message."""

    code: str
    message: str
    count: int


@dataclasses.dataclass(frozen=True, slots=True)
class NightRound:
    """The last nightly collection round: its window and what became of the connections."""

    #: Paris date the window opened on, and its bounds (UTC).
    night: dt.date
    start: dt.datetime
    end: dt.datetime
    #: True while the window is still open (the round is under way).
    running: bool
    #: First and last refresh seen in the window (None when none was).
    first_check: dt.datetime | None
    last_check: dt.datetime | None
    refreshed: int
    failed: int
    #: Live connections not checked in the window.
    not_checked: int


@dataclasses.dataclass(frozen=True, slots=True)
class HealthReport:
    """The home page's figures for one user (with the secondaries' data for a primary)."""

    include_secondaries: bool
    redevables: int
    #: Redevables with at least one live connection in error (the "Erreur" filter).
    redevables_in_error: int
    #: Live connections in error, all, and those that failed their very first check.
    connections_in_error: int
    first_check_failures: int
    errors: Sequence[ErrorFigure]
    #: Redevables whose latest secure link is still valid / has expired unused.
    links_pending: int
    links_expired: int
    #: Statements produced but not yet in their box.
    undelivered: int
    #: Active redevables without any live bank connection.
    without_connection: int
    night: NightRound


def live_connection() -> ColumnElement[bool]:
    """A connection that counts: active and not closed (a reconnection closes the old one)."""
    return BankConnection.active.is_(True) & (BankConnection.state != ConnectionState.CLOSED)


def last_night(now: dt.datetime, plan: RefreshPlan) -> tuple[dt.date, dt.datetime, dt.datetime]:
    """The latest collection window opened at or before ``now``: Paris date, UTC bounds."""
    night = now.astimezone(PARIS).date()
    start, end = plan.window_bounds(night)
    if start > now:
        night -= dt.timedelta(days=1)
        start, end = plan.window_bounds(night)
    return night, start, end


class Health:
    """Counts the home page's figures, each in the scope of the user's lists."""

    def __init__(self, database: Database, clock: Clock, plan: RefreshPlan) -> None:
        self.database = database
        self.clock = clock
        self.plan = plan

    async def report(self, viewer: AccountView) -> HealthReport:
        now = self.clock.now()
        secondaries = viewer.is_primary
        async with self.database.session() as session:
            ids = await family_of(session, viewer) if secondaries else [viewer.id]
            active = select(Redevable.id).where(
                Redevable.account_id.in_(ids), Redevable.active.is_(True)
            )
            redevables = await _count(session, active)
            connections = (
                select(BankConnection)
                .where(BankConnection.redevable_id.in_(active), live_connection())
                .subquery()
            )
            failing = list(
                await session.execute(
                    select(connections.c.error_code, connections.c.last_success_at).where(
                        connections.c.state == ConnectionState.ERROR
                    )
                )
            )
            by_code = Counter(describe_error(code or "unknown").code for code, _ in failing)
            errors = sorted(
                (
                    ErrorFigure(code, describe_error(code).message, count)
                    for code, count in by_code.items()
                ),
                key=lambda figure: (-figure.count, figure.code),
            )
            redevables_in_error = await _count(
                session, active.where(collection_condition("erreur"))
            )
            pending = await _count(session, active.where(latest_link_in_state("valide", now)))
            expired = await _count(session, active.where(latest_link_in_state("expire", now)))
            without = await _count(session, active.where(collection_condition("aucune")))
            # All the family's statements, deactivated redevables included (they were produced).
            family = select(Redevable.id).where(Redevable.account_id.in_(ids))
            waiting = int(
                await session.scalar(
                    # "+ 0": from the small partial index of undelivered statements, not
                    # from every statement of the family's redevables.
                    select(func.count(Statement.id)).where(
                        (Statement.redevable_id + 0).in_(family), undelivered()
                    )
                )
                or 0
            )
            night, start, end = last_night(now, self.plan)
            in_window = (connections.c.last_check_at >= start) & (connections.c.last_check_at < end)
            checked = (
                await session.execute(
                    select(
                        func.count().filter(connections.c.state == ConnectionState.OK),
                        func.count().filter(connections.c.state == ConnectionState.ERROR),
                        func.min(connections.c.last_check_at),
                        func.max(connections.c.last_check_at),
                    ).where(in_window)
                )
            ).one()
            live = int(await session.scalar(select(func.count()).select_from(connections)) or 0)
        refreshed, failed = int(checked[0] or 0), int(checked[1] or 0)
        return HealthReport(
            include_secondaries=secondaries,
            redevables=redevables,
            redevables_in_error=redevables_in_error,
            connections_in_error=len(failing),
            first_check_failures=sum(1 for _, success in failing if success is None),
            errors=errors,
            links_pending=pending,
            links_expired=expired,
            undelivered=waiting,
            without_connection=without,
            night=NightRound(
                night=night,
                start=start,
                end=end,
                running=now < end,
                first_check=checked[2],
                last_check=checked[3],
                refreshed=refreshed,
                failed=failed,
                not_checked=live - refreshed - failed,
            ),
        )


async def _count(session: AsyncSession, query: Select[Any]) -> int:
    return int(await session.scalar(select(func.count()).select_from(query.subquery())) or 0)

"""Operations figures read from the database: reachability, outbox queue, statement states.

``/health`` and ``/metrics`` (``web/ops.py``, through the daemon's health check and metrics
hooks) read the database only through here. Each query is a single short read.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select, text

from releves_mailer.clock import Clock
from releves_mailer.db import Database
from releves_mailer.db.models import OutboxMessage, OutboxState
from releves_mailer.db.models.statements import Statement, StatementState

__all__ = ["Monitoring", "OutboxFigures", "StatementFigures"]


@dataclass(frozen=True)
class OutboxFigures:
    """The outbox now: mails waiting, the age of the oldest one, mails given up."""

    pending: int
    oldest_age: dt.timedelta | None
    failed: int


@dataclass(frozen=True)
class StatementFigures:
    """Statements by state, and those cut but not yet decided by delivery."""

    by_state: dict[str, int]
    undelivered: int


class Monitoring:
    """Short reads for health checks and metrics over one database and clock."""

    def __init__(self, database: Database, clock: Clock, *, timeout: float = 5.0) -> None:
        self.database = database
        self.clock = clock
        self.timeout = timeout

    async def ping(self) -> None:
        """Raises when the database does not answer ``SELECT 1`` within the timeout."""
        async with asyncio.timeout(self.timeout), self.database.session() as session:
            await session.execute(text("SELECT 1"))

    async def outbox(self) -> OutboxFigures:
        async with asyncio.timeout(self.timeout), self.database.session() as session:
            pending, oldest = (
                await session.execute(
                    select(func.count(), func.min(OutboxMessage.created_at)).where(
                        OutboxMessage.state == OutboxState.PENDING
                    )
                )
            ).one()
            failed = await session.scalar(
                select(func.count()).where(OutboxMessage.state == OutboxState.FAILED)
            )
        age = None
        if oldest is not None:
            if oldest.tzinfo is None:  # SQLite's MIN() gives the bare stored UTC value
                oldest = oldest.replace(tzinfo=dt.UTC)
            age = max(self.clock.now() - oldest, dt.timedelta(0))
        return OutboxFigures(int(pending), age, int(failed or 0))

    async def statements(self) -> StatementFigures:
        async with asyncio.timeout(self.timeout), self.database.session() as session:
            rows = await session.execute(
                select(Statement.state, func.count()).group_by(Statement.state)
            )
            by_state = {state.value: 0 for state in StatementState}
            for state, count in rows:
                by_state[StatementState(state).value] = int(count)
            undelivered = await session.scalar(
                select(func.count()).where(
                    Statement.state == StatementState.PRODUCED,
                    Statement.delivery_box.is_(None),
                )
            )
        return StatementFigures(by_state, int(undelivered or 0))

"""Entry numbers of the 04 records: a counter per account, checked by the audit, migrated."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from alembic import command
from sqlalchemy import select
from sqlalchemy.engine import Connection

from releves_mailer import cfonb
from releves_mailer.db import Database
from releves_mailer.db.migrate import alembic_config, upgrade
from releves_mailer.db.models import (
    LineKind,
    Periodicity,
    Statement,
    StatementFile,
    StatementLine,
    StatementState,
)
from releves_mailer.signing.secrets import KeyRing

from .conftest import World, make_world
from .scenario import Spec

START = dt.date(2026, 1, 5)
SPECS = (Spec(Periodicity.JOURNALIERE, include_pending=True), Spec(Periodicity.HEBDOMADAIRE, day=2))


async def _world(database: Database, keyring: KeyRing, days: int) -> World:
    world = await make_world(database, keyring, SPECS, START)
    await world.simulate(START, START + dt.timedelta(days=days))
    assert await world.audit() == []
    return world


async def _numbers(database: Database) -> dict[int, list[tuple[int, int | None, str]]]:
    """Per account, in cut order: (counter after the statement, its lines' numbers, the
    numbers its file carries)."""
    found: dict[int, list[tuple[int, int | None, str]]] = defaultdict(list)
    async with database.session() as session:
        statements = (
            await session.scalars(
                select(Statement)
                .where(Statement.state == StatementState.PRODUCED)
                .order_by(Statement.account_id, Statement.sequence)
            )
        ).all()
        for statement in statements:
            lines = (
                await session.scalars(
                    select(StatementLine.entry_number)
                    .where(StatementLine.statement_id == statement.id)
                    .where(StatementLine.kind == LineKind.MOVEMENT)
                    .order_by(StatementLine.position)
                )
            ).all()
            content = await session.scalar(
                select(StatementFile.content).where(
                    StatementFile.statement_id == statement.id, StatementFile.kind == "cfonb"
                )
            )
            assert content is not None and statement.last_entry_number is not None
            (read,) = cfonb.read(content.decode("ascii"), strict=True)
            for number, movement in zip(lines, read.movements, strict=True):
                found[statement.account_id].append(
                    (statement.last_entry_number, number, movement.entry_number)
                )
    return found


async def test_the_audit_sees_a_number_out_of_the_counter(
    database: Database, keyring: KeyRing
) -> None:
    world = await _world(database, keyring, 8)
    async with database.session() as session:
        line = await session.scalar(
            select(StatementLine)
            .where(StatementLine.kind == LineKind.MOVEMENT)
            .order_by(StatementLine.id.desc())
            .limit(1)
        )
        assert line is not None and line.entry_number is not None
        line.entry_number += 1_000
    assert {problem.code for problem in await world.audit()} == {"numeros_ecriture"}


def _downgrade(connection: Connection, revision: str) -> None:
    command.downgrade(alembic_config(connection), revision)


async def test_migration_starts_the_counter_after_the_lines_already_reported(
    database: Database, keyring: KeyRing
) -> None:
    """Statements cut before migration 0010 keep their files; the counter of each account
    goes on after the number of movement lines it reported, so no number comes twice."""
    world = await _world(database, keyring, 8)
    before = await _numbers(database)
    async with database.engine.begin() as connection:
        await connection.run_sync(_downgrade, "0009")
    # Back at 0009 the numbers are gone, as before the migration; upgrading rebuilds the
    # counters from the lines.
    await upgrade(database)
    migrated = await _numbers(database)
    assert migrated.keys() == before.keys()
    for account_id, rows in migrated.items():
        assert [counter for counter, _number, _file in rows] == [
            counter for counter, _number, _file in before[account_id]
        ]
        assert all(number is None for _counter, number, _file in rows)
    assert await world.audit() == []

    await world.simulate(START + dt.timedelta(days=9), START + dt.timedelta(days=16))
    assert await world.audit() == []
    after = await _numbers(database)
    numbered = 0
    for account_id, rows in after.items():
        old = len(before[account_id])
        new = rows[old:]
        numbered += len(new)
        assert [number for _counter, number, _file in new] == list(
            range(old + 1, old + 1 + len(new))
        )
        assert [text for _counter, _number, text in new] == [
            f"{number:07d}" for _counter, number, _text in new if number is not None
        ]
    assert numbered > 20

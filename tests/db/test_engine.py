"""SQLite connections are set up for a daemon sharing its database with the command line."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.pool import StaticPool

from releves_mailer.db import Database
from releves_mailer.db.engine import SQLITE_CACHE_KIB


async def test_sqlite_connection_settings(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'settings.db'}")
    try:
        async with database.session() as session:
            values = {
                pragma: (await session.execute(text(f"PRAGMA {pragma}"))).scalar_one()
                for pragma in ("journal_mode", "foreign_keys", "busy_timeout", "cache_size")
            }
        assert values == {
            "journal_mode": "wal",
            "foreign_keys": 1,
            "busy_timeout": 30000,
            "cache_size": -SQLITE_CACHE_KIB,
        }
    finally:
        await database.dispose()


async def test_sqlite_pool_reuses_the_warm_connection(tmp_path: Path) -> None:
    """Sequential sessions get the connection returned last (its page cache is warm)."""
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}")
    try:
        async with database.engine.connect() as first, database.engine.connect() as second:
            first_id = id((await first.get_raw_connection()).driver_connection)
            second_id = id((await second.get_raw_connection()).driver_connection)
        assert first_id != second_id
        seen = set()
        for _ in range(3):
            async with database.engine.connect() as connection:
                seen.add(id((await connection.get_raw_connection()).driver_connection))
        assert seen == {first_id}
    finally:
        await database.dispose()


async def test_quick_rows_see_every_commit_at_once(database: Database) -> None:
    """The quick path reads what sessions committed, change after change (no snapshot kept
    between queries), on SQLite's own connection or PostgreSQL's engine."""
    async with database.session() as session:
        await session.execute(text("CREATE TABLE quick_probe (id INTEGER PRIMARY KEY, n INTEGER)"))
        await session.execute(text("INSERT INTO quick_probe VALUES (1, 0)"))
    query = "SELECT n FROM quick_probe WHERE id = :id"
    for value in range(1, 4):
        async with database.session() as session:
            await session.execute(text("UPDATE quick_probe SET n = :n"), {"n": value})
        assert [tuple(row) for row in await database.quick_rows(query, {"id": 1})] == [(value,)]
    assert await database.quick_rows(query, {"id": 2}) == []


async def test_quick_rows_of_a_folder_whose_name_a_uri_would_misread(tmp_path: Path) -> None:
    """The read-only connection opens its file by URI: a "#" (a fragment in a URI), "%" and
    accents in the data directory's path must not change which file it opens. ("?" is
    already refused by SQLAlchemy's URL, where it starts the options.)"""
    folder = tmp_path / "Relevés clients #2 à 100%"
    folder.mkdir()
    database = Database(f"sqlite+aiosqlite:///{folder / 'base.db'}")
    try:
        async with database.session() as session:
            await session.execute(text("CREATE TABLE quick_probe (n INTEGER)"))
            await session.execute(text("INSERT INTO quick_probe VALUES (5)"))
        rows = await database.quick_rows("SELECT n FROM quick_probe", {})
        assert [tuple(row) for row in rows] == [(5,)]
    finally:
        await database.dispose()
    assert sorted(path.name for path in tmp_path.iterdir()) == [folder.name]  # noqa: ASYNC240


async def test_quick_rows_cannot_write_an_sqlite_file(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'quick.db'}")
    try:
        async with database.session() as session:
            await session.execute(text("CREATE TABLE quick_probe (n INTEGER)"))
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await database.quick_rows("INSERT INTO quick_probe VALUES (:n)", {"n": 1})
        async with database.session() as session:
            count = (await session.execute(text("SELECT count(*) FROM quick_probe"))).scalar()
        assert count == 0
    finally:
        await database.dispose()


async def test_quick_rows_of_an_in_memory_database_use_the_engine() -> None:
    """A second connection to ``:memory:`` would open another, empty database."""
    database = Database("sqlite+aiosqlite:///:memory:", poolclass=StaticPool)
    try:
        async with database.session() as session:
            await session.execute(text("CREATE TABLE quick_probe (n INTEGER)"))
            await session.execute(text("INSERT INTO quick_probe VALUES (7)"))
        rows = await database.quick_rows("SELECT n FROM quick_probe", {})
        assert [tuple(row) for row in rows] == [(7,)]
    finally:
        await database.dispose()

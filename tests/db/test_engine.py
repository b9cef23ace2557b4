"""SQLite connections are set up for a daemon sharing its database with the command line."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

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

"""The one-trip SQLite driver: one hand-over a statement, and the same results as aiosqlite's."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import Integer, String, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from releves_mailer.db import Database, sqlite_driver


class _Base(DeclarativeBase):
    pass


class _Item(_Base):
    __tablename__ = "driver_item"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(20), unique=True)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    async with database.engine.begin() as connection:
        await connection.run_sync(_Base.metadata.create_all)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def hand_overs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of each function handed to an aiosqlite connection's thread, in order."""
    calls: list[str] = []
    original: Callable[..., Any] = aiosqlite.Connection._execute

    async def counting(
        self: aiosqlite.Connection, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        calls.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    return calls


async def test_the_engine_uses_the_one_trip_driver(database: Database) -> None:
    assert sqlite_driver.AVAILABLE
    assert database.engine.dialect.driver == sqlite_driver.DRIVER
    side = database.side_sessionmaker("probe")
    async with side() as session:
        assert session.get_bind().dialect.driver == sqlite_driver.DRIVER


async def test_a_read_session_is_one_hand_over_and_a_write_adds_the_commit(
    database: Database, hand_overs: list[str]
) -> None:
    async with database.session() as session:
        session.add(_Item(id=1, name="un"))
    hand_overs.clear()
    async with database.session() as session:
        assert (await session.execute(select(_Item.name))).scalars().all() == ["un"]
    # The statement; no commit and no pool reset, as no transaction was opened.
    assert hand_overs == ["_run"]
    hand_overs.clear()
    async with database.session() as session:
        await session.execute(update(_Item).values(name="deux"))
    assert hand_overs == ["_run", "commit"]


async def test_results_match_sqlite(database: Database) -> None:
    """Row ids, rowcounts, RETURNING and executemany come back as sqlite3 gives them."""
    async with database.session() as session:
        result = await session.execute(text("INSERT INTO driver_item (name) VALUES ('a')"))
        assert result.lastrowid == 1
        returned = await session.execute(
            insert(_Item).values(name="b").returning(_Item.id, _Item.name)
        )
        assert returned.all() == [(2, "b")]
        await session.execute(insert(_Item), [{"name": "c"}, {"name": "d"}, {"name": "e"}])
        changed = await session.execute(
            text("UPDATE driver_item SET name = name || '!' WHERE id > 2")
        )
        assert changed.rowcount == 3
        empty = await session.execute(select(_Item).where(_Item.id > 99))
        assert empty.all() == []
    async with database.session() as session:
        rows = (await session.execute(select(_Item.id, _Item.name).order_by(_Item.id))).all()
        streamed = [row async for row in await session.stream(select(_Item.id))]
    assert rows == [(1, "a"), (2, "b"), (3, "c!"), (4, "d!"), (5, "e!")]
    assert [row[0] for row in streamed] == [1, 2, 3, 4, 5]


async def test_an_error_rolls_the_whole_session_back(database: Database) -> None:
    with pytest.raises(IntegrityError, match="UNIQUE"):
        async with database.session() as session:
            session.add(_Item(id=1, name="un"))
            await session.flush()
            session.add(_Item(id=2, name="un"))
            await session.flush()
    async with database.session() as session:
        assert (await session.execute(select(_Item))).all() == []
        session.add(_Item(id=3, name="trois"))
    async with database.session() as session:
        assert (await session.execute(select(_Item.name))).scalars().all() == ["trois"]


async def test_without_the_private_members_aiosqlite_s_own_adaptor_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_driver, "AVAILABLE", False)
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'plain.db'}")
    try:
        assert database.engine.dialect.driver == "aiosqlite"
        async with database.session() as session:
            assert (await session.execute(text("SELECT 40 + 2"))).scalar_one() == 42
    finally:
        await database.dispose()

"""SQLite driver for SQLAlchemy's asyncio engine: each statement is one trip to SQLite's thread.

SQLAlchemy's aiosqlite adaptor hands every statement to aiosqlite's thread four times
(make a cursor, execute, fetch the rows, close the cursor), then once more for the commit
or the rollback that ends the session even when nothing was written. Each hand-over is a
queue put, a thread wake-up and an event-loop wake-up: on a loaded 2-core machine they cost
more than the SQL of a short read. Here the cursor is made, executed, read and closed in one
function run on that thread, and a commit or rollback with no transaction open (a read-only
session: SQLite's module opens one only before a write) does not travel at all, as
``sqlite3`` would do nothing with it. A read session goes from six hand-overs to one.

The trip uses two private members of aiosqlite (``Connection._execute`` and
``Connection._conn``): :data:`AVAILABLE` says whether the installed aiosqlite has them, and
:class:`~releves_mailer.db.engine.Database` falls back to SQLAlchemy's own adaptor when not.
Server-side cursors (streamed results) keep SQLAlchemy's own cursor.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Sequence
from typing import Any

import aiosqlite
from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_connection
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
    SQLiteDialect_aiosqlite,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

__all__ = ["AVAILABLE", "DRIVER", "OneTripDialect"]

#: The driver's name in a database URL (``sqlite+aiosqlite_onetrip:///path``).
DRIVER = "aiosqlite_onetrip"

#: Whether the installed aiosqlite has the private members the trip relies on.
AVAILABLE = callable(getattr(aiosqlite.Connection, "_execute", None)) and isinstance(
    getattr(aiosqlite.Connection, "_conn", None), property
)

#: What one trip brings back: description, rows, rowcount, lastrowid.
_Outcome = tuple[Any, list[Any], int, int | None]


def _run(connection: aiosqlite.Connection, operation: str, parameters: Any, many: bool) -> _Outcome:
    """On SQLite's thread: one statement from cursor to close."""
    cursor = connection._conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        # rowcount of an INSERT … RETURNING is known once its rows are read.
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class _OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A client-side cursor whose statement runs in one trip; it holds the rows and the
    facts of the last statement, and no cursor of SQLite's."""

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: AsyncAdapt_dbapi_connection) -> None:
        # The parent would make SQLite's cursor now, in a trip of its own.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _async_soft_close(self) -> None:
        """Nothing to close: SQLite's cursor was closed in the trip."""

    def close(self) -> None:
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        try:
            return await_(self._trip(operation, parameters, many=False))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Sequence[Any]) -> Any:
        try:
            return await_(self._trip(operation, seq_of_parameters, many=True))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    async def _trip(self, operation: str, parameters: Any, *, many: bool) -> None:
        async with self._adapt_connection._execute_mutex:
            outcome: _Outcome = await self._connection._execute(
                _run, self._connection, operation, parameters, many
            )
        self._description, rows, self._rowcount, self._lastrowid = outcome
        self._rows = collections.deque(rows)


class _OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """aiosqlite's adapted connection with one-trip cursors, and no trip to end a
    transaction that was never opened."""

    __slots__ = ()
    _cursor_cls = _OneTripCursor

    def _in_transaction(self) -> bool:
        # Read from the event loop's thread while SQLite's thread is idle: the connection is
        # checked out by this session alone, and its statements have all returned.
        connection: sqlite3.Connection | None = self._connection._connection
        return connection is not None and connection.in_transaction

    def commit(self) -> None:
        if self._in_transaction():
            super().commit()

    def rollback(self) -> None:
        if self._in_transaction():
            super().rollback()


class _OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> _OneTripConnection:
        adapted = super().connect(*arg, **kw)
        return _OneTripConnection(self, adapted._connection)


class OneTripDialect(SQLiteDialect_aiosqlite):
    """SQLAlchemy's aiosqlite dialect over :class:`_OneTripConnection`."""

    driver = DRIVER
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> AsyncAdapt_aiosqlite_dbapi:
        return _OneTripDBAPI(aiosqlite, sqlite3)


registry.register(f"sqlite.{DRIVER}", __name__, "OneTripDialect")

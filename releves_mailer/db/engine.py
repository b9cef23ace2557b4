"""Async engine and session factory for SQLite (default) and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import urllib.parse
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import AsyncAdaptedQueuePool

from releves_mailer.db import sqlite_driver

__all__ = ["Database", "QuickQuery"]

#: A read of :meth:`Database.quick_reads`: SQL with ``:name`` parameters, and their values.
QuickQuery = tuple[str, Mapping[str, Any]]

#: SQLite connections of the pool, opened on demand and then kept open; past them, sessions
#: wait for a connection (up to ``POOL_TIMEOUT``), so a storm of logins queues instead of
#: opening a file handle each. There is no overflow: SQLite (in WAL mode) does not release
#: the descriptor of a connection closed while another one of the process is open, it keeps
#: it for a later connection, so connections opened for a burst and closed afterwards
#: would stay as open files (700 after a storm of 1,000 logins).
SQLITE_POOL_SIZE = 10
#: Seconds a session waits for a pooled connection before failing.
POOL_TIMEOUT = 60.0
#: Page cache of each SQLite connection, in KiB (SQLite's default is 2 MiB). The collection
#: re-reads the recent rows of every account each night: with the default cache those reads
#: go to the operating system, and SQL time nearly doubles on a portfolio of a few thousand
#: accounts. The pool hands out the most recently used connection first, so in practice one
#: or two connections hold a warm cache, not all of them.
SQLITE_CACHE_KIB = 32 * 1024
#: SQLite connections of a side pool (:meth:`Database.side_sessionmaker`).
SIDE_POOL_SIZE = 8


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the CLI write while the daemon reads; busy_timeout makes concurrent writers
    # wait instead of failing; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()


def _side_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The database file is already in WAL mode (a persistent setting): a side connection
    # only needs the per-connection settings, with SQLite's default page cache.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _create_private(path: str | None) -> None:
    """Before SQLite opens it: create the file 0600 if missing (SQLite would follow the umask;
    the WAL and shared-memory files copy the database's mode)."""
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    # A missing folder is left for SQLite to report.
    with contextlib.suppress(FileExistsError, FileNotFoundError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


class Database:
    """One engine and its session factory; ``session()`` opens a unit of work.

    On SQLite, a component whose short transactions must not wait behind long ones (the
    message store) asks for a side pool over the same file (:meth:`side_sessionmaker`); the
    database owns it and disposes of it with the main engine.
    """

    def __init__(self, url: str, *, echo: bool = False, **engine_options: Any) -> None:
        self.url = make_url(url)
        options: dict[str, Any] = {"echo": echo, **engine_options}
        if self.is_sqlite:
            # A few connections are kept open: opening one costs a file open, an aiosqlite
            # thread, the PRAGMAs below and a schema parse, more than a short refresh itself.
            # An idle pooled connection holds no lock (it is rolled back when returned), so
            # other processes are not blocked; WAL and busy_timeout make them safe. Bursts
            # beyond the pool queue (see SQLITE_POOL_SIZE).
            options.setdefault("poolclass", AsyncAdaptedQueuePool)
            if options["poolclass"] is AsyncAdaptedQueuePool:
                options.setdefault("pool_size", SQLITE_POOL_SIZE)
                options.setdefault("max_overflow", 0)
                options.setdefault("pool_timeout", POOL_TIMEOUT)
                options.setdefault("pool_use_lifo", True)
        self.engine: AsyncEngine = create_async_engine(self._engine_url, **options)
        if self.is_sqlite:
            path = self.url.database
            event.listen(self.engine.sync_engine, "do_connect", lambda *_: _create_private(path))
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self._side: dict[str, AsyncEngine] = {}
        self._quick = _QuickReader(self.url.database) if self.is_sqlite else None

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @property
    def _engine_url(self) -> URL:
        """The URL the engines open: aiosqlite's through our one-trip driver
        (:mod:`~releves_mailer.db.sqlite_driver`) when the installed aiosqlite allows it."""
        if self.url.drivername == "sqlite+aiosqlite" and sqlite_driver.AVAILABLE:
            return self.url.set(drivername=f"sqlite+{sqlite_driver.DRIVER}")
        return self.url

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction: committed on success, rolled back on any error."""
        async with self.sessionmaker() as session, session.begin():
            yield session

    def side_sessionmaker(self, name: str) -> async_sessionmaker[AsyncSession]:
        """The session factory of the side pool ``name``: on SQLite, ``SIDE_POOL_SIZE``
        connections of its own over the same file, bounded without overflow like the main
        pool (a storm queues for them instead of opening file handles); on PostgreSQL, the
        main pool (its server handles concurrent transactions)."""
        if not self.is_sqlite:
            return self.sessionmaker
        engine = self._side.get(name)
        if engine is None:
            engine = self._side[name] = create_async_engine(
                self._engine_url,
                poolclass=AsyncAdaptedQueuePool,
                pool_size=SIDE_POOL_SIZE,
                max_overflow=0,
                pool_timeout=POOL_TIMEOUT,
            )
            event.listen(engine.sync_engine, "connect", _side_pragmas)
        return async_sessionmaker(engine, expire_on_commit=False)

    async def dispose_side(self, name: str) -> None:
        """Close the connections of the side pool ``name`` (a later use opens new ones)."""
        engine = self._side.get(name)
        if engine is not None:
            await engine.dispose()

    async def quick_rows(self, sql: str, parameters: Mapping[str, Any]) -> list[Any]:
        """The rows of one small read-only query (``sql`` with ``:name`` parameters), for the
        reads a server repeats on every command; rows are tuples (by position).

        On an SQLite file it runs on a read-only connection of its own, in one hand-over to
        SQLite's thread, outside the pool (sessions queued for a connection do not delay it)
        and without the session, the pool's checkout and SQLAlchemy's result around it:
        0.3 ms a query on a loaded 2-core machine, where a session takes 1 to 2 ms even on
        the one-trip driver (``bench/db_session_bench.py``). The read sees every committed
        change (WAL, no transaction held between queries). Elsewhere, a plain connection of
        the engine.
        """
        return (await self.quick_reads([(sql, parameters)]))[0]

    async def quick_reads(self, queries: Sequence[QuickQuery]) -> list[list[Any]]:
        """The rows of each of ``queries``, all read in one transaction (one snapshot on
        SQLite, as a session would read them elsewhere), the way :meth:`quick_rows` reads."""
        if self._quick is not None and self._quick.usable:
            return await self._quick.reads(queries)
        async with self.engine.connect() as connection, connection.begin():
            return [
                [tuple(row) for row in await connection.execute(text(sql), parameters)]
                for sql, parameters in queries
            ]

    async def dispose(self) -> None:
        if self._quick is not None:
            await self._quick.close()
        for engine in self._side.values():
            await engine.dispose()
        await self.engine.dispose()


class _QuickReader:
    """A read-only connection to an SQLite file, living in a thread of its own (opened on
    first use, closed by :meth:`close`; a later use opens it again)."""

    def __init__(self, path: str | None) -> None:
        # ":memory:" would be another, empty database; a "file:" URI keeps its own options.
        self.usable = bool(path) and path != ":memory:" and not str(path).startswith("file:")
        # A URI, for mode=ro: the path's "#", "%" (and any non-ASCII) percent-encoded.
        self._uri = f"file:{urllib.parse.quote(str(path))}?mode=ro"
        self._connection: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None

    async def reads(self, queries: Sequence[QuickQuery]) -> list[list[Any]]:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-quick-read")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._read, queries)

    def _read(self, queries: Sequence[QuickQuery]) -> list[list[Any]]:
        if self._connection is None:
            # Autocommit (isolation_level None): no transaction outlives a call.
            connection = sqlite3.connect(
                self._uri, uri=True, check_same_thread=False, isolation_level=None
            )
            connection.execute("PRAGMA busy_timeout=30000")
            self._connection = connection
        connection = self._connection
        if len(queries) == 1:
            return [self._fetch(connection, *queries[0])]
        connection.execute("BEGIN")
        try:
            return [self._fetch(connection, sql, parameters) for sql, parameters in queries]
        finally:
            connection.execute("COMMIT")

    @staticmethod
    def _fetch(
        connection: sqlite3.Connection, sql: str, parameters: Mapping[str, Any]
    ) -> list[Any]:
        cursor = connection.execute(sql, parameters)
        try:
            return cursor.fetchall()
        finally:
            cursor.close()

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        await asyncio.get_running_loop().run_in_executor(thread, self._close_connection)
        thread.shutdown(wait=False)

    def _close_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

"""Consistent database copies while the daemon runs, and what such a copy references.

SQLite: the online backup API copies the database (WAL included) as of one moment while
the daemon keeps writing. PostgreSQL: a REPEATABLE READ transaction exports its snapshot
and ``pg_dump --snapshot`` dumps exactly what that transaction sees, so the census taken
in it (message files referenced, counts) matches the dump. Restoring a dump runs ``psql``
in one transaction on an empty database.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, create_engine, func, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from releves_mailer.db.models import MailMessage, PortalAccount, Redevable, Statement
from releves_mailer.errors import UserError
from releves_mailer.files import PRIVATE_FILE

__all__ = [
    "Census",
    "database_kind",
    "load_postgres",
    "postgres_snapshot",
    "sqlite_census",
    "sqlite_snapshot",
]


@dataclass(frozen=True, slots=True)
class Census:
    """What one database snapshot holds: the message files it points at, and counts."""

    blobs: list[str]
    counts: dict[str, int]
    revisions: list[str]


def take_census(connection: Connection) -> Census:
    """Read the census in ``connection``'s current transaction."""

    def count(model: type) -> int:
        return int(connection.execute(select(func.count()).select_from(model)).scalar_one())

    blobs = sorted(connection.execute(select(MailMessage.blob).distinct()).scalars())
    counts = {
        "accounts": count(PortalAccount),
        "redevables": count(Redevable),
        "statements": count(Statement),
        "messages": count(MailMessage),
        "message_files": len(blobs),
    }
    versions = connection.execute(text("SELECT version_num FROM alembic_version"))
    revisions = sorted(versions.scalars())
    return Census(blobs, counts, revisions)


def database_kind(url: str) -> str:
    """``sqlite`` or ``postgresql``; other databases cannot be backed up."""
    backend = make_url(url).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise UserError(f"base « {backend} » : seules SQLite et PostgreSQL sont prises en charge")
    return backend


def sqlite_census(path: Path) -> Census:
    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return take_census(connection)
    finally:
        engine.dispose()


def sqlite_snapshot(url: str, target: Path) -> Census:
    """Copy the SQLite database of ``url`` into ``target`` (one file, no WAL) with the
    online backup API; returns the copy's census. Blocking: run it in a thread."""
    source_path = make_url(url).database
    if not source_path or not Path(source_path).is_file():
        raise UserError(f"base SQLite introuvable : {source_path}")
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    source = sqlite3.connect(source_path, timeout=60)
    try:
        copy = sqlite3.connect(target)
        try:
            source.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")
        finally:
            copy.close()
    finally:
        source.close()
    return sqlite_census(target)


def _find_tool(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise UserError(
            f"« {name} » introuvable : installez le client PostgreSQL "
            f"(paquet postgresql-client) ou ajoutez {name} au PATH"
        )
    return found


def libpq_environment(url: URL) -> dict[str, str]:
    """The connection of ``url`` as libpq variables: no password on a command line."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    for variable, value in (
        ("PGHOST", url.host),
        ("PGPORT", url.port),
        ("PGUSER", url.username),
        ("PGPASSWORD", url.password),
        ("PGDATABASE", url.database),
    ):
        if value:
            environment[variable] = str(value)
    ssl = url.query.get("ssl") or url.query.get("sslmode")
    if isinstance(ssl, str):
        environment["PGSSLMODE"] = ssl
    return environment


async def _run_tool(command: list[str], environment: dict[str, str], time_limit: float) -> None:
    process = await asyncio.create_subprocess_exec(
        *command,
        env=environment,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, error = await asyncio.wait_for(process.communicate(), time_limit)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise UserError(f"{Path(command[0]).name} n'a pas fini en {time_limit:.0f} s") from None
    if process.returncode != 0:
        lines = error.decode("utf-8", "replace").strip().splitlines()
        raise UserError(
            f"{Path(command[0]).name} a échoué (code {process.returncode}) : "
            + (lines[-1] if lines else "sans message")
        )


async def postgres_snapshot(url: str, target: Path, time_limit: float) -> Census:
    """``pg_dump`` (plain SQL, no owners nor privileges) of the database at ``url`` into
    ``target``, on the snapshot its census was read in."""
    pg_dump = _find_tool("pg_dump")
    parsed = make_url(url)
    engine = create_async_engine(parsed, poolclass=NullPool, isolation_level="REPEATABLE READ")
    try:
        async with engine.connect() as connection:
            snapshot = (await connection.execute(text("SELECT pg_export_snapshot()"))).scalar_one()
            census = await connection.run_sync(take_census)
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
            command = [
                pg_dump,
                "--format=plain",
                "--no-owner",
                "--no-privileges",
                f"--snapshot={snapshot}",
                f"--file={target}",
            ]
            # The transaction stays open until pg_dump is done: the snapshot lives with it.
            await _run_tool(command, libpq_environment(parsed), time_limit)
            await connection.rollback()
    finally:
        await engine.dispose()
    return census


async def load_postgres(url: str, dump: Path, time_limit: float) -> Census:
    """Run ``dump`` with ``psql`` in one transaction into the empty database at ``url``;
    returns the census of what was loaded."""
    psql = _find_tool("psql")
    parsed = make_url(url)
    engine = create_async_engine(parsed, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            tables = (
                await connection.execute(
                    text(
                        "SELECT count(*) FROM pg_catalog.pg_tables "
                        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
                    )
                )
            ).scalar_one()
        if tables:
            raise UserError(
                f"la base PostgreSQL « {parsed.database} » n'est pas vide ({tables} tables) : "
                "restaurez dans une base neuve"
            )
        command = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction"]
        await _run_tool([*command, "-f", str(dump)], libpq_environment(parsed), time_limit)
        async with engine.connect() as connection:
            return await connection.run_sync(take_census)
    finally:
        await engine.dispose()

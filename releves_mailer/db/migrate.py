"""Alembic migrations driven from code: upgrade to head, and the start-up schema check."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from releves_mailer.db.engine import Database

__all__ = ["SchemaOutOfDate", "check_schema", "current_heads", "head_revisions", "upgrade"]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


class SchemaOutOfDate(Exception):
    """The database schema is not at the revision this code expects."""


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revisions() -> frozenset[str]:
    """The newest revision of each area's branch (areas add tables independently)."""
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


async def current_heads(database: Database) -> frozenset[str]:
    def read(connection: Connection) -> frozenset[str]:
        return frozenset(MigrationContext.configure(connection).get_current_heads())

    async with database.engine.connect() as connection:
        return await connection.run_sync(read)


async def upgrade(database: Database, revision: str = "heads") -> None:
    """Apply every pending migration in one transaction (where the backend allows it)."""

    def run(connection: Connection) -> None:
        command.upgrade(alembic_config(connection), revision)

    async with database.engine.begin() as connection:
        await connection.run_sync(run)


async def check_schema(database: Database) -> None:
    """Raise :class:`SchemaOutOfDate` unless the database is at the head revision."""
    current = await current_heads(database)
    expected = head_revisions()
    if current != expected:
        shown = ", ".join(sorted(current)) or "vide"
        wanted = ", ".join(sorted(expected))
        raise SchemaOutOfDate(
            f"le schéma de la base est à la révision {shown}, ce programme attend {wanted} : "
            "lancez « releves-mailer db upgrade »"
        )

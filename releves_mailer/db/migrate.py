"""Alembic migrations driven from code: upgrade to head, and the start-up schema check."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from releves_mailer.db.engine import Database

__all__ = ["SchemaOutOfDate", "check_schema", "current_revision", "head_revision", "upgrade"]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


class SchemaOutOfDate(Exception):
    """The database schema is not at the revision this code expects."""


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def current_revision(database: Database) -> str | None:
    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with database.engine.connect() as connection:
        return await connection.run_sync(read)


async def upgrade(database: Database, revision: str = "head") -> None:
    """Apply every pending migration in one transaction (where the backend allows it)."""

    def run(connection: Connection) -> None:
        command.upgrade(alembic_config(connection), revision)

    async with database.engine.begin() as connection:
        await connection.run_sync(run)


async def check_schema(database: Database) -> None:
    """Raise :class:`SchemaOutOfDate` unless the database is at the head revision."""
    current = await current_revision(database)
    head = head_revision()
    if current != head:
        shown = current or "vide"
        raise SchemaOutOfDate(
            f"le schéma de la base est à la révision {shown}, ce programme attend {head} : "
            "lancez « releves-mailer db upgrade »"
        )

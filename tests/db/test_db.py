"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from releves_mailer.db import (
    Base,
    Database,
    models,  # noqa: F401
)
from releves_mailer.db.migrate import check_schema, current_heads, head_revisions


async def test_migrations_match_models(database: Database) -> None:
    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with database.engine.connect() as connection:
        differences = await connection.run_sync(diff)
    assert differences == []


async def test_schema_check_passes_at_head(database: Database) -> None:
    assert await current_heads(database) == head_revisions()
    await check_schema(database)

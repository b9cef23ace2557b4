"""Alembic environment: runs on the connection handed over by ``releves_mailer.db.migrate``."""

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext

from releves_mailer.db import models  # noqa: F401  (registers every table)
from releves_mailer.db.base import Base, UTCDateTime


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    # Migrations must not depend on our Python types: UTCDateTime is a DateTime column.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through 'releves-mailer db upgrade'")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    render_item=render_item,
)
with context.begin_transaction():
    context.run_migrations()

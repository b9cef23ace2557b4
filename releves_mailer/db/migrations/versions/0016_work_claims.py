"""workers: claims with a lease on the shared work, the login guard's attempts

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03

- ``claimed_by``, ``claimed_until`` on ``bank_connection`` (its refresh), ``bank_account``
  (the cut of its statements), ``statement`` (its delivery) and ``outbox_message`` (its
  sending): the worker holding the row and the end of its lease.
- ``login_attempt``: the login guard's failures and attempts in progress, shared by every
  daemon of the database.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLAIMED_TABLES = ("bank_connection", "bank_account", "statement", "outbox_message")


def upgrade() -> None:
    for table in CLAIMED_TABLES:
        op.add_column(table, sa.Column("claimed_by", sa.String(length=120), nullable=True))
        op.add_column(table, sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "login_attempt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pending", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_attempt")),
    )
    op.create_index("ix_login_attempt_key_at", "login_attempt", ["key", "at"])
    op.create_index(op.f("ix_login_attempt_at"), "login_attempt", ["at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_login_attempt_at"), table_name="login_attempt")
    op.drop_index("ix_login_attempt_key_at", table_name="login_attempt")
    op.drop_table("login_attempt")
    for table in reversed(CLAIMED_TABLES):
        # Not a batch (table copy): SQLite would refuse to drop the referenced tables.
        # ALTER TABLE ... DROP COLUMN: SQLite 3.35 and later, PostgreSQL.
        op.execute(f"ALTER TABLE {table} DROP COLUMN claimed_until")
        op.execute(f"ALTER TABLE {table} DROP COLUMN claimed_by")

"""portal_account: the active flag (a primary account deactivates its secondaries)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03

- ``portal_account.active``: true for every existing account; a deactivated account logs in
  on no protocol (portal, IMAP, SMTP AUTH) and keeps its data.
- ``ix_statement_undelivered``: a partial index of the statements the delivery has not
  decided yet (``delivery_box IS NULL``): the portal home page's figure and "non déposé"
  filter.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_UNDELIVERED = "delivery_box IS NULL"


def upgrade() -> None:
    # Plain ALTER TABLE (no batch copy): other tables reference portal_account, and SQLite
    # adds and drops such a column in place.
    op.add_column(
        "portal_account",
        sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true()),
    )
    op.create_index(
        "ix_statement_undelivered",
        "statement",
        ["created_at", "id", "redevable_id", "state"],
        sqlite_where=sa.text(_UNDELIVERED),
        postgresql_where=sa.text(_UNDELIVERED),
    )


def downgrade() -> None:
    op.drop_index("ix_statement_undelivered", table_name="statement")
    op.drop_column("portal_account", "active")

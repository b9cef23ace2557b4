"""portal_account: the active flag (a primary account deactivates its secondaries)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03

- ``portal_account.active``: true for every existing account; a deactivated account logs in
  on no protocol (portal, IMAP, SMTP AUTH) and keeps its data.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("portal_account") as batch:
        batch.add_column(
            sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    with op.batch_alter_table("portal_account") as batch:
        batch.drop_column("active")

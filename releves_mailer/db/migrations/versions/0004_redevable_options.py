"""Join the area branches; redevable options: include pending, skip empty statement mails.

Revision ID: 0004
Revises: 0002, 0003
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = ("0002", "0003")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("redevable", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("include_pending", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column("skip_empty_mail", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("redevable", schema=None) as batch_op:
        batch_op.drop_column("skip_empty_mail")
        batch_op.drop_column("include_pending")

"""portal: login sessions, indexes of the portal's lists

Revision ID: 0008
Revises: 0005, 0007 (merges the statements and partner branches)
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = ("0005", "0007")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "portal_session",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["portal_account.id"],
            name=op.f("fk_portal_session_account_id_portal_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portal_session")),
    )
    op.create_index(
        op.f("ix_portal_session_account_id"), "portal_session", ["account_id"], unique=False
    )
    op.create_index(
        "ix_statement_tracking", "statement", ["created_at", "id", "redevable_id", "state"]
    )


def downgrade() -> None:
    op.drop_index("ix_statement_tracking", table_name="statement")
    op.drop_index(op.f("ix_portal_session_account_id"), table_name="portal_session")
    op.drop_table("portal_session")

"""partner: secure links and the watch of bank connections

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "secure_link",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("redevable_id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("recipient", sa.String(length=250), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state_nonce", sa.String(length=64), nullable=True),
        sa.Column("partner", sa.String(length=32), nullable=True),
        sa.Column("partner_data", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["redevable_id"],
            ["redevable.id"],
            name=op.f("fk_secure_link_redevable_id_redevable"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["bank_connection.id"],
            name=op.f("fk_secure_link_connection_id_bank_connection"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secure_link")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_secure_link_token_hash")),
        sa.UniqueConstraint("state_nonce", name=op.f("uq_secure_link_state_nonce")),
    )
    op.create_index(
        "ix_secure_link_redevable_created", "secure_link", ["redevable_id", "created_at"]
    )
    op.create_index(
        op.f("ix_secure_link_connection_id"), "secure_link", ["connection_id"], unique=False
    )
    op.create_table(
        "connection_watch",
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column("seen_check_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("action_failures", sa.Integer(), nullable=False),
        sa.Column("episode_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("alerted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("alerted_code", sa.String(length=40), nullable=True),
        sa.Column("credentials_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consent_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consent_notice_for", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["bank_connection.id"],
            name=op.f("fk_connection_watch_connection_id_bank_connection"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("connection_id", name=op.f("pk_connection_watch")),
    )


def downgrade() -> None:
    op.drop_table("connection_watch")
    op.drop_index(op.f("ix_secure_link_connection_id"), table_name="secure_link")
    op.drop_index("ix_secure_link_redevable_created", table_name="secure_link")
    op.drop_table("secure_link")

"""mailbox: the Message-IDs delivered into each box (the delivery's idempotency key)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03

- ``mail_delivery``: one row per (box, Message-ID) the store delivered; a second delivery of
  the same pair stores nothing. Messages delivered before this revision have no row.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mail_delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(length=320), nullable=False),
        sa.Column("message_id", sa.String(length=1000), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mail_delivery")),
        sa.UniqueConstraint("owner", "message_id", name="uq_mail_delivery_owner_message_id"),
    )


def downgrade() -> None:
    op.drop_table("mail_delivery")

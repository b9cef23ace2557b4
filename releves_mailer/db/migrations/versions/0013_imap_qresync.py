"""mailbox: the UIDs expunged from each folder, with their MODSEQ (IMAP QRESYNC)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03

- ``mail_expunged``: one row per UID expunged or moved out of a folder, with the MODSEQ of
  that expunge, so that QRESYNC can tell which UIDs vanished since a given MODSEQ. UIDs
  expunged before this revision have no row: they count as vanished since any MODSEQ,
  which RFC 7162 allows (a client ignores UIDs it does not know).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mail_expunged",
        sa.Column("folder_id", sa.Integer(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("modseq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["folder_id"],
            ["mail_folder.id"],
            name=op.f("fk_mail_expunged_folder_id_mail_folder"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("folder_id", "uid", name=op.f("pk_mail_expunged")),
    )
    op.create_index(
        "ix_mail_expunged_folder_modseq", "mail_expunged", ["folder_id", "modseq"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_mail_expunged_folder_modseq", table_name="mail_expunged")
    op.drop_table("mail_expunged")

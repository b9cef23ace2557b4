"""edi: deposit files per account, the declarations read in them, the analyses and their lock

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03

- ``edi_deposit``: one row per deposit file of an account, unique by (account, SHA-256);
- ``edi_declaration``: the declarations read in a deposit (company, procedure, period, date);
- ``edi_analysis``: each discovery run (its window and counts); the last one starts the next;
- ``edi_analysis_lock``: one row per account while an analysis runs;
- ``edi_auto_discovery``: the accounts whose new deposits the daemon analyses by itself.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "edi_deposit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("file_name", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=35), nullable=False),
        sa.Column("prepared_on", sa.Date(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["portal_account.id"],
            name=op.f("fk_edi_deposit_account_id_portal_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_edi_deposit")),
        sa.UniqueConstraint("account_id", "sha256", name=op.f("uq_edi_deposit_account_id_sha256")),
    )
    op.create_index(op.f("ix_edi_deposit_account_id"), "edi_deposit", ["account_id"])
    op.create_table(
        "edi_declaration",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deposit_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("procedure", sa.String(length=16), nullable=False),
        sa.Column("form", sa.String(length=35), nullable=False),
        sa.Column("siren", sa.String(length=9), nullable=False),
        sa.Column("nic", sa.String(length=5), nullable=False),
        sa.Column("company_name", sa.String(length=350), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=True),
        sa.Column("period_end", sa.Date(), nullable=True),
        sa.Column("deposited_on", sa.Date(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["portal_account.id"],
            name=op.f("fk_edi_declaration_account_id_portal_account"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["deposit_id"],
            ["edi_deposit.id"],
            name=op.f("fk_edi_declaration_deposit_id_edi_deposit"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_edi_declaration")),
    )
    op.create_index(op.f("ix_edi_declaration_deposit_id"), "edi_declaration", ["deposit_id"])
    op.create_index(
        "ix_edi_declaration_account_deposited", "edi_declaration", ["account_id", "deposited_on"]
    )
    op.create_table(
        "edi_analysis",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("analysed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_start", sa.Date(), nullable=False),
        sa.Column("created", sa.Integer(), nullable=False),
        sa.Column("already_present", sa.Integer(), nullable=False),
        sa.Column("refused", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["portal_account.id"],
            name=op.f("fk_edi_analysis_account_id_portal_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_edi_analysis")),
    )
    op.create_index(op.f("ix_edi_analysis_account_id"), "edi_analysis", ["account_id"])
    op.create_table(
        "edi_analysis_lock",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["portal_account.id"],
            name=op.f("fk_edi_analysis_lock_account_id_portal_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_edi_analysis_lock")),
    )
    op.create_table(
        "edi_auto_discovery",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("enabled_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["portal_account.id"],
            name=op.f("fk_edi_auto_discovery_account_id_portal_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_edi_auto_discovery")),
    )


def downgrade() -> None:
    op.drop_table("edi_auto_discovery")
    op.drop_table("edi_analysis_lock")
    op.drop_index(op.f("ix_edi_analysis_account_id"), table_name="edi_analysis")
    op.drop_table("edi_analysis")
    op.drop_index("ix_edi_declaration_account_deposited", table_name="edi_declaration")
    op.drop_index(op.f("ix_edi_declaration_deposit_id"), table_name="edi_declaration")
    op.drop_table("edi_declaration")
    op.drop_index(op.f("ix_edi_deposit_account_id"), table_name="edi_deposit")
    op.drop_table("edi_deposit")

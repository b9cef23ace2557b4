"""statements: one row per bank account and due date, its lines and its files

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "statement",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("redevable_id", sa.Integer(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("due_date", sa.Date(), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column(
            "window",
            sa.Enum(
                "first", "next", "resumed", name="statement_window", native_enum=False, length=16
            ),
            nullable=False,
        ),
        sa.Column("periodicity", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "en_cours", "succes", "echec", name="statement_state", native_enum=False, length=16
            ),
            nullable=False,
        ),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("data_as_of", sa.DateTime(timezone=True), nullable=True),
        sa.Column("iban", sa.String(length=34), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("movement_count", sa.Integer(), nullable=False),
        sa.Column("deleted_count", sa.Integer(), nullable=False),
        sa.Column("opening_balance", sa.BigInteger(), nullable=True),
        sa.Column("closing_balance", sa.BigInteger(), nullable=True),
        sa.Column("movements_total", sa.BigInteger(), nullable=True),
        sa.Column("bank_balance", sa.BigInteger(), nullable=True),
        sa.Column("balance_gap", sa.BigInteger(), nullable=True),
        sa.Column("explained_gap", sa.BigInteger(), nullable=True),
        sa.Column("withdrawn_total", sa.BigInteger(), nullable=False),
        sa.Column("balance_mismatch", sa.Boolean(), nullable=False),
        sa.Column("cfonb_sha256", sa.String(length=64), nullable=True),
        sa.Column("cfonb_size", sa.Integer(), nullable=True),
        sa.Column("csv_sha256", sa.String(length=64), nullable=True),
        sa.Column("csv_size", sa.Integer(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("message_id", sa.String(length=250), nullable=True),
        sa.Column("delivery_box", sa.String(length=250), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["bank_account.id"],
            name=op.f("fk_statement_account_id_bank_account"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["redevable_id"],
            ["redevable.id"],
            name=op.f("fk_statement_redevable_id_redevable"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_statement")),
        sa.UniqueConstraint("account_id", "due_date", name="uq_statement_account_due"),
        sa.UniqueConstraint("account_id", "sequence", name="uq_statement_account_sequence"),
    )
    with op.batch_alter_table("statement", schema=None) as batch_op:
        batch_op.create_index("ix_statement_created", ["created_at"], unique=False)
        batch_op.create_index(
            "ix_statement_redevable_due", ["redevable_id", "due_date"], unique=False
        )

    op.create_table(
        "statement_file",
        sa.Column("statement_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["statement_id"],
            ["statement.id"],
            name=op.f("fk_statement_file_statement_id_statement"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("statement_id", "kind", name=op.f("pk_statement_file")),
    )
    op.create_table(
        "statement_line",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("statement_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("transaction_id", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "movement", "correction", name="statement_line_kind", native_enum=False, length=16
            ),
            nullable=False,
        ),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("provider_id", sa.String(length=64), nullable=False),
        sa.Column("booking_date", sa.Date(), nullable=False),
        sa.Column("value_date", sa.Date(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("label", sa.String(length=500), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=True),
        sa.Column("pending", sa.Boolean(), nullable=False),
        sa.Column("pending_open", sa.Boolean(), nullable=False),
        sa.Column("withdrawn_statement_id", sa.Integer(), nullable=True),
        sa.Column("withdraws_line_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["bank_account.id"],
            name=op.f("fk_statement_line_account_id_bank_account"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["statement_id"],
            ["statement.id"],
            name=op.f("fk_statement_line_statement_id_statement"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["bank_transaction.id"],
            name=op.f("fk_statement_line_transaction_id_bank_transaction"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_statement_line")),
    )
    with op.batch_alter_table("statement_line", schema=None) as batch_op:
        batch_op.create_index(
            "ix_statement_line_open_pending", ["account_id", "pending_open"], unique=False
        )
        batch_op.create_index(
            "ix_statement_line_statement", ["statement_id", "position"], unique=False
        )
        batch_op.create_index("ix_statement_line_transaction", ["transaction_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("statement_line", schema=None) as batch_op:
        batch_op.drop_index("ix_statement_line_transaction")
        batch_op.drop_index("ix_statement_line_statement")
        batch_op.drop_index("ix_statement_line_open_pending")

    op.drop_table("statement_line")
    op.drop_table("statement_file")
    with op.batch_alter_table("statement", schema=None) as batch_op:
        batch_op.drop_index("ix_statement_redevable_due")
        batch_op.drop_index("ix_statement_created")

    op.drop_table("statement")

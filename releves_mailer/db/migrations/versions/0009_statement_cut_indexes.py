"""statements: indexes of the statement builder's per-account questions

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26

- ``ix_statement_state_account_due``: an account's first and last produced statements and
  its statements not produced yet, without reading all its statements at every cut.
- ``ix_bank_transaction_booked``: the booked movements dated after a due date (the bank's
  balance at D), without reading all the account's booked rows.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_statement_state_account_due",
        "statement",
        ["state", "account_id", "due_date"],
        unique=False,
    )
    op.create_index(
        "ix_bank_transaction_booked",
        "bank_transaction",
        ["account_id", "status", "booking_date"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_bank_transaction_booked", table_name="bank_transaction")
    op.drop_index("ix_statement_state_account_due", table_name="statement")

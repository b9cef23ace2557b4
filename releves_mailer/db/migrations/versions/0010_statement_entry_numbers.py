"""statements: entry numbers of the movement lines, from a counter per account

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02

- ``statement_line.entry_number``: the number of a movement line's 04 record (positions
  82-88), unique per account for the life of the account (``uq_statement_line_entry_number``).
- ``statement.last_entry_number``: the account's counter once the statement is cut; the
  next statement goes on from it.

Statements cut before this revision carried the last 7 characters of the provider's id; their
files are kept as sent and their lines keep no number (NULL: the file says it). The counter
of each produced statement is set to the number of movement lines of the account so far,
which is what it is for the statements cut afterwards (one number per movement line), so the
new numbers start after them. ``SUM() OVER`` and ``UPDATE ... FROM`` run on SQLite 3.33+ and
PostgreSQL.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("statement", sa.Column("last_entry_number", sa.BigInteger(), nullable=True))
    op.add_column("statement_line", sa.Column("entry_number", sa.BigInteger(), nullable=True))
    op.execute(
        """
        UPDATE statement SET last_entry_number = counted.total
        FROM (
            SELECT cut.id AS id, SUM(COALESCE(lines.n, 0)) OVER (
                PARTITION BY cut.account_id ORDER BY cut.sequence
                ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
            ) AS total
            FROM statement AS cut
            LEFT JOIN (
                SELECT statement_id, COUNT(*) AS n FROM statement_line
                WHERE kind = 'movement' GROUP BY statement_id
            ) AS lines ON lines.statement_id = cut.id
            WHERE cut.state = 'succes'
        ) AS counted
        WHERE counted.id = statement.id
        """
    )
    op.create_index(
        "uq_statement_line_entry_number",
        "statement_line",
        ["account_id", "entry_number"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_statement_line_entry_number", table_name="statement_line")
    op.drop_column("statement_line", "entry_number")
    op.drop_column("statement", "last_entry_number")

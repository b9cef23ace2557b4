"""stored enum values in English; balance mismatches get their own bank event kind

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03

Stored enum values are English identifiers; users read French words derived from them.

- ``statement.state``: ``en_cours`` / ``succes`` / ``echec`` become ``waiting`` /
  ``produced`` / ``failed``.
- ``secure_link.kind``: ``saisie`` / ``maj`` become ``entry`` / ``update``.
- ``bank_event.kind``: a balance mismatch was recorded as ``connection_error`` (with the
  error code ``balance_mismatch``); it becomes ``balance_mismatch``.

The columns are strings without a CHECK constraint: only the rows change. Plain ``UPDATE``
statements, the same on SQLite and PostgreSQL; the downgrade restores the old values.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (table, column, old value, new value)
_RENAMES: tuple[tuple[str, str, str, str], ...] = (
    ("statement", "state", "en_cours", "waiting"),
    ("statement", "state", "succes", "produced"),
    ("statement", "state", "echec", "failed"),
    ("secure_link", "kind", "saisie", "entry"),
    ("secure_link", "kind", "maj", "update"),
)
_MISMATCH_CODE = "balance_mismatch"


def _rename(table: str, column: str, old: str, new: str) -> None:
    op.execute(
        sa.text(f"UPDATE {table} SET {column} = :new WHERE {column} = :old").bindparams(
            old=old, new=new
        )
    )


def upgrade() -> None:
    for table, column, old, new in _RENAMES:
        _rename(table, column, old, new)
    op.execute(
        sa.text(
            "UPDATE bank_event SET kind = 'balance_mismatch' "
            "WHERE kind = 'connection_error' AND error_code = :code"
        ).bindparams(code=_MISMATCH_CODE)
    )


def downgrade() -> None:
    op.execute(
        sa.text(
            "UPDATE bank_event SET kind = 'connection_error' "
            "WHERE kind = 'balance_mismatch' AND error_code = :code"
        ).bindparams(code=_MISMATCH_CODE)
    )
    for table, column, old, new in _RENAMES:
        _rename(table, column, new, old)

"""Statement downloads: file names, reading a statement's stored files, the ZIP of several.

Shared by the command line (``statements download``) and the portal's tracking page, so that
a file has the same name and the same bytes whichever way it is fetched.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from releves_mailer.cfonb.account import iban_for_file_name
from releves_mailer.db.models import Statement, StatementFile

__all__ = ["CFONB", "CSV", "ExportFile", "file_name", "file_names", "read_files", "zip_files"]

CFONB = "cfonb"
CSV = "csv"


@dataclass(frozen=True, slots=True)
class ExportFile:
    """One downloadable file of a statement."""

    statement_id: int
    kind: str
    name: str
    content: bytes


def file_names(statement: Statement) -> tuple[str, str]:
    """``(cfonb name, deleted-transactions CSV name)`` of a statement: the names its mail's
    attachments carry, ``Releve_<IBAN>_<AAAAMMJJ>-<AAAAMMJJ>.cfonb``."""
    account = iban_for_file_name(statement.iban) or f"compte{statement.account_id}"
    stem = f"{account}_{statement.period_start:%Y%m%d}-{statement.period_end:%Y%m%d}"
    return f"Releve_{stem}.cfonb", f"Transactions_supprimees_{stem}.csv"


def file_name(statement: Statement, kind: str) -> str:
    cfonb, csv = file_names(statement)
    return cfonb if kind == CFONB else csv


async def read_files(
    session: AsyncSession, statements: Sequence[Statement], kinds: Iterable[str] = (CFONB, CSV)
) -> list[ExportFile]:
    """The stored files of ``statements`` (in their order, CFONB before CSV)."""
    wanted = tuple(kinds)
    by_id = {statement.id: statement for statement in statements}
    if not by_id:
        return []
    rows = await session.execute(
        select(StatementFile.statement_id, StatementFile.kind, StatementFile.content).where(
            StatementFile.statement_id.in_(by_id), StatementFile.kind.in_(wanted)
        )
    )
    found = {(statement_id, kind): content for statement_id, kind, content in rows}
    files: list[ExportFile] = []
    for statement in statements:
        for kind in wanted:
            content = found.get((statement.id, kind))
            if content is not None:
                files.append(
                    ExportFile(statement.id, kind, file_name(statement, kind), bytes(content))
                )
    return files


def zip_files(files: Iterable[ExportFile]) -> bytes:
    """A deterministic ZIP (fixed timestamps) of ``files``; blocking: run it in a thread."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for item in files:
            info = zipfile.ZipInfo(item.name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, item.content)
    return buffer.getvalue()

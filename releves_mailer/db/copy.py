"""Copying an installation's database to another one (SQLite to PostgreSQL): every table,
in one snapshot of the source and one transaction on the target, row counts checked.

The target is migrated to the same revision first and must hold no row: a copy never
merges into live data. Rows go in by foreign-key order, in batches; a column that points
into its own table (a secondary account's primary, a pending transaction's booked
replacement) is filled in a second pass, since the row it names may come later. On
PostgreSQL the id sequences then restart after the highest copied id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Column, Integer, Table, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from releves_mailer.db.base import Base
from releves_mailer.db.engine import Database
from releves_mailer.db.migrate import check_schema, current_heads, upgrade
from releves_mailer.errors import UserError

__all__ = ["CopyRefused", "TableCount", "copy_database"]

#: Rows read and written at a time.
BATCH_ROWS = 2000


class CopyRefused(UserError):
    """The copy cannot start (target not empty or not at the source's revision)."""


@dataclass(frozen=True, slots=True)
class TableCount:
    table: str
    rows: int


def _tables() -> list[Table]:
    import releves_mailer.db.models  # noqa: F401  (registers every table)

    return list(Base.metadata.sorted_tables)


def _self_references(table: Table) -> list[Column[int]]:
    return [
        column
        for column in table.columns
        if any(key.column.table is table for key in column.foreign_keys)
    ]


async def _count(connection: AsyncConnection, table: Table) -> int:
    return int(await connection.scalar(select(func.count()).select_from(table)) or 0)


async def copy_database(
    source: Database,
    target: Database,
    *,
    progress: Callable[[str, int], None] | None = None,
) -> list[TableCount]:
    """Copy every row of ``source`` into the empty ``target``; the rows of each table.

    Raises :class:`CopyRefused` when the target holds rows, or when the source is not at
    the code's schema revision (run ``db upgrade`` on it first)."""
    await check_schema(source)
    await upgrade(target)
    if await current_heads(target) != await current_heads(source):
        raise CopyRefused("la base cible n'est pas à la même révision que la base source")
    tables = _tables()
    async with target.engine.connect() as connection:
        for table in tables:
            rows = await _count(connection, table)
            if rows:
                raise CopyRefused(
                    f"la base cible n'est pas vide : table « {table.name} » ({rows} ligne(s)) ; "
                    "une copie ne se fait que vers une base neuve"
                )
    copied: list[TableCount] = []
    # One read transaction on the source: a snapshot, even while another process writes.
    async with source.engine.connect() as reader, target.engine.begin() as writer:
        await reader.begin()
        for table in tables:
            rows = await _copy_table(reader, writer, table)
            copied.append(TableCount(table.name, rows))
            if progress is not None:
                progress(table.name, rows)
        if writer.dialect.name == "postgresql":
            await _restart_sequences(writer, tables)
        for table, done in zip(tables, copied, strict=True):
            found = await _count(writer, table)
            if found != done.rows:
                raise RuntimeError(f"table {table.name}: {done.rows} rows read, {found} written")
    return copied


async def _copy_table(reader: AsyncConnection, writer: AsyncConnection, table: Table) -> int:
    later = _self_references(table)
    key = list(table.primary_key.columns)
    rows = 0
    result = await reader.stream(select(table).order_by(*key))
    async for batch in result.partitions(BATCH_ROWS):
        values = [dict(row._mapping) for row in batch]
        if later:
            first = [{**row, **{column.name: None for column in later}} for row in values]
            await writer.execute(insert(table), first)
        else:
            await writer.execute(insert(table), values)
        rows += len(values)
    if later:
        await _fill_self_references(reader, writer, table, later)
    return rows


async def _fill_self_references(
    reader: AsyncConnection, writer: AsyncConnection, table: Table, columns: list[Column[int]]
) -> None:
    (key,) = table.primary_key.columns
    names = [column.name for column in columns]
    query = select(key, *columns).where(or_(*(column.is_not(None) for column in columns)))
    result = await reader.stream(query)
    async for batch in result.partitions(BATCH_ROWS):
        for row in batch:
            await writer.execute(
                update(table)
                .where(key == row[0])
                .values({name: row[index + 1] for index, name in enumerate(names)})
            )


async def _restart_sequences(writer: AsyncConnection, tables: list[Table]) -> None:
    for table in tables:
        for column in table.primary_key.columns:
            if not isinstance(column.type, Integer) or column.autoincrement is False:
                continue
            sequence = await writer.scalar(
                text("SELECT pg_get_serial_sequence(:table, :column)"),
                {"table": table.name, "column": column.name},
            )
            if sequence is None:
                continue
            highest = await writer.scalar(select(func.max(column)))
            await writer.execute(
                text("SELECT setval(CAST(:sequence AS regclass), :value, :called)"),
                {"sequence": sequence, "value": highest or 1, "called": highest is not None},
            )

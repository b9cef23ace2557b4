"""The deposit store of an account: each file kept once (by SHA-256) with what was read in it."""

from __future__ import annotations

import dataclasses
import hashlib

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from releves_mailer.clock import Clock
from releves_mailer.db.models import EdiDeclaration, EdiDeposit, PortalAccount
from releves_mailer.edi.read import Interchange

__all__ = ["SOURCES", "Stored", "file_hash", "store_deposit"]

#: Where a deposit came from.
SOURCES = frozenset({"upload", "command", "mail"})
MAX_FILE_NAME = 255


@dataclasses.dataclass(frozen=True, slots=True)
class Stored:
    """One file filed: its deposit id, whether it was new, how many declarations it holds."""

    deposit_id: int
    new: bool
    declarations: int


def file_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _clip(value: str, length: int) -> str:
    return value[:length]


async def store_deposit(
    session: AsyncSession,
    clock: Clock,
    account: PortalAccount,
    *,
    file_name: str,
    data: bytes,
    read: Interchange,
    source: str,
) -> Stored:
    """Keep ``data`` (already read into ``read``) for ``account``, unless the same bytes are
    already there; the caller's transaction holds the deposit and its declarations."""
    assert source in SOURCES
    digest = file_hash(data)
    existing = await session.scalar(
        select(EdiDeposit).where(EdiDeposit.account_id == account.id, EdiDeposit.sha256 == digest)
    )
    if existing is not None:
        return Stored(existing.id, False, len(read.declarations))
    deposit = EdiDeposit(
        account_id=account.id,
        sha256=digest,
        file_name=_clip(file_name, MAX_FILE_NAME),
        source=source,
        size=len(data),
        reference=_clip(read.reference, 35),
        prepared_on=read.prepared_on,
        received_at=clock.now(),
    )
    session.add(deposit)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        # The same file filed by another writer between our check and our insert.
        again = await session.scalar(
            select(EdiDeposit.id).where(
                EdiDeposit.account_id == account.id, EdiDeposit.sha256 == digest
            )
        )
        return Stored(int(again or 0), False, len(read.declarations))
    session.add_all(
        EdiDeclaration(
            deposit_id=deposit.id,
            account_id=account.id,
            procedure=d.procedure,
            form=_clip(d.form, 35),
            siren=d.siren,
            nic=d.nic,
            company_name=_clip(d.name, 350),
            period_start=d.period_start,
            period_end=d.period_end,
            deposited_on=d.deposited_on,
        )
        for d in read.declarations
    )
    await session.flush()
    return Stored(deposit.id, True, len(read.declarations))

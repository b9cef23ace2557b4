"""Discovery of redevables from an account's EDI deposits ("Remonter mes redevables EDI").

The first analysis of an account looks at the deposits of the last 18 months (from the
clock's business date); each later one at the deposits dated from the previous analysis's
date on, and at the files filed since that analysis (a late upload of an older deposit is not
skipped), still within 18 months. Each SIREN found that is not already a redevable of the
account's family (the primary account and its secondaries) becomes a redevable of the
account, through the usual Annexe 1 rules; the others are counted, not changed. Two analyses
of one account never run at once (a lock row, taken in its own transaction).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from releves_mailer.clock import PARIS, Clock, business_today
from releves_mailer.db import Database
from releves_mailer.db.models import (
    EdiAnalysis,
    EdiAnalysisLock,
    EdiDeclaration,
    EdiDeposit,
    PortalAccount,
    Redevable,
)
from releves_mailer.errors import UserError
from releves_mailer.portfolio.redevables import create_redevable, validate_redevable

__all__ = [
    "LOCK_TIMEOUT",
    "WINDOW_MONTHS",
    "AnalysisRunning",
    "Discovery",
    "DiscoverySettings",
    "Found",
    "analysis_lock",
    "discover",
    "months_before",
]

WINDOW_MONTHS = 18
#: A lock older than this is a crashed run's: the next analysis takes it over.
LOCK_TIMEOUT = dt.timedelta(hours=1)
NAME_LENGTH = 35


@dataclasses.dataclass(frozen=True, slots=True)
class DiscoverySettings:
    """The schedule given to created redevables (Annexe 1 fields 6 to 8)."""

    periodicity: str = "MENSUELLE"
    month: int | None = None
    #: 0: the last day of the month.
    day: int | None = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Found:
    """A company of the deposits and what the analysis did with it (``reason`` if refused)."""

    siren: str
    nic: str
    name: str
    procedure: str
    deposited_on: dt.date
    redevable_id: int | None = None
    reason: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Discovery:
    """The report of one analysis."""

    analysed_at: dt.datetime
    window_start: dt.date
    dry_run: bool
    declarations: int
    created: Sequence[Found]
    present: Sequence[Found]
    refused: Sequence[Found]


def months_before(day: dt.date, months: int) -> dt.date:
    """``day`` moved back ``months`` months, clamped to the end of a shorter month."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    for candidate in range(day.day, 27, -1):
        try:
            return dt.date(year, month, candidate)
        except ValueError:
            continue
    return dt.date(year, month, min(day.day, 28))


class AnalysisRunning(UserError):
    """Another analysis of the account holds its lock."""


@asynccontextmanager
async def analysis_lock(database: Database, clock: Clock, account_id: int) -> AsyncIterator[None]:
    """Hold the account's analysis lock, or refuse when another analysis runs."""
    now = clock.now()
    async with database.session() as session:
        await session.execute(
            delete(EdiAnalysisLock).where(
                EdiAnalysisLock.account_id == account_id,
                EdiAnalysisLock.started_at < now - LOCK_TIMEOUT,
            )
        )
    try:
        async with database.session() as session:
            session.add(EdiAnalysisLock(account_id=account_id, started_at=now))
    except IntegrityError:
        raise AnalysisRunning(
            "une analyse des dépôts EDI de ce compte est déjà en cours : réessayez dans "
            "quelques minutes"
        ) from None
    try:
        yield
    finally:
        async with database.session() as session:
            await session.execute(
                delete(EdiAnalysisLock).where(EdiAnalysisLock.account_id == account_id)
            )


def _split_name(name: str) -> tuple[str, str]:
    """The declared name cut to Annexe 1 fields 3 and 4 (35 + 35), at a word when possible."""
    text = " ".join(name.split())
    if len(text) <= NAME_LENGTH:
        return text, ""
    cut = text.rfind(" ", 0, NAME_LENGTH + 1)
    if cut <= 0:
        cut = NAME_LENGTH
    first, rest = text[:cut].strip(), text[cut:].strip()
    return first, rest[:NAME_LENGTH].strip()


async def discover(
    session: AsyncSession,
    clock: Clock,
    account: PortalAccount,
    settings: DiscoverySettings,
    *,
    dry_run: bool = False,
) -> Discovery:
    """Analyse the account's deposits in the caller's transaction (the caller holds the lock)."""
    now = clock.now()
    floor = months_before(business_today(clock), WINDOW_MONTHS)
    previous = await session.scalar(
        select(EdiAnalysis)
        .where(EdiAnalysis.account_id == account.id)
        .order_by(EdiAnalysis.analysed_at.desc(), EdiAnalysis.id.desc())
        .limit(1)
    )
    query = (
        select(
            EdiDeclaration.siren,
            EdiDeclaration.nic,
            EdiDeclaration.company_name,
            EdiDeclaration.procedure,
            EdiDeclaration.deposited_on,
        )
        .where(EdiDeclaration.account_id == account.id)
        .order_by(EdiDeclaration.deposited_on.desc(), EdiDeclaration.id.desc())
    )
    if previous is None:
        window_start = floor
        query = query.where(EdiDeclaration.deposited_on >= floor)
    else:
        window_start = max(floor, previous.analysed_at.astimezone(PARIS).date())
        late = (
            select(EdiDeposit.id)
            .where(
                EdiDeposit.id == EdiDeclaration.deposit_id,
                EdiDeposit.received_at > previous.analysed_at,
            )
            .exists()
        )
        query = query.where(
            EdiDeclaration.deposited_on >= floor,
            or_(EdiDeclaration.deposited_on >= window_start, late),
        )
    rows = (await session.execute(query)).all()
    known = set(
        await session.scalars(
            select(Redevable.siren).where(Redevable.family_id == account.family_id)
        )
    )
    created: list[Found] = []
    present: list[Found] = []
    refused: list[Found] = []
    seen: set[str] = set()
    for siren, nic, name, procedure, deposited_on in rows:
        if siren in seen:
            continue
        seen.add(siren)
        found = Found(siren, nic, name, procedure, deposited_on)
        if siren in known:
            present.append(found)
            continue
        first, second = _split_name(name)
        data, errors = validate_redevable(
            siren=siren,
            nic=nic,
            company_name=first,
            company_name_2=second,
            periodicity=settings.periodicity,
            month=settings.month,
            day=settings.day,
        )
        if data is None:
            reason = "; ".join(e.message for e in errors)
            refused.append(dataclasses.replace(found, reason=reason))
            continue
        if dry_run:
            created.append(found)
            continue
        try:
            redevable = await create_redevable(session, clock, account, data)
        except UserError as error:
            refused.append(dataclasses.replace(found, reason=error.message))
            continue
        created.append(dataclasses.replace(found, redevable_id=redevable.id))
    if not dry_run:
        session.add(
            EdiAnalysis(
                account_id=account.id,
                analysed_at=now,
                window_start=window_start,
                created=len(created),
                already_present=len(present),
                refused=len(refused),
            )
        )
        await session.flush()
    return Discovery(now, window_start, dry_run, len(rows), created, present, refused)

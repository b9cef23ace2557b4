"""EDI deposits for the portal, the command line and the mail path: filing files, analyses.

Each file is read in a thread (parsing is CPU work) and filed in its own transaction: a bad
file is refused whole and named, the others of the same batch are still filed. An analysis
holds the account's lock, so two never run at once, whoever starts them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
import logging
from collections.abc import Sequence

from sqlalchemy import delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from releves_mailer.clock import Clock
from releves_mailer.config import Config
from releves_mailer.db import Database
from releves_mailer.db.models import EdiAnalysis, EdiAutoDiscovery, EdiDeposit, PortalAccount
from releves_mailer.edi.discover import (
    AnalysisRunning,
    Discovery,
    DiscoverySettings,
    Found,
    analysis_lock,
    discover,
)
from releves_mailer.edi.read import EdiError, read_interchange
from releves_mailer.edi.store import store_deposit
from releves_mailer.errors import UserError
from releves_mailer.waiting import wait_any

__all__ = [
    "MAX_FILES",
    "AnalysisJobs",
    "Discovery",
    "DiscoverySettings",
    "EdiOverview",
    "EdiService",
    "FiledFile",
    "Found",
    "discovery_settings",
]

_log = logging.getLogger(__name__)

#: Files of one batch (an upload, a command, a mail).
MAX_FILES = 100
#: How often the subscription option analyses an account's new deposits.
AUTO_EVERY = dt.timedelta(hours=24)


@dataclasses.dataclass(frozen=True, slots=True)
class FiledFile:
    """What became of one file: filed (new or already there) or refused with the reason."""

    file_name: str
    ok: bool
    new: bool = False
    declarations: int = 0
    error: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class EdiOverview:
    """An account's deposits at a glance, for the Paramétrage screen."""

    deposits: int
    last_analysis: dt.datetime | None
    auto_discovery: bool


async def _account(session: AsyncSession, account_id: int) -> PortalAccount:
    account = await session.get(PortalAccount, account_id)
    if account is None:
        raise UserError(f"compte {account_id} introuvable")
    return account


def discovery_settings(config: Config) -> DiscoverySettings:
    """The schedule of created redevables, from ``[edi]``."""
    return DiscoverySettings(config.edi.periodicity, config.edi.month, config.edi.day)


class EdiService:
    """Deposits and analyses of the accounts, each call its own transaction(s)."""

    def __init__(
        self, database: Database, clock: Clock, settings: DiscoverySettings | None = None
    ) -> None:
        self.database = database
        self.clock = clock
        self.settings = settings or DiscoverySettings()

    async def file_deposits(
        self, account_id: int, files: Sequence[tuple[str, bytes]], *, source: str
    ) -> list[FiledFile]:
        """Read and file each of ``files`` (name, bytes) for the account."""
        if len(files) > MAX_FILES:
            raise UserError(f"trop de fichiers ({len(files)}, {MAX_FILES} au plus par envoi)")
        results = []
        for name, data in files:
            try:
                read = await asyncio.to_thread(read_interchange, data, name)
            except EdiError as error:
                results.append(FiledFile(name, ok=False, error=str(error)))
                continue
            async with self.database.session() as session:
                stored = await store_deposit(
                    session,
                    self.clock,
                    await _account(session, account_id),
                    file_name=name,
                    data=data,
                    read=read,
                    source=source,
                )
            results.append(FiledFile(name, True, stored.new, stored.declarations))
        return results

    async def discover(self, account_id: int, *, dry_run: bool = False) -> Discovery:
        """Analyse the account's deposits (refused while another analysis of it runs)."""
        async with (
            analysis_lock(self.database, self.clock, account_id),
            self.database.session() as session,
        ):
            return await discover(
                session,
                self.clock,
                await _account(session, account_id),
                self.settings,
                dry_run=dry_run,
            )

    async def overview(self, account_id: int) -> EdiOverview:
        async with self.database.session() as session:
            deposits = await session.scalar(
                select(func.count()).where(EdiDeposit.account_id == account_id)
            )
            last = await session.scalar(
                select(func.max(EdiAnalysis.analysed_at)).where(
                    EdiAnalysis.account_id == account_id
                )
            )
            auto = await session.get(EdiAutoDiscovery, account_id)
        return EdiOverview(int(deposits or 0), last, auto is not None)

    async def set_auto_discovery(self, account_id: int, enabled: bool) -> None:
        """The subscription option "création automatique des redevables"."""
        async with self.database.session() as session:
            current = await session.get(EdiAutoDiscovery, account_id)
            if enabled and current is None:
                session.add(EdiAutoDiscovery(account_id=account_id, enabled_at=self.clock.now()))
            elif not enabled and current is not None:
                await session.execute(
                    delete(EdiAutoDiscovery).where(EdiAutoDiscovery.account_id == account_id)
                )

    async def due_auto_discoveries(self) -> list[int]:
        """Accounts with the option on whose last analysis is a day old, or never ran."""
        since = self.clock.now() - AUTO_EVERY
        async with self.database.session() as session:
            last = (
                select(func.max(EdiAnalysis.analysed_at))
                .where(EdiAnalysis.account_id == EdiAutoDiscovery.account_id)
                .scalar_subquery()
            )
            return list(
                await session.scalars(
                    select(EdiAutoDiscovery.account_id).where(or_(last.is_(None), last <= since))
                )
            )

    async def run_auto_discoveries(self) -> int:
        """One pass of the subscription option; returns how many analyses ran."""
        done = 0
        for account_id in await self.due_auto_discoveries():
            try:
                report = await self.discover(account_id)
            except UserError as error:
                _log.info("automatic EDI analysis of account %d skipped: %s", account_id, error)
                continue
            done += 1
            _log.info(
                "automatic EDI analysis of account %d: %d created, %d present, %d refused",
                account_id,
                len(report.created),
                len(report.present),
                len(report.refused),
            )
        return done

    async def run(self, stop: asyncio.Event, *, every: float = 3600) -> None:
        """The daemon's loop of the subscription option, until ``stop``."""
        while not stop.is_set():
            try:
                await self.run_auto_discoveries()
            except Exception:
                _log.exception("automatic EDI analyses failed")
            await wait_any(stop, seconds=every)


@dataclasses.dataclass
class _Job:
    account_id: int
    task: asyncio.Task[Discovery]


class AnalysisJobs:
    """Analyses started from the portal, run as tasks of the daemon (not inside a request).

    A job is looked up by its number and by the account that started it; finished jobs are
    kept until read once more than ``keep`` jobs exist. While another analysis of the account
    runs (the daemon's daily one, a command), the job waits for it, retrying every
    ``retry_every`` seconds for at most ``wait_for`` seconds, instead of failing at once.
    """

    def __init__(
        self,
        service: EdiService,
        keep: int = 200,
        *,
        retry_every: float = 1.0,
        wait_for: float = 600.0,
    ) -> None:
        self._service = service
        self._jobs: dict[int, _Job] = {}
        self._numbers = itertools.count(1)
        self._keep = keep
        self._retry_every = retry_every
        self._wait_for = wait_for

    async def _run(self, account_id: int) -> Discovery:
        waited = 0.0
        while True:
            try:
                return await self._service.discover(account_id)
            except AnalysisRunning:
                if waited >= self._wait_for:
                    raise
            await asyncio.sleep(self._retry_every)
            waited += self._retry_every

    def start(self, account_id: int) -> int:
        for number, job in self._jobs.items():
            if job.account_id == account_id and not job.task.done():
                return number
        number = next(self._numbers)
        task = asyncio.get_running_loop().create_task(self._run(account_id))
        self._jobs[number] = _Job(account_id, task)
        while len(self._jobs) > self._keep:
            oldest = next(iter(self._jobs))
            if not self._jobs[oldest].task.done():
                break
            del self._jobs[oldest]
        return number

    def result(self, account_id: int, number: int) -> Discovery | UserError | None:
        """None while running; the report, or the refusal, once done; unknown job: refusal."""
        job = self._jobs.get(number)
        if job is None or job.account_id != account_id:
            return UserError("analyse inconnue ou expirée")
        if not job.task.done():
            return None
        error = job.task.exception()
        if error is None:
            return job.task.result()
        if isinstance(error, UserError):
            return error
        _log.error("EDI analysis of account %d failed", account_id, exc_info=error)
        return UserError("l'analyse a échoué sur une erreur inattendue ; réessayez plus tard")

    async def close(self) -> None:
        for job in self._jobs.values():
            job.task.cancel()
        await asyncio.gather(*(job.task for job in self._jobs.values()), return_exceptions=True)

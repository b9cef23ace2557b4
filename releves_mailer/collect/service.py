"""Collection service: refreshes connections, runs the due work and simulates nights.

One object holds what collection needs (database, clock, providers, key ring, refresh plan,
sync settings, the after-refresh hook), so that the daemon, the commands, the benchmarks and
the tests call :meth:`CollectionService.refresh`, :meth:`~CollectionService.run_due` and
:meth:`~CollectionService.simulate` without handing those values along.

:meth:`~CollectionService.run_due` is what the daemon, ``collect`` and ``simulate`` all call:
it refreshes the due connections (concurrently, at most ``max_concurrency_per_provider`` at a
time per provider; one failure never stops the others), then cuts every statement due before
today. It is idempotent at a given clock time.

Several workers (daemons sharing one PostgreSQL database) may run it at once: each batch of
due connections is claimed first (:mod:`releves_mailer.db.claims`), and a connection whose
refresh another worker has done since it was found due is left alone, so each refresh is
done once; the cut claims its accounts the same way.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from releves_mailer.clock import Clock, ManualClock
from releves_mailer.collect.provider import Provider
from releves_mailer.collect.scheduler import ConnectionClock, RefreshPlan, is_refresh_due
from releves_mailer.collect.simulate import (
    SimulationReport,
    read_progress,
    simulation_steps,
    write_progress,
)
from releves_mailer.collect.sync import (
    Pull,
    RefreshResult,
    SyncSettings,
    prepare_connections,
    pull_connection,
    write_pulls,
)
from releves_mailer.db import Database
from releves_mailer.db.claims import claim_rows, release_rows, worker_identity
from releves_mailer.db.models.collect import BankConnection, ConnectionState
from releves_mailer.db.models.portfolio import Redevable
from releves_mailer.logs import log_context
from releves_mailer.metrics import Metrics
from releves_mailer.signing.secrets import KeyRing
from releves_mailer.statements.cut import cut_due_statements
from releves_mailer.statements.storage import CutReport

__all__ = ["AfterRefresh", "CollectionService", "RunReport"]

log = logging.getLogger(__name__)

#: The hook run on each refresh result (the alert service's).
AfterRefresh = Callable[[RefreshResult], Awaitable[object]]

#: Providers computed in this process (no network): running their refreshes concurrently
#: only makes database writers wait for each other, so they run one at a time.
IN_PROCESS_PROVIDERS = frozenset({"testbank"})


@dataclass(slots=True)
class RunReport:
    """What one :meth:`CollectionService.run_due` call did."""

    at: dt.datetime
    refreshed: list[RefreshResult] = field(default_factory=list)
    refresh_errors: dict[int, str] = field(default_factory=dict)
    statements: CutReport = field(default_factory=CutReport)

    @property
    def statements_cut(self) -> int:
        return self.statements.count("cut")

    @property
    def refresh_count(self) -> int:
        """Connections this run tried to refresh."""
        return len(self.refreshed) + len(self.refresh_errors)

    @property
    def failed_refreshes(self) -> int:
        """Refreshes that did not succeed: a bank error, or no provider to ask."""
        return sum(1 for result in self.refreshed if not result.ok) + len(self.refresh_errors)


class CollectionService:
    """Collection of bank data and the statements it makes due, with its dependencies."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        providers: Mapping[str, Provider],
        keyring: KeyRing,
        *,
        plan: RefreshPlan | None = None,
        settings: SyncSettings | None = None,
        after_refresh: AfterRefresh | None = None,
        metrics: Metrics | None = None,
        worker: str | None = None,
    ) -> None:
        self.database = database
        #: This worker's name on its claims (the daemon's; a command's own otherwise).
        self.worker = worker or worker_identity()
        self.metrics = metrics
        self.clock = clock
        self.providers = providers
        self.keyring = keyring
        self.plan = plan or RefreshPlan()
        self.settings = settings or SyncSettings()
        self.after_refresh = after_refresh

    # -- refreshing ----------------------------------------------------------------------------

    async def refresh(self, connection_ids: Sequence[int]) -> list[RefreshResult]:
        """Refresh connections: one read, the provider calls, then one write transaction.

        Each connection is checked and its accounts and transactions brought up to date, in
        the order given (results come back in that order). Provider errors are recorded on
        the connection (state, code, consecutive failures, event) and reported in its result,
        never raised. The whole batch is written in a single transaction, which locks the
        connection rows in ascending id order first: any other exception (an unknown
        connection id or provider, a database error) leaves the database untouched for the
        whole batch. A batch holds the write lock while it is written (a few milliseconds per
        connection), so batches of a few dozen connections suit SQLite. The after-refresh
        hook is not run here (:meth:`run_due` runs it).
        """
        ids = list(connection_ids)
        if len(set(ids)) != len(ids):
            raise ValueError("refresh: a connection id is given twice")
        results: list[RefreshResult | None] = [None] * len(ids)
        plans = await prepare_connections(self.database, ids, self.providers, self.keyring)
        pulls: list[Pull] = []
        for index, plan in enumerate(plans):
            if not plan.connection.active:
                results[index] = RefreshResult(
                    plan.connection.id, ok=False, error_code=plan.connection.error_code
                )
                continue
            with log_context(connection_id=plan.connection.id):
                pulls.append(await pull_connection(plan, index, self.clock, self.settings))
        for pull, result in zip(
            pulls, await write_pulls(self.database, pulls, self.settings), strict=True
        ):
            results[pull.index] = result
        done = [result for result in results if result is not None]
        assert len(done) == len(ids)
        return done

    async def refresh_one(self, connection_id: int) -> RefreshResult:
        """:meth:`refresh` of one connection."""
        (result,) = await self.refresh([connection_id])
        return result

    # -- the due work --------------------------------------------------------------------------

    async def run_due(
        self,
        *,
        force_refresh: bool = False,
        redevable_id: int | None = None,
        refresh: bool = True,
        refresh_now: Collection[int] = (),
    ) -> RunReport:
        """Refresh the connections whose refresh is due, then cut every due statement.

        ``force_refresh`` refreshes every connection (``collect``); ``refresh_now`` adds the
        connections named (one a client has just repaired, one a webhook names) to the due
        ones; ``redevable_id`` limits the work to one redevable. The after-refresh hook sees
        every refresh result before any statement is cut (the alert hook: links and alerts).
        Call it in a loop (the daemon: every few minutes) or at chosen clock times
        (``simulate``); calling it again at the same clock time does nothing more.
        """
        now = self.clock.now()
        report = RunReport(at=now)
        if refresh:
            due = await _due_connections(
                self.database,
                now,
                self.plan,
                force=force_refresh,
                redevable_id=redevable_id,
                refresh_now=frozenset(refresh_now),
            )
            forced = {connection_id for connection_id, _ in due} if force_refresh else set()
            await self._refresh_all(due, report, forced | set(refresh_now))
            if self.metrics is not None:
                self._count_refreshes(dict(due), report, self.metrics)
            if self.after_refresh is not None:
                for result in report.refreshed:
                    try:
                        with log_context(connection_id=result.connection_id):
                            await self.after_refresh(result)
                    except Exception:  # an alert that failed never holds statements back
                        log.exception(
                            "after-refresh hook of connection %s failed", result.connection_id
                        )
        report.statements = await cut_due_statements(
            self.database,
            clock=self.clock,
            timing=self.plan.timing,
            redevable_id=redevable_id,
            worker=self.worker,
            lease=self.plan.lease,
        )
        if self.metrics is not None:
            self.metrics.cut(report.statements_cut)
        return report

    def _count_refreshes(
        self, providers: Mapping[int, str], report: RunReport, metrics: Metrics
    ) -> None:
        for result in report.refreshed:
            code = None if result.ok else (result.error_code or "unknown")
            metrics.refreshed(providers[result.connection_id], code)
        for connection_id in report.refresh_errors:
            provider = providers[connection_id]
            configured = provider in self.providers
            metrics.refreshed(provider, "internal_error" if configured else "no_provider")

    async def _claim(self, ids: list[int], forced: Collection[int]) -> list[int]:
        """Claim the connections of a batch still due (another worker may have refreshed
        some since they were found due, or hold them now)."""
        now = self.clock.now()
        plan = self.plan

        def still_due(row: Any) -> bool:
            connection_id: int = row[0]
            checked: dt.datetime | None = row[1]
            succeeded: dt.datetime | None = row[2]
            return connection_id in forced or is_refresh_due(
                ConnectionClock(connection_id, checked, succeeded), now, plan
            )

        return await claim_rows(
            self.database,
            BankConnection,
            ids,
            worker=self.worker,
            now=now,
            lease=plan.lease,
            columns=(BankConnection.last_check_at, BankConnection.last_success_at),
            keep=still_due,
        )

    async def _release(self, ids: list[int]) -> None:
        try:
            await release_rows(self.database, BankConnection, ids, worker=self.worker)
        except Exception:  # the lease ends by itself
            log.warning("claims of connections %s not released", ids, exc_info=True)

    async def _refresh_all(
        self, due: Sequence[tuple[int, str]], report: RunReport, forced: Collection[int] = ()
    ) -> None:
        """Refresh in batches (one write transaction each), a few batches at once per provider.

        Each batch is claimed first and released after its write; a batch that fails as a
        whole (a database error) is retried connection by connection, so that one connection
        never sinks the others.
        """
        by_provider: dict[str, list[int]] = {}
        for connection_id, provider in due:
            if provider not in self.providers:
                report.refresh_errors[connection_id] = f"fournisseur « {provider} » non configuré"
                continue
            by_provider.setdefault(provider, []).append(connection_id)

        async def batch(ids: list[int], semaphore: asyncio.Semaphore) -> None:
            async with semaphore:
                ids = await self._claim(ids, forced)
                if not ids:
                    return
                try:
                    results = await self._refresh_claimed(ids, report)
                finally:
                    await self._release(ids)
            report.refreshed.extend(results)

        plan = self.plan
        tasks = []
        for provider, ids in by_provider.items():
            size = 1 if provider in IN_PROCESS_PROVIDERS else plan.max_concurrency_per_provider
            semaphore = asyncio.Semaphore(size)
            for start in range(0, len(ids), plan.refresh_batch):
                tasks.append(batch(ids[start : start + plan.refresh_batch], semaphore))
        await asyncio.gather(*tasks)
        report.refreshed.sort(key=lambda result: result.connection_id)

    async def _refresh_claimed(self, ids: list[int], report: RunReport) -> list[RefreshResult]:
        try:
            results = await self.refresh(ids)
            # Which worker refreshed what: several daemons share the nights.
            log.debug("worker %s refreshed connections %s", self.worker, ids)
            return results
        except Exception:
            log.warning("batch refresh of %s failed, retrying one by one", ids, exc_info=True)
        results = []
        for connection_id in ids:
            try:
                with log_context(connection_id=connection_id):
                    results.append(await self.refresh_one(connection_id))
            except Exception as error:  # one connection never sinks the batch
                log.exception("refresh of connection %s failed", connection_id)
                report.refresh_errors[connection_id] = f"{type(error).__name__}: {error}"
        return results

    # -- simulated nights ----------------------------------------------------------------------

    async def simulate(
        self,
        first: dt.date,
        last: dt.date,
        *,
        step_minutes: int = 60,
        progress_file: Path | None = None,
        on_night: Callable[[dt.date], None] | None = None,
    ) -> SimulationReport:
        """Run the due work over the nights opening from ``first`` to ``last`` (Paris dates).

        The service's clock must be a manual clock, the one the providers read (the test bank
        follows it); see :mod:`releves_mailer.collect.simulate`. The after-refresh hook runs
        as in production, so failures count toward links and alerts.
        """
        clock = self.clock
        if not isinstance(clock, ManualClock):
            raise TypeError("a simulation moves a manual clock")
        key = {"from": first.isoformat(), "to": last.isoformat(), "step": str(step_minutes)}
        done = None if progress_file is None else read_progress(progress_file, key)
        report = SimulationReport()
        current_night: dt.date | None = None
        for night, moment in simulation_steps(first, last, self.plan, step_minutes):
            if current_night is not None and night != current_night and on_night is not None:
                on_night(current_night)
            current_night = night
            if done is not None and moment <= done:
                report.skipped_steps += 1
                continue
            clock.set(moment)
            result = await self.run_due()
            report.steps += 1
            report.refreshes += result.refresh_count
            report.refresh_errors += result.failed_refreshes
            report.statements += result.statements.count("cut")
            report.waiting += result.statements.count("waiting")
            report.failed += result.statements.count("failed")
            if progress_file is not None:
                write_progress(progress_file, key, moment)
        if current_night is not None and on_night is not None:
            on_night(current_night)
        return report


async def _due_connections(
    database: Database,
    now: dt.datetime,
    plan: RefreshPlan,
    *,
    force: bool,
    redevable_id: int | None,
    refresh_now: Collection[int],
) -> list[tuple[int, str]]:
    query = (
        select(
            BankConnection.id,
            BankConnection.provider,
            BankConnection.last_check_at,
            BankConnection.last_success_at,
        )
        .join(Redevable, Redevable.id == BankConnection.redevable_id)
        .where(BankConnection.active.is_(True))
        .where(BankConnection.state != ConnectionState.CLOSED)
        .where(Redevable.active.is_(True))
        .order_by(BankConnection.id)
    )
    if redevable_id is not None:
        query = query.where(BankConnection.redevable_id == redevable_id)
    async with database.session() as session:
        rows = (await session.execute(query)).all()
    return [
        (connection_id, provider)
        for connection_id, provider, checked, succeeded in rows
        if force
        or connection_id in refresh_now
        or is_refresh_due(ConnectionClock(connection_id, checked, succeeded), now, plan)
    ]

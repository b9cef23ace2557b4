"""Collection as one service: refresh, alert, cut (and deliver, in the daemon).

One round calls :meth:`~releves_mailer.collect.service.CollectionService.run_due` with the
alert service's hook, so a failed refresh counts toward the "link from the second failure" rule
and sends the same links and alerts whoever ran it: the daemon, ``collect``, ``simulate``
or ``banks connect``. In the daemon a round also delivers the statements just cut and, once
a day, checks consent expiry dates; rounds run every minute, or at once for the connections
a client has just repaired or added or a webhook names (only those are refreshed early).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from releves_mailer.clock import Clock, business_today
from releves_mailer.collect.provider import Provider
from releves_mailer.collect.scheduler import RefreshPlan
from releves_mailer.collect.service import CollectionService, RunReport
from releves_mailer.collect.simulate import SimulationReport
from releves_mailer.db import Database
from releves_mailer.delivery.service import StatementDelivery
from releves_mailer.metrics import Metrics, RoundSummary
from releves_mailer.partner.alerts import AlertService
from releves_mailer.signing.secrets import KeyRing
from releves_mailer.waiting import wait_any

__all__ = ["Collector"]

_log = logging.getLogger(__name__)


class Collector:
    """Runs collection rounds: once (a command), over simulated nights, or until told to stop."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        providers: Mapping[str, Provider],
        keyring: KeyRing,
        plan: RefreshPlan,
        alerts: AlertService,
        delivery: StatementDelivery | None = None,
        *,
        period: float = 60.0,
        metrics: Metrics | None = None,
        worker: str | None = None,
    ) -> None:
        self.collection = CollectionService(
            database,
            clock,
            providers,
            keyring,
            plan=plan,
            after_refresh=alerts.after_refresh,
            metrics=metrics,
            worker=worker,
        )
        self.metrics = metrics
        self.clock = clock
        self.alerts = alerts
        self.delivery = delivery
        self.period = period
        self._consents_checked: dt.date | None = None
        self._soon: set[int] = set()
        self._wakeup = asyncio.Event()

    async def round(
        self,
        *,
        force_refresh: bool = False,
        redevable_id: int | None = None,
        refresh_now: Collection[int] = (),
    ) -> RunReport:
        """One round of due work; safe to call at any time (everything is idempotent)."""
        report = await self.collection.run_due(
            force_refresh=force_refresh, redevable_id=redevable_id, refresh_now=refresh_now
        )
        if self.delivery is None:
            return report  # a command: the daemon delivers what was cut
        today = business_today(self.clock)
        if self._consents_checked != today:
            await self.alerts.check_consents()
            self._consents_checked = today
        delivered = await self.delivery.deliver_due()
        if report.refreshed or report.statements_cut or delivered.delivered:
            _log.info(
                "collection round: %d refresh(es), %d statement(s) cut, %d delivered",
                len(report.refreshed),
                report.statements_cut,
                delivered.delivered,
            )
        if self.metrics is not None:
            self.metrics.round_ended(
                RoundSummary(
                    report.at, report.refresh_count, report.failed_refreshes, report.statements_cut
                )
            )
        return report

    async def simulate(
        self,
        first: dt.date,
        last: dt.date,
        *,
        step_minutes: int = 60,
        progress_file: Path | None = None,
        on_night: Callable[[dt.date], None] | None = None,
    ) -> SimulationReport:
        """The scheduler over the simulated nights from ``first`` to ``last``."""
        return await self.collection.simulate(
            first, last, step_minutes=step_minutes, progress_file=progress_file, on_night=on_night
        )

    def refresh_soon(self, connection_id: int) -> None:
        """Refresh this connection at the next round, which starts now (not every connection)."""
        self._soon.add(connection_id)
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now, self._soon = self._soon, set()
            try:
                await self.round(refresh_now=now)
            except Exception:
                _log.exception("collection round failed")
                if self.metrics is not None:
                    self.metrics.round_failed()
            await wait_any(stop, self._wakeup, seconds=self.period)
            self._wakeup.clear()

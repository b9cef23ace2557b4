"""The daemon's collection job: refresh, cut, alert, deliver, on the scheduler's rhythm.

One round calls :func:`~releves_mailer.collect.scheduler.run_due_work` (the same code as
``collect`` and ``simulate``), hands every refresh result to the alert service, delivers the
statements just cut, and once a day checks consent expiry dates. Rounds run every minute, or
at once when a client has just repaired or added a connection.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping

from releves_mailer.clock import Clock, business_today
from releves_mailer.collect.provider import Provider
from releves_mailer.collect.scheduler import RefreshPlan, RunReport, run_due_work
from releves_mailer.db import Database
from releves_mailer.delivery.service import StatementDelivery
from releves_mailer.partner.alerts import AlertService
from releves_mailer.signing.secrets import KeyRing
from releves_mailer.waiting import wait_any

__all__ = ["Collector"]

_log = logging.getLogger(__name__)


class Collector:
    """Runs collection rounds until told to stop."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        providers: Mapping[str, Provider],
        keyring: KeyRing,
        plan: RefreshPlan,
        alerts: AlertService,
        delivery: StatementDelivery,
        *,
        period: float = 60.0,
    ) -> None:
        self.database = database
        self.clock = clock
        self.providers = providers
        self.keyring = keyring
        self.plan = plan
        self.alerts = alerts
        self.delivery = delivery
        self.period = period
        self._consents_checked: dt.date | None = None

    async def round(self, *, force_refresh: bool = False) -> RunReport:
        """One round of due work; safe to call at any time (everything is idempotent)."""
        report = await run_due_work(
            self.database,
            clock=self.clock,
            providers=self.providers,
            keyring=self.keyring,
            plan=self.plan,
            force_refresh=force_refresh,
        )
        for result in report.refreshed:
            await self.alerts.after_refresh(result)
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
        return report

    async def run(self, stop: asyncio.Event, wakeup: asyncio.Event) -> None:
        force = False
        while not stop.is_set():
            try:
                await self.round(force_refresh=force)
            except Exception:
                _log.exception("collection round failed")
            force = False
            await wait_any(stop, wakeup, seconds=self.period)
            if wakeup.is_set():
                wakeup.clear()
                force = True

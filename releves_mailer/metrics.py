"""The daemon's Prometheus metrics: one registry per daemon, counted where things happen.

At the package root: collection (``collect/``), delivery (``delivery/``), the listeners and
the login guard of every protocol feed it, and ``web/`` serves it.

Each :class:`Metrics` owns its own ``CollectorRegistry`` (never prometheus-client's global
one), so several daemons in one process (tests) keep separate figures. Three kinds of
figures:

* counters and histograms incremented at the event points: refreshes and their failures
  (collection service), statements cut (collection service), statements delivered and
  their delay (delivery), login failures (:class:`CountingGuard` around the shared guard);
* figures read at scrape time from live objects: open and accepted connections of each
  listener (:meth:`Metrics.watch_listeners` reads the connection limiters);
* figures read at scrape time from the database through ``releves_mailer.services``
  (outbox queue, statement states), by the hooks given to :meth:`Metrics.before_scrape`.

:class:`LoopMonitor` measures how late a periodic sleep wakes up: the time the event loop
was blocked (a slow synchronous call), which delays every connection at once. The names of
every metric are listed in ``docs/metrics.md``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from releves_mailer.portfolio.logins import LoginGuard, LoginThrottled

__all__ = [
    "CONTENT_TYPE",
    "CountingGuard",
    "LoopMonitor",
    "Metrics",
    "RoundSummary",
]

_log = logging.getLogger(__name__)

T = TypeVar("T")

#: The exposition format ``generate_latest`` writes (Prometheus text format 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: The protocols of the connection and login metrics.
PROTOCOLS = ("imap", "smtp", "http")
#: Statement delays from cut to mailbox: seconds in a daemon that keeps up, up to days when
#: delivery was down.
_LAG_BUCKETS = (
    1.0,
    10.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4 * 3600.0,
    12 * 3600.0,
    86400.0,
    3 * 86400.0,
)
#: Event-loop stalls: a healthy loop stays under a few milliseconds.
_STALL_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ConnectionCounts(Protocol):
    """What a listener's connection limiter tells (``releves_mailer.listeners``)."""

    @property
    def count(self) -> int: ...

    @property
    def admitted(self) -> int: ...

    @property
    def refused(self) -> int: ...


@dataclass(frozen=True)
class RoundSummary:
    """The last collection round that ended: when (business clock), and what it did."""

    at: dt.datetime
    refreshed: int
    failed: int
    statements_cut: int


class _Listeners(Collector):
    """Open, accepted and refused connections of each protocol, read at scrape time."""

    def __init__(self, limiters: Mapping[str, ConnectionCounts]) -> None:
        self.limiters = dict(limiters)

    def collect(self) -> Iterator[Metric]:
        current = GaugeMetricFamily(
            "releves_connections_open", "Connections open now.", labels=["protocol"]
        )
        accepted = CounterMetricFamily(
            "releves_connections", "Connections accepted since start.", labels=["protocol"]
        )
        refused = CounterMetricFamily(
            "releves_connections_refused",
            "Connections refused over the connection caps since start.",
            labels=["protocol"],
        )
        for protocol, limiter in sorted(self.limiters.items()):
            current.add_metric([protocol], limiter.count)
            accepted.add_metric([protocol], limiter.admitted)
            refused.add_metric([protocol], limiter.refused)
        yield current
        yield accepted
        yield refused


class Metrics:
    """Every metric of one daemon, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        # CPU, memory, open descriptors of the process (``process_*``, Linux only).
        ProcessCollector(registry=registry)
        self.refreshes = Counter(
            "releves_refreshes",
            "Bank connection refreshes tried, by provider.",
            ["provider"],
            registry=registry,
        )
        self.refresh_failures = Counter(
            "releves_refresh_failures",
            "Refreshes that failed, by provider and error code.",
            ["provider", "code"],
            registry=registry,
        )
        self.statements_cut = Counter(
            "releves_statements_cut", "Statements cut.", registry=registry
        )
        self.statements_delivered = Counter(
            "releves_statements_delivered",
            "Statements decided by delivery: mailed into a box, or not to be mailed.",
            ["outcome"],
            registry=registry,
        )
        self.delivery_lag = Histogram(
            "releves_statement_delivery_lag_seconds",
            "Time from a statement's cut to its mail stored in the box.",
            buckets=_LAG_BUCKETS,
            registry=registry,
        )
        self.rounds = Counter(
            "releves_collection_rounds", "Collection rounds ended.", registry=registry
        )
        self.round_errors = Counter(
            "releves_collection_round_errors",
            "Collection rounds that stopped on an unexpected error.",
            registry=registry,
        )
        self.last_round_time = Gauge(
            "releves_collection_last_round_timestamp_seconds",
            "When the last collection round ended (Unix time, business clock).",
            registry=registry,
        )
        self.last_round_refreshes = Gauge(
            "releves_collection_last_round_refreshes",
            "Refreshes tried by the last collection round.",
            registry=registry,
        )
        self.last_round_failures = Gauge(
            "releves_collection_last_round_failures",
            "Refreshes that failed in the last collection round.",
            registry=registry,
        )
        self.login_failures = Counter(
            "releves_login_failures",
            "Failed logins by protocol; reason: credentials (wrong login or password) or "
            "throttled (refused by the login guard without checking).",
            ["protocol", "reason"],
            registry=registry,
        )
        self.logins = Counter(
            "releves_logins", "Successful logins by protocol.", ["protocol"], registry=registry
        )
        self.outbox_queue = Gauge(
            "releves_outbox_queue_length",
            "Mails to outside addresses waiting to be sent.",
            registry=registry,
        )
        self.outbox_oldest = Gauge(
            "releves_outbox_oldest_age_seconds",
            "Age of the oldest mail waiting in the outbox (0 when empty).",
            registry=registry,
        )
        self.outbox_failed = Gauge(
            "releves_outbox_failed",
            "Mails the outbox gave up on (recipient refused, or retries exhausted).",
            registry=registry,
        )
        self.statements = Gauge(
            "releves_statements",
            "Statements in the database by state (waiting, produced, failed).",
            ["state"],
            registry=registry,
        )
        self.statements_undelivered = Gauge(
            "releves_statements_undelivered",
            "Statements cut and not yet decided by delivery.",
            registry=registry,
        )
        self.loop_stall = Histogram(
            "releves_event_loop_stall_seconds",
            "How late the event loop woke a periodic sleep (time it was blocked).",
            buckets=_STALL_BUCKETS,
            registry=registry,
        )
        self.loop_stall_max = Gauge(
            "releves_event_loop_stall_max_seconds",
            "Longest event-loop stall seen since start.",
            registry=registry,
        )
        # Known label sets start at 0, so that the first increment is an increase for
        # Prometheus (a series that appears at 1 is not).
        for protocol in PROTOCOLS:
            self.logins.labels(protocol)
            for reason in ("credentials", "throttled"):
                self.login_failures.labels(protocol, reason)
        for outcome in ("mailed", "not_mailed"):
            self.statements_delivered.labels(outcome)
        self.last_round: RoundSummary | None = None
        #: Event-loop time (monotonic) when the last round ended: staleness, whatever the
        #: business clock does (a test's manual clock may stand still).
        self.last_round_monotonic: float | None = None
        self._before: list[Callable[[], Awaitable[None]]] = []
        self._stall_max = 0.0

    # -- event points ----------------------------------------------------------------------

    def refreshed(self, provider: str, error_code: str | None) -> None:
        """One refresh of a connection of ``provider`` ended (``error_code``: it failed)."""
        self.refreshes.labels(provider).inc()
        if error_code is not None:
            self.refresh_failures.labels(provider, error_code).inc()

    def cut(self, count: int) -> None:
        if count:
            self.statements_cut.inc(count)

    def delivered(self, lag_seconds: float | None) -> None:
        """One statement mailed (``lag_seconds`` after its cut), or not to be mailed (None)."""
        if lag_seconds is None:
            self.statements_delivered.labels("not_mailed").inc()
            return
        self.statements_delivered.labels("mailed").inc()
        self.delivery_lag.observe(max(lag_seconds, 0.0))

    def round_ended(self, summary: RoundSummary) -> None:
        self.rounds.inc()
        self.last_round = summary
        self.last_round_time.set(summary.at.timestamp())
        self.last_round_refreshes.set(summary.refreshed)
        self.last_round_failures.set(summary.failed)
        try:
            self.last_round_monotonic = asyncio.get_running_loop().time()
        except RuntimeError:  # a round run outside a loop (never in the daemon)
            self.last_round_monotonic = None

    def round_failed(self) -> None:
        self.round_errors.inc()

    def stalled(self, seconds: float) -> None:
        self.loop_stall.observe(seconds)
        if seconds > self._stall_max:
            self._stall_max = seconds
            self.loop_stall_max.set(seconds)

    # -- scrape time -----------------------------------------------------------------------

    def watch_listeners(self, limiters: Mapping[str, ConnectionCounts]) -> None:
        """Report the connections of these limiters (by protocol name) at each scrape."""
        self.registry.register(_Listeners(limiters))

    def before_scrape(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` (which sets gauges, e.g. from the database) before each scrape."""
        self._before.append(hook)

    async def exposition(self) -> bytes:
        """Every metric in the Prometheus text format; a failed hook leaves its gauges as
        they were (and is logged) rather than failing the scrape."""
        for hook in self._before:
            try:
                await hook()
            except Exception:
                _log.warning("metrics: a scrape-time figure could not be read", exc_info=True)
        return generate_latest(self.registry)


class CountingGuard:
    """The shared login guard seen from one protocol: counts its failures and successes."""

    def __init__(self, guard: LoginGuard, protocol: str, metrics: Metrics) -> None:
        self.guard = guard
        self.protocol = protocol
        self.metrics = metrics

    async def attempt(
        self, peer: str, username: str, verify: Callable[[], Awaitable[T | None]]
    ) -> T | None:
        try:
            result = await self.guard.attempt(peer, username, verify)
        except LoginThrottled:
            self.metrics.login_failures.labels(self.protocol, "throttled").inc()
            raise
        if result is None:
            self.metrics.login_failures.labels(self.protocol, "credentials").inc()
        else:
            self.metrics.logins.labels(self.protocol).inc()
        return result


class LoopMonitor:
    """Sleeps ``interval`` seconds again and again and records how late each wake-up is.

    Lateness is measured on the event loop's monotonic clock, not the business clock: it
    is a property of this process, and tests freeze the business clock.
    """

    def __init__(self, metrics: Metrics, interval: float = 0.5) -> None:
        self.metrics = metrics
        self.interval = interval

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            start = loop.time()
            await asyncio.sleep(self.interval)
            self.metrics.stalled(max(loop.time() - start - self.interval, 0.0))

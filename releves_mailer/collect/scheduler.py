"""Collection scheduler: when each connection is refreshed, and the runner doing the due work.

Planning is a pure function of (connection id, clock time, settings). Each connection gets a
fixed *base* offset inside the Paris night window (``[collection] window_start`` ..
``window_end``), derived from a hash of its id, so connections are spread over the window and
not all fired at the same minute. Each night a deterministic *jitter* of at most
+/- ``jitter_hours`` / 2 moves the slot (mirrored at the window's edges), so two consecutive
refreshes are ``refresh_hours`` (24 h) +/- ``jitter_hours`` (3 h) apart (one hour more or less
across a change of daylight saving time). ``refresh_hours`` below 24
adds slots every ``refresh_hours`` after the first one while inside the window; above 24, only
every ``refresh_hours / 24``-th night has a slot.

A refresh is due when the latest slot at or before now is later than the connection's last
check. A failed refresh is retried every ``retry_minutes`` until the window closes.

:func:`run_due_work` is what the daemon, ``collect`` and ``simulate`` all call: it refreshes
the due connections (concurrently, at most ``max_concurrency_per_provider`` at a time per
provider; one failure never stops the others), then cuts every statement due before today.
It is idempotent at a given clock time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select

from releves_mailer.clock import PARIS, Clock
from releves_mailer.collect.provider import Provider
from releves_mailer.collect.sync import (
    RefreshResult,
    SyncSettings,
    refresh_connection,
    refresh_connections,
)
from releves_mailer.config import CollectionSection
from releves_mailer.db import Database
from releves_mailer.db.models.collect import BankConnection, ConnectionState
from releves_mailer.db.models.portfolio import Redevable
from releves_mailer.signing.secrets import KeyRing
from releves_mailer.statements.cut import cut_due_statements
from releves_mailer.statements.plan import StatementTiming
from releves_mailer.statements.storage import CutReport

__all__ = [
    "AfterRefresh",
    "ConnectionClock",
    "RefreshPlan",
    "RunReport",
    "is_refresh_due",
    "next_refresh",
    "refresh_slots",
    "run_due_work",
]

log = logging.getLogger(__name__)

#: The hook run on each refresh result (the alert service's).
AfterRefresh = Callable[[RefreshResult], Awaitable[object]]

#: Providers computed in this process (no network): running their refreshes concurrently
#: only makes database writers wait for each other, so they run one at a time.
IN_PROCESS_PROVIDERS = frozenset({"testbank"})
#: Connections refreshed in one write transaction by default.
REFRESH_BATCH = 20


def _stable(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class RefreshPlan:
    """The refresh timing of ``[collection]``."""

    window_start: dt.time = dt.time(0, 0)
    window_end: dt.time = dt.time(6, 0)
    refresh_hours: int = 24
    jitter_hours: int = 3
    max_concurrency_per_provider: int = 4
    retry_minutes: int = 60
    #: Connections refreshed in one write transaction.
    refresh_batch: int = REFRESH_BATCH

    @classmethod
    def from_config(cls, section: CollectionSection) -> RefreshPlan:
        return cls(
            window_start=section.window_start,
            window_end=section.window_end,
            refresh_hours=section.refresh_hours,
            jitter_hours=section.jitter_hours,
            max_concurrency_per_provider=section.max_concurrency_per_provider,
        )

    @property
    def window_seconds(self) -> int:
        start = self.window_start.hour * 3600 + self.window_start.minute * 60
        end = self.window_end.hour * 3600 + self.window_end.minute * 60
        return (end - start) % 86_400 or 86_400

    def window_bounds(self, night: dt.date) -> tuple[dt.datetime, dt.datetime]:
        """UTC start and end of the window opening on the Paris date ``night``."""
        start = dt.datetime.combine(night, self.window_start, tzinfo=PARIS).astimezone(dt.UTC)
        return start, start + dt.timedelta(seconds=self.window_seconds)

    @property
    def timing(self) -> StatementTiming:
        return StatementTiming(window_end=self.window_end)


@functools.lru_cache(maxsize=16_384)
def refresh_slots(connection_id: int, night: dt.date, plan: RefreshPlan) -> tuple[dt.datetime, ...]:
    """The refresh instants (UTC) of a connection in the window opening on ``night``.

    Memoised: the runner asks every few minutes for every connection, and the answer is a
    pure function of its arguments (two hashes and time zone arithmetic each time otherwise).
    """
    length = plan.window_seconds
    every_nights = max(1, plan.refresh_hours // 24) if plan.refresh_hours >= 24 else 1
    base = _stable(f"slot:{connection_id}") % length
    if every_nights > 1 and (night.toordinal() + base) % every_nights:
        return ()
    span = plan.jitter_hours * 3600
    nightly = _stable(f"jitter:{connection_id}:{night.isoformat()}")
    if span < length:
        # Mirrored at the window's edges, not clamped: clamping would pile connections up on
        # the edges, mirroring keeps them evenly spread and moves a slot no more than the
        # jitter does (two refreshes stay 24 h +/- ``jitter_hours`` apart).
        offset = base + nightly % (span + 1) - span // 2
        if offset < 0:
            offset = -offset
        elif offset >= length:
            offset = 2 * (length - 1) - offset
    else:
        # A window shorter than the jitter: anywhere in it, each night.
        offset = nightly % length
    start, _end = plan.window_bounds(night)
    slots = [start + dt.timedelta(seconds=offset)]
    if plan.refresh_hours < 24:
        step = plan.refresh_hours * 3600
        extra = offset + step
        while extra < length:
            slots.append(start + dt.timedelta(seconds=extra))
            extra += step
    return tuple(slots)


def _latest_slot(
    connection_id: int, now: dt.datetime, plan: RefreshPlan
) -> tuple[dt.datetime, dt.datetime] | None:
    """The latest slot at or before ``now`` and the end of its window."""
    today = now.astimezone(PARIS).date()
    found: tuple[dt.datetime, dt.datetime] | None = None
    # A window may open on the previous Paris date (e.g. 22:00-06:00); a refresh every N
    # nights needs N nights back.
    back = max(2, plan.refresh_hours // 24 + 1)
    for offset in range(back, -1, -1):
        night = today - dt.timedelta(days=offset)
        for slot in refresh_slots(connection_id, night, plan):
            if slot <= now and (found is None or slot > found[0]):
                found = (slot, plan.window_bounds(night)[1])
    return found


@dataclass(frozen=True, slots=True)
class ConnectionClock:
    """What planning needs to know about a connection."""

    connection_id: int
    last_check_at: dt.datetime | None
    last_success_at: dt.datetime | None


def is_refresh_due(connection: ConnectionClock, now: dt.datetime, plan: RefreshPlan) -> bool:
    """Whether the connection must be refreshed at ``now``."""
    if connection.last_check_at is None:
        return True  # never checked: right away (just connected)
    latest = _latest_slot(connection.connection_id, now, plan)
    if latest is None:
        return False
    slot, closes = latest
    if connection.last_check_at < slot:
        return True
    if connection.last_success_at is not None and connection.last_success_at >= slot:
        return False
    # Failed at this slot: retry while its window is open.
    retry = dt.timedelta(minutes=plan.retry_minutes)
    return now < closes and now - connection.last_check_at >= retry


def next_refresh(connection: ConnectionClock, now: dt.datetime, plan: RefreshPlan) -> dt.datetime:
    """When the connection will next be refreshed (``now`` when it is due)."""
    if is_refresh_due(connection, now, plan):
        return now
    today = now.astimezone(PARIS).date()
    for offset in range(-1, plan.refresh_hours // 24 + 3):
        for slot in refresh_slots(
            connection.connection_id, today + dt.timedelta(days=offset), plan
        ):
            if slot > now:
                return slot
    raise AssertionError("no refresh slot found")  # pragma: no cover


# -- the runner ------------------------------------------------------------------------------


@dataclass(slots=True)
class RunReport:
    """What one :func:`run_due_work` call did."""

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


async def run_due_work(
    database: Database,
    *,
    clock: Clock,
    providers: Mapping[str, Provider],
    keyring: KeyRing,
    plan: RefreshPlan | None = None,
    sync_settings: SyncSettings | None = None,
    force_refresh: bool = False,
    redevable_id: int | None = None,
    refresh: bool = True,
    refresh_now: Collection[int] = (),
    after_refresh: AfterRefresh | None = None,
) -> RunReport:
    """Refresh the connections whose refresh is due, then cut every due statement.

    ``force_refresh`` refreshes every connection (``collect``); ``refresh_now`` adds the
    connections named (one a client has just repaired, one a webhook names) to the due ones;
    ``redevable_id`` limits the work to one redevable. ``after_refresh`` sees every refresh
    result before any statement is cut (the alert hook: links and alerts). Call it in a loop
    (the daemon: every few minutes) or at chosen clock times (``simulate``); calling it again
    at the same clock time does nothing more.
    """
    plan = plan or RefreshPlan()
    now = clock.now()
    report = RunReport(at=now)
    if refresh:
        due = await _due_connections(
            database,
            now,
            plan,
            force=force_refresh,
            redevable_id=redevable_id,
            refresh_now=frozenset(refresh_now),
        )
        await _refresh_all(database, due, clock, providers, keyring, plan, sync_settings, report)
        if after_refresh is not None:
            for result in report.refreshed:
                try:
                    await after_refresh(result)
                except Exception:  # an alert that failed never holds statements back
                    log.exception(
                        "after-refresh hook of connection %s failed", result.connection_id
                    )
    report.statements = await cut_due_statements(
        database, clock=clock, timing=plan.timing, redevable_id=redevable_id
    )
    return report


async def _refresh_all(
    database: Database,
    due: Sequence[tuple[int, str]],
    clock: Clock,
    providers: Mapping[str, Provider],
    keyring: KeyRing,
    plan: RefreshPlan,
    sync_settings: SyncSettings | None,
    report: RunReport,
) -> None:
    """Refresh in batches (one write transaction each), a few batches at once per provider.

    A batch that fails as a whole (a database error) is retried connection by connection, so
    that one connection never sinks the others.
    """
    by_provider: dict[str, list[int]] = {}
    for connection_id, provider in due:
        if provider not in providers:
            report.refresh_errors[connection_id] = f"fournisseur « {provider} » non configuré"
            continue
        by_provider.setdefault(provider, []).append(connection_id)

    async def batch(ids: list[int], semaphore: asyncio.Semaphore) -> None:
        async with semaphore:
            try:
                results = await refresh_connections(
                    database,
                    ids,
                    providers=providers,
                    keyring=keyring,
                    clock=clock,
                    settings=sync_settings,
                )
            except Exception:
                log.warning("batch refresh of %s failed, retrying one by one", ids, exc_info=True)
                results = []
                for connection_id in ids:
                    try:
                        results.append(
                            await refresh_connection(
                                database,
                                connection_id,
                                providers=providers,
                                keyring=keyring,
                                clock=clock,
                                settings=sync_settings,
                            )
                        )
                    except Exception as error:  # one connection never sinks the batch
                        log.exception("refresh of connection %s failed", connection_id)
                        report.refresh_errors[connection_id] = f"{type(error).__name__}: {error}"
        report.refreshed.extend(results)

    tasks = []
    for provider, ids in by_provider.items():
        size = 1 if provider in IN_PROCESS_PROVIDERS else plan.max_concurrency_per_provider
        semaphore = asyncio.Semaphore(size)
        for start in range(0, len(ids), plan.refresh_batch):
            tasks.append(batch(ids[start : start + plan.refresh_batch], semaphore))
    await asyncio.gather(*tasks)
    report.refreshed.sort(key=lambda result: result.connection_id)

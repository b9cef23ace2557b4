"""Several workers on one database (issue 19, point 2), in one test process.

Three workers, each with its own connection pool, collection service, statement delivery and
outbox, run the same simulated nights at the same clock times over one portfolio: each
connection is refreshed once a night, each statement cut once and delivered once, each
outbox mail sent once (an aiosmtpd relay counts them). A worker that dies holding claims
leaves them to the others once its lease has passed.

The concurrent runs need PostgreSQL (``SELECT ... FOR UPDATE SKIP LOCKED``; SQLite runs one
daemon per data directory): they are skipped on SQLite. The lease take-over runs on both.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import func, select, update

from releves_mailer.aggregators.testbank import TestBank
from releves_mailer.clock import ManualClock
from releves_mailer.collect.provider import ConnectionStatus, Provider, ProviderAccess
from releves_mailer.collect.scheduler import ConnectionClock, RefreshPlan, is_refresh_due
from releves_mailer.collect.service import CollectionService
from releves_mailer.collect.simulate import simulation_steps
from releves_mailer.config import PortalSection
from releves_mailer.db import Database
from releves_mailer.db.claims import claim_rows
from releves_mailer.db.models import (
    BankConnection,
    MailDelivered,
    OutboxMessage,
    OutboxState,
    PortalAccount,
    ReceptionMode,
    Statement,
    StatementState,
)
from releves_mailer.delivery.service import StatementDelivery
from releves_mailer.listeners import reserve_port
from releves_mailer.mailbox.store import MessageStore
from releves_mailer.notify.outbox import Outbox
from releves_mailer.render import Renderer
from releves_mailer.signing.secrets import KeyRing
from releves_mailer.signing.smime import SmimeSigner
from releves_mailer.statements.storage import CutOutcome
from tests.conftest import POSTGRES_URL_VARIABLE
from tests.factories import Spec, build_portfolio
from tests.notify.test_outbox import Relay, enqueue, outbox_for

DOMAIN = "releves.example"
ON_POSTGRES = bool(os.environ.get(POSTGRES_URL_VARIABLE))
needs_postgres = pytest.mark.skipif(
    not ON_POSTGRES,
    reason="concurrent workers claim with SELECT ... FOR UPDATE SKIP LOCKED: PostgreSQL only "
    f"(set {POSTGRES_URL_VARIABLE}); SQLite runs one daemon per data directory",
)
#: The first simulated night opens on Tuesday 3 March 2026 (the portfolio is connected on
#: Monday 03:00 Paris, inside the night before).
FIRST_NIGHT = dt.date(2026, 3, 3)
LEASE_SECONDS = 120


class CountingBank:
    """The test bank, counting the refreshes of each connection (its status calls)."""

    def __init__(self, bank: TestBank) -> None:
        self.bank = bank
        self.refreshes: Counter[str] = Counter()

    async def connection_status(self, access: ProviderAccess) -> ConnectionStatus:
        self.refreshes[access.connection_id] += 1
        return await self.bank.connection_status(access)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bank, name)


class HeldBank:
    """A worker's view of the counting bank: its first refresh waits until released."""

    def __init__(self, bank: CountingBank) -> None:
        self.bank = bank
        self.entered = asyncio.Event()
        self.released = asyncio.Event()

    async def connection_status(self, access: ProviderAccess) -> ConnectionStatus:
        if not self.entered.is_set():
            self.entered.set()
            await self.released.wait()
        return await self.bank.connection_status(access)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bank, name)


@dataclass
class Worker:
    name: str
    database: Database
    collection: CollectionService
    delivery: StatementDelivery
    outbox: Outbox


@pytest.fixture
async def store(
    database: Database, clock: ManualClock, tmp_path: Path
) -> AsyncIterator[MessageStore]:
    messages = MessageStore(database, tmp_path / "messages", clock)
    yield messages
    await messages.close()


async def make_portfolio(
    database: Database, clock: ManualClock, keyring: KeyRing, bank: TestBank, count: int
) -> None:
    await build_portfolio(database, clock, keyring, bank, [Spec() for _ in range(count)])
    async with database.session() as session:
        await session.execute(update(PortalAccount).values(reception_mode=ReceptionMode.DEDICATED))


@pytest.fixture
async def workers(
    database: Database,
    clock: ManualClock,
    keyring: KeyRing,
    store: MessageStore,
    signer: SmimeSigner,
    tmp_path: Path,
) -> AsyncIterator[tuple[list[Worker], CountingBank, Relay]]:
    """Three workers, each with its own pool on the test database; one counting bank; the
    outside relay every outbox sends to."""
    bank = CountingBank(TestBank(clock, seed=1))
    relay = Relay(reserve_port())
    await relay.start()
    plan = RefreshPlan(claim_lease_seconds=LEASE_SECONDS)
    made: list[Worker] = []
    for index in range(3):
        name = f"worker-{index}"
        pool = Database(database.url.render_as_string(hide_password=False))
        providers = {"testbank": cast(Provider, bank)}
        made.append(
            Worker(
                name,
                pool,
                CollectionService(pool, clock, providers, keyring, plan=plan, worker=name),
                StatementDelivery(
                    pool,
                    store,
                    Renderer(),
                    signer,
                    clock,
                    PortalSection(domain=DOMAIN, name="Portail"),
                    worker=name,
                    lease=plan.lease,
                ),
                _named(outbox_for(pool, clock, tmp_path, relay.port), name),
            )
        )
    try:
        yield made, bank, relay
    finally:
        await relay.stop()
        for worker in made:
            await worker.database.dispose()


def _named(outbox: Outbox, name: str) -> Outbox:
    outbox.worker = name
    return outbox


async def produced(database: Database) -> list[tuple[int, int, str | None]]:
    async with database.session() as session:
        rows = await session.execute(
            select(Statement.id, Statement.account_id, Statement.delivery_box).where(
                Statement.state == StatementState.PRODUCED
            )
        )
        return [(statement_id, account, box) for statement_id, account, box in rows]


def single_worker_refreshes(
    connection_id: int, checked: dt.datetime, steps: Sequence[dt.datetime], plan: RefreshPlan
) -> int:
    """How many times one worker alone refreshes the connection over ``steps`` (pure
    planning: every refresh succeeds)."""
    count = 0
    for moment in steps:
        if is_refresh_due(ConnectionClock(connection_id, checked, checked), moment, plan):
            count += 1
            checked = moment
    return count


async def all_due_at_night(database: Database, clock: ManualClock) -> list[int]:
    """Sets the clock to 04:00 of a night and makes every connection due (last checked two
    days before); their ids."""
    clock.set(dt.datetime(2026, 3, 3, 4, 0, tzinfo=dt.UTC))
    async with database.session() as session:
        ids = list((await session.scalars(select(BankConnection.id))).all())
        await session.execute(
            update(BankConnection).values(last_check_at=clock.now() - dt.timedelta(days=2))
        )
    return ids


@needs_postgres
async def test_three_workers_share_the_nights_each_piece_of_work_once(
    database: Database,
    clock: ManualClock,
    keyring: KeyRing,
    workers: tuple[list[Worker], CountingBank, Relay],
) -> None:
    team, bank, relay = workers
    await make_portfolio(database, clock, keyring, bank.bank, 24)
    # The first refresh of each connection, right after it is connected (Monday 03:00).
    await team[0].collection.run_due()
    assert set(bank.refreshes.values()) == {1}
    bank.refreshes.clear()
    nights = 3
    cuts: Counter[tuple[int, dt.date]] = Counter()
    delivered = 0
    plan = team[0].collection.plan
    last = FIRST_NIGHT + dt.timedelta(days=nights - 1)
    checked = clock.now()
    steps = [moment for _, moment in simulation_steps(FIRST_NIGHT, last, plan, step_minutes=30)]
    for moment in steps:
        clock.set(moment)
        reports = await asyncio.gather(*(worker.collection.run_due() for worker in team))
        for report in reports:
            for result in report.statements.results:
                if result.outcome == CutOutcome.CUT:
                    cuts[(result.account_id, result.due_date)] += 1
        deliveries = await asyncio.gather(*(worker.delivery.deliver_due() for worker in team))
        delivered += sum(report.delivered for report in deliveries)

    async with database.session() as session:
        connections = (
            await session.execute(
                select(
                    BankConnection.provider_connection_id,
                    BankConnection.id,
                )
            )
        ).all()
        left = await session.scalar(
            select(func.count()).where(BankConnection.claimed_until.is_not(None))
        )
    # Each connection refreshed exactly as often as one worker alone would have: once a
    # night, plus once at the first step for those whose slot of the night before came
    # after their first refresh (Monday 03:00).
    expected = {
        key: single_worker_refreshes(connection_id, checked, steps, plan)
        for key, connection_id in connections
    }
    assert set(expected.values()) <= {nights, nights + 1}
    assert dict(bank.refreshes) == expected
    assert left == 0  # every claim released
    # Each statement cut once and delivered once.
    statements = await produced(database)
    assert len(statements) >= 24 * (nights - 1)
    assert set(cuts.values()) == {1}
    assert len(cuts) == len(statements)
    assert delivered == len(statements)
    assert all(box == f"releves.cabinet100@{DOMAIN}" for _, _, box in statements)
    async with database.session() as session:
        copies = Counter((await session.scalars(select(MailDelivered.message_id))).all())
    assert len(copies) == len(statements) and set(copies.values()) == {1}

    # The outbox: 30 mails, three senders at once, each mail sent once.
    await enqueue(team[0].outbox, database, 30)
    reports = await asyncio.gather(*(worker.outbox.send_due() for worker in team))
    assert sum(report.sent for report in reports) == 30
    recipients = Counter(address for envelope in relay.received for address in envelope.rcpt_tos)
    assert len(recipients) == 30 and set(recipients.values()) == {1}
    async with database.session() as session:
        states = (await session.scalars(select(OutboxMessage.state))).all()
    assert set(states) == {OutboxState.SENT}


async def test_a_batch_held_by_one_worker_leaves_the_rest_to_another(
    database: Database,
    clock: ManualClock,
    keyring: KeyRing,
    workers: tuple[list[Worker], CountingBank, Relay],
) -> None:
    """What shares a night between workers, shown without counting on the scheduling: while
    one worker is in the middle of refreshing a batch it claimed, another refreshes every
    other due connection at once and leaves that batch alone; each is refreshed once."""
    team, bank, _relay = workers
    await make_portfolio(database, clock, keyring, bank.bank, 6)
    ids = set(await all_due_at_night(database, clock))
    bank.refreshes.clear()
    held = HeldBank(bank)
    first = team[0]
    slow = CollectionService(
        first.database,
        clock,
        {"testbank": cast(Provider, held)},
        keyring,
        plan=dataclasses.replace(first.collection.plan, refresh_batch=2),
        worker=first.name,
    )
    running = asyncio.create_task(slow.run_due())
    try:
        await asyncio.wait_for(held.entered.wait(), 60)
        # worker-0 holds its first batch of two, in the middle of its refresh.
        other = await team[1].collection.run_due()
    finally:
        held.released.set()
    done_first = {result.connection_id for result in (await running).refreshed}
    done_other = {result.connection_id for result in other.refreshed}
    assert len(done_first) == 2 and done_other == ids - done_first
    assert set(bank.refreshes.values()) == {1} and len(bank.refreshes) == 6
    async with database.session() as session:
        rows = await session.execute(select(BankConnection.id, BankConnection.claimed_by))
        claimed_by = {connection_id: worker for connection_id, worker in rows}
    assert claimed_by == {
        connection_id: first.name if connection_id in done_first else team[1].name
        for connection_id in ids
    }


async def claim_as_ghost(
    database: Database, model: Any, ids: Sequence[int], now: dt.datetime
) -> list[int]:
    """A worker claims rows and dies (no release): what a SIGKILL leaves behind."""
    return await claim_rows(
        database, model, ids, worker="ghost", now=now, lease=dt.timedelta(seconds=LEASE_SECONDS)
    )


async def test_claims_of_a_dead_worker_are_taken_over_after_the_lease(
    database: Database,
    clock: ManualClock,
    keyring: KeyRing,
    workers: tuple[list[Worker], CountingBank, Relay],
) -> None:
    team, bank, _relay = workers
    survivor = team[0]
    await make_portfolio(database, clock, keyring, bank.bank, 6)
    bank.refreshes.clear()
    # Every connection due (never refreshed in the simulated night).
    ids = await all_due_at_night(database, clock)
    held = await claim_as_ghost(database, BankConnection, ids[:4], clock.now())
    assert held == sorted(ids[:4])

    report = await survivor.collection.run_due()
    assert sorted(result.connection_id for result in report.refreshed) == sorted(ids[4:])
    # Still within the lease: the dead worker's connections wait.
    clock.advance(dt.timedelta(seconds=LEASE_SECONDS - 1))
    assert (await survivor.collection.run_due()).refreshed == []
    # The lease has passed: the survivor takes them over, once.
    clock.advance(dt.timedelta(seconds=2))
    report = await survivor.collection.run_due()
    assert sorted(result.connection_id for result in report.refreshed) == sorted(ids[:4])
    assert set(bank.refreshes.values()) == {1} and len(bank.refreshes) == 6
    assert (await survivor.collection.run_due()).refreshed == []

    # Deliveries: a dead worker held two statements; the others are delivered now, those
    # two once the lease has passed.
    await survivor.collection.simulate(
        FIRST_NIGHT + dt.timedelta(days=1), FIRST_NIGHT + dt.timedelta(days=2)
    )
    statements = await produced(database)
    assert len(statements) >= 6
    ghost = await claim_as_ghost(
        database, Statement, [statement_id for statement_id, _, _ in statements[:2]], clock.now()
    )
    assert len(ghost) == 2
    first = await survivor.delivery.deliver_due()
    assert first.delivered == len(statements) - 2
    assert (await survivor.delivery.deliver_due()).delivered == 0
    clock.advance(dt.timedelta(seconds=LEASE_SECONDS + 1))
    assert (await survivor.delivery.deliver_due()).delivered == 2
    assert all(box is not None for _, _, box in await produced(database))


async def test_claims_of_a_dead_process_of_this_host_are_taken_over_at_once(
    database: Database,
    clock: ManualClock,
    keyring: KeyRing,
    workers: tuple[list[Worker], CountingBank, Relay],
) -> None:
    team, bank, _relay = workers
    await make_portfolio(database, clock, keyring, bank.bank, 3)
    ids = await all_due_at_night(database, clock)
    # A process of this host that claimed the connections and was killed (it has exited).
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await child.wait()
    dead = f"{socket.gethostname()[:80]}:{child.pid}:0badc0de"
    lease = dt.timedelta(seconds=LEASE_SECONDS)
    assert await claim_rows(
        database, BankConnection, ids, worker=dead, now=clock.now(), lease=lease
    )
    bank.refreshes.clear()
    report = await team[0].collection.run_due()
    assert sorted(result.connection_id for result in report.refreshed) == sorted(ids)
    assert set(bank.refreshes.values()) == {1}
    # A live process of this host (this one) keeps its claims until the lease passes.
    alive = f"{socket.gethostname()[:80]}:{os.getpid()}:0badc0de"
    clock.advance(dt.timedelta(days=1))
    async with database.session() as session:
        await session.execute(
            update(BankConnection).values(last_check_at=clock.now() - dt.timedelta(days=2))
        )
    assert await claim_rows(
        database, BankConnection, ids, worker=alive, now=clock.now(), lease=lease
    )
    assert (await team[0].collection.run_due()).refreshed == []

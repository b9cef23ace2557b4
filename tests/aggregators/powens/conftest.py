"""Fixtures of the Powens tests: the fake server on 127.0.0.1, a real client, a recorded sleep."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import aiohttp
import pytest

from releves_mailer.aggregators.powens import PowensClient, PowensProvider, RetryPolicy, Timeouts
from releves_mailer.clock import ManualClock
from releves_mailer.collect.provider import ProviderAccess
from tests.fakes.powens_server import FakeConnection, FakePowens, FakeUser

START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)  # Monday 10:00 Paris


class RecordedSleep:
    """An injected ``sleep``: records the waits, never waits."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
async def fake(clock: ManualClock) -> AsyncIterator[FakePowens]:
    async with FakePowens(clock) as server:
        yield server


class SentRequests(list[tuple[str, str]]):
    """What the client sent, ``(method, path)``, counted on its side: a request cut by a
    timeout counts even if the server never read it."""

    async def on_start(
        self, _session: object, _context: object, params: aiohttp.TraceRequestStartParams
    ) -> None:
        self.append((params.method, params.url.path))


@pytest.fixture
def sent() -> SentRequests:
    return SentRequests()


@pytest.fixture
async def session(sent: SentRequests) -> AsyncIterator[aiohttp.ClientSession]:
    tracing = aiohttp.TraceConfig()
    tracing.on_request_start.append(sent.on_start)
    async with aiohttp.ClientSession(trace_configs=[tracing]) as http:
        yield http


@pytest.fixture
def sleep() -> RecordedSleep:
    return RecordedSleep()


@pytest.fixture
def client(
    fake: FakePowens, session: aiohttp.ClientSession, clock: ManualClock, sleep: RecordedSleep
) -> PowensClient:
    return PowensClient(
        session,
        domain="fake-sandbox",
        client_id=fake.client_id,
        client_secret=fake.client_secret,
        base_url=fake.base_url,
        clock=clock,
        sleep=sleep,
        jitter=lambda: 0.5,
        retry=RetryPolicy(attempts=4, base_delay=1.0, max_delay=8.0),
        # Generous: a test of timeouts holds the fake's answers and sets its own.
        timeouts=Timeouts(connect=30.0, request=30.0, sync=30.0),
    )


@pytest.fixture
def provider(client: PowensClient, clock: ManualClock, fake: FakePowens) -> PowensProvider:
    return PowensProvider(client, clock, webview_base=fake.webview_base)


@pytest.fixture
def user(fake: FakePowens) -> FakeUser:
    return fake.create_user()


@pytest.fixture
def connection(fake: FakePowens, user: FakeUser) -> FakeConnection:
    return fake.add_connection(user)


def access_of(user: FakeUser, connection: FakeConnection | None = None) -> ProviderAccess:
    return ProviderAccess(
        token=user.token,
        connection_id="" if connection is None else str(connection.id),
        user_id=str(user.id),
    )


@pytest.fixture
def access(user: FakeUser, connection: FakeConnection) -> ProviderAccess:
    return access_of(user, connection)

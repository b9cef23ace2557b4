"""Rate limits, 5xx, timeouts, broken connections and error bodies (injected sleep: no waits)."""

from __future__ import annotations

import datetime as dt
import email.utils
import logging

import aiohttp
import pytest

from releves_mailer.aggregators.powens import (
    PowensAPIError,
    PowensClient,
    PowensProvider,
    RetryPolicy,
    Timeouts,
)
from releves_mailer.clock import ManualClock
from releves_mailer.collect.errors import ErrorClass
from releves_mailer.collect.provider import ProviderAccess, ProviderError
from releves_mailer.listeners import reserve_port
from tests.fakes.powens_server import FakeConnection, FakePowens

from .conftest import RecordedSleep, SentRequests


async def test_429_waits_for_retry_after(
    fake: FakePowens, provider: PowensProvider, access: ProviderAccess, sleep: RecordedSleep
) -> None:
    fake.rate_limit_next(2, retry_after="7")
    status = await provider.connection_status(access)
    assert status.ok
    assert sleep.waits == [7.0, 7.0]
    assert len(fake.calls("GET", "/connections/")) == 3


async def test_429_with_an_http_date(
    fake: FakePowens,
    provider: PowensProvider,
    access: ProviderAccess,
    sleep: RecordedSleep,
    clock: ManualClock,
) -> None:
    when = clock.now() + dt.timedelta(seconds=30)
    fake.rate_limit_next(1, retry_after=email.utils.format_datetime(when, usegmt=True))
    await provider.connection_status(access)
    assert sleep.waits == [30.0]


async def test_429_without_retry_after_uses_the_default(
    fake: FakePowens, provider: PowensProvider, access: ProviderAccess, sleep: RecordedSleep
) -> None:
    fake.rate_limit_next(1, retry_after=None)
    await provider.connection_status(access)
    assert sleep.waits == [RetryPolicy().default_retry_after]


async def test_429_too_long_gives_up_with_rate_limiting(
    fake: FakePowens, provider: PowensProvider, access: ProviderAccess, sleep: RecordedSleep
) -> None:
    fake.rate_limit_next(1, retry_after="3600")
    with pytest.raises(PowensAPIError) as caught:
        await provider.connection_status(access)
    assert caught.value.code == "rateLimiting" and caught.value.status == 429
    assert caught.value.error.error_class is ErrorClass.TRANSIENT
    assert sleep.waits == []


async def test_429_forever_gives_up(
    fake: FakePowens, provider: PowensProvider, access: ProviderAccess, sleep: RecordedSleep
) -> None:
    fake.rate_limit_next(50, retry_after="1")
    with pytest.raises(PowensAPIError, match="429"):
        await provider.connection_status(access)
    assert len(sleep.waits) == RetryPolicy().rate_limit_attempts - 1


async def test_5xx_is_retried_with_backoff_then_succeeds(
    fake: FakePowens, provider: PowensProvider, access: ProviderAccess, sleep: RecordedSleep
) -> None:
    fake.fail_next(3, 503)
    assert (await provider.connection_status(access)).ok
    # base 1 s doubled each time, "equal jitter" with jitter() == 0.5: 3/4 of the ceiling.
    assert sleep.waits == [0.75, 1.5, 3.0]


async def test_5xx_gives_up_with_a_transient_error(
    fake: FakePowens, provider: PowensProvider, access: ProviderAccess, sleep: RecordedSleep
) -> None:
    fake.fail_next(10, 502)
    with pytest.raises(ProviderError) as caught:
        await provider.connection_status(access)
    assert caught.value.code == "websiteUnavailable"
    assert caught.value.error.error_class is ErrorClass.TRANSIENT
    assert caught.value.error.message == "Le service est temporairement indisponible."
    assert len(fake.calls()) == 4 and len(sleep.waits) == 3


async def test_5xx_body_code_is_kept(
    fake: FakePowens, provider: PowensProvider, access: ProviderAccess
) -> None:
    fake.fail_next(10, 500, code="bug")
    with pytest.raises(PowensAPIError) as caught:
        await provider.connection_status(access)
    assert caught.value.code == "bug" and caught.value.status == 500


async def test_backoff_is_capped(
    fake: FakePowens,
    session: aiohttp.ClientSession,
    clock: ManualClock,
    sleep: RecordedSleep,
    access: ProviderAccess,
) -> None:
    client = PowensClient(
        session,
        domain="fake-sandbox",
        client_id=fake.client_id,
        client_secret=fake.client_secret,
        base_url=fake.base_url,
        clock=clock,
        sleep=sleep,
        jitter=lambda: 1.0,
        retry=RetryPolicy(attempts=7, base_delay=1.0, max_delay=5.0),
    )
    fake.fail_next(6, 503)
    assert (await PowensProvider(client, clock).connection_status(access)).ok
    assert sleep.waits == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


@pytest.mark.parametrize(
    ("status", "powens_code", "ours"),
    [
        (400, "wrongpass", "wrongpass"),
        (400, "wrongPass", "wrongpass"),
        (400, "actionNeeded", "actionNeeded"),
        (400, "websiteUnavailable", "websiteUnavailable"),
        (409, "tooManySync", "rateLimiting"),
        (400, "connectionLocked", "unknown"),
        (403, "forbidden", "unknown"),
        (404, "notFound", "unknown"),
        (400, "somethingNew", "unknown"),
    ],
)
async def test_error_bodies_map_to_our_codes(
    status: int,
    powens_code: str,
    ours: str,
    fake: FakePowens,
    provider: PowensProvider,
    access: ProviderAccess,
    sleep: RecordedSleep,
) -> None:
    fake.fail_next(1, status, code=powens_code)
    with pytest.raises(PowensAPIError) as caught:
        await provider.connection_status(access)
    error = caught.value
    assert (error.code, error.status, error.powens_code) == (ours, status, powens_code)
    assert error.request_id
    assert sleep.waits == []  # 4xx are never retried


async def test_bad_token_is_an_error_not_a_retry(
    fake: FakePowens, provider: PowensProvider, connection: FakeConnection
) -> None:
    access = ProviderAccess("not-a-token", str(connection.id), "1")
    with pytest.raises(PowensAPIError) as caught:
        await provider.connection_status(access)
    assert caught.value.status == 401
    assert len(fake.calls()) == 1


async def test_timeouts_are_retried(
    fake: FakePowens,
    session: aiohttp.ClientSession,
    clock: ManualClock,
    access: ProviderAccess,
    sent: SentRequests,
) -> None:
    short = Timeouts(connect=1.0, request=0.2, sync=0.2)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        """Between attempts: after the second wait, the fake answers again (in time)."""
        waits.append(seconds)
        if len(waits) == 2 and answer_after_two:
            client.timeouts = Timeouts(connect=30.0, request=30.0, sync=30.0)
            fake.answer_calls()

    client = PowensClient(
        session,
        domain="fake-sandbox",
        client_id=fake.client_id,
        client_secret=fake.client_secret,
        base_url=fake.base_url,
        clock=clock,
        sleep=sleep,
        jitter=lambda: 0.0,
        timeouts=short,
    )
    provider = PowensProvider(client, clock)
    answer_after_two = True
    fake.hold_calls()
    assert (await provider.connection_status(access)).ok
    assert len(waits) == 2 and len(sent) == 3

    # Every attempt cut: the retry policy's four, then a transient error.
    answer_after_two = False
    client.timeouts = short
    waits.clear()
    sent.clear()
    fake.hold_calls()
    with pytest.raises(ProviderError) as caught:
        await provider.connection_status(access)
    assert caught.value.code == "websiteUnavailable"
    assert "pas de réponse" in caught.value.detail
    assert len(sent) == RetryPolicy().attempts and len(waits) == RetryPolicy().attempts - 1


async def test_connection_refused_is_transient(
    session: aiohttp.ClientSession, clock: ManualClock, sleep: RecordedSleep
) -> None:
    port = reserve_port()
    client = PowensClient(
        session,
        domain="fake-sandbox",
        client_id="1",
        client_secret="x",
        base_url=f"http://127.0.0.1:{port}/2.0/",
        clock=clock,
        sleep=sleep,
    )
    with pytest.raises(ProviderError) as caught:
        await PowensProvider(client, clock).connection_status(ProviderAccess("t", "1", "1"))
    assert caught.value.code == "websiteUnavailable"
    assert len(sleep.waits) == RetryPolicy().attempts - 1


async def test_secrets_never_reach_the_logs(
    fake: FakePowens,
    provider: PowensProvider,
    access: ProviderAccess,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.fail_next(1, 503)
    await provider.connection_status(access)
    user = await provider.ensure_user(None)
    code = await provider.temporary_code(user)
    text = caplog.text + repr(provider.client) + repr(code)
    for secret in (access.token, fake.client_secret, user.token, code.code):
        assert secret not in text
    assert "powens GET" in caplog.text  # something was logged

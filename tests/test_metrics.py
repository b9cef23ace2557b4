"""The metrics' own parts: the event-loop monitor, the counting login guard, the allowed
networks of ``/health`` and ``/metrics``, the listeners' counts, scrape-time hooks."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import time
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from releves_mailer.clock import ManualClock
from releves_mailer.config import AuthSection, HttpSection
from releves_mailer.listeners import ConnectionLimiter
from releves_mailer.metrics import CountingGuard, LoopMonitor, Metrics
from releves_mailer.portfolio.auth import PasswordGuard
from releves_mailer.portfolio.logins import LoginThrottled
from releves_mailer.web.ops import is_allowed
from tests.waiting import polls

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def samples(metrics: Metrics) -> Samples:
    text = (await metrics.exposition()).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def until_sampled(metrics: Metrics, condition: Callable[[Samples], bool]) -> Samples:
    """The samples once ``condition`` holds (a minute at most: a hang guard)."""
    found: Samples = {}
    async for _ in polls(lambda: str(found), every=0.02):
        if condition(found := await samples(metrics)):
            break
    return found


async def test_a_blocked_event_loop_is_measured() -> None:
    metrics = Metrics()
    stop = asyncio.Event()
    monitor = asyncio.create_task(LoopMonitor(metrics, interval=0.02).run(stop))
    count = ("releves_event_loop_stall_seconds_count", ())
    # The monitor is running: it has measured one of its sleeps and began the next one at
    # once (nothing of this test runs in between), a sleep that began before the block.
    before = (await until_sampled(metrics, lambda found: found[count] >= 1))[count]
    time.sleep(0.3)  # noqa: ASYNC251 - the very blocking call the monitor must see
    # That sleep was of 0.02 s: its measurement, the next one, says 0.28 s late at least.
    found = await until_sampled(metrics, lambda found: found[count] > before)
    stop.set()
    await monitor
    assert found[("releves_event_loop_stall_max_seconds", ())] >= 0.25
    assert found[("releves_event_loop_stall_seconds_count", ())] >= 2
    assert (
        found[("releves_event_loop_stall_seconds_bucket", (("le", "0.25"),))]
        < found[("releves_event_loop_stall_seconds_count", ())]
    )


async def test_the_counting_guard_counts_each_protocol_apart() -> None:
    metrics = Metrics()
    clock = ManualClock(dt.datetime(2026, 3, 10, tzinfo=dt.UTC))
    shared = PasswordGuard(
        clock,
        AuthSection(max_failures_per_login_and_address=1, delay_after_failures=10),
        "releves.localhost",
    )
    imap = CountingGuard(shared, "imap", metrics)
    smtp = CountingGuard(shared, "smtp", metrics)

    async def wrong() -> str | None:
        return None

    async def right() -> str | None:
        return "cabinet@releves.localhost"

    assert await imap.attempt("192.0.2.1", "cabinet", wrong) is None
    with pytest.raises(LoginThrottled):  # the same login from the same address, over SMTP
        await smtp.attempt("192.0.2.1", "cabinet", wrong)
    assert await smtp.attempt("192.0.2.2", "autre", right) == "cabinet@releves.localhost"
    found = await samples(metrics)
    failures = "releves_login_failures_total"
    assert found[(failures, (("protocol", "imap"), ("reason", "credentials")))] == 1
    assert found[(failures, (("protocol", "smtp"), ("reason", "throttled")))] == 1
    assert found[(failures, (("protocol", "smtp"), ("reason", "credentials")))] == 0
    assert found[(failures, (("protocol", "http"), ("reason", "throttled")))] == 0
    assert found[("releves_logins_total", (("protocol", "smtp"),))] == 1


def test_allowed_networks() -> None:
    loopback = HttpSection().metrics_allowed
    assert is_allowed("127.0.0.1", loopback)
    assert is_allowed("127.8.9.10", loopback)
    assert is_allowed("::1", loopback)
    assert is_allowed("::ffff:127.0.0.1", loopback)  # IPv4 client on a dual-stack socket
    assert not is_allowed("192.0.2.7", loopback)
    assert not is_allowed("::2", loopback)
    assert not is_allowed(None, loopback)
    assert not is_allowed("not an address", loopback)
    office = [ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("2001:db8::/32")]
    assert is_allowed("10.20.3.4", office)
    assert is_allowed("2001:db8::5%eth0", office)
    assert not is_allowed("127.0.0.1", office)


def test_the_allowed_list_is_validated() -> None:
    configured = HttpSection.model_validate({"metrics_allowed": ["10.0.0.0/8", "::1"]})
    assert [str(network) for network in configured.metrics_allowed] == ["10.0.0.0/8", "::1/128"]
    with pytest.raises(ValueError, match="metrics_allowed"):
        HttpSection.model_validate({"metrics_allowed": ["10.0.0.1/8"]})


async def test_listener_counts_reach_the_metrics() -> None:
    metrics = Metrics()
    limiter = ConnectionLimiter("IMAP", max_connections=10, max_per_address=1, file_limit=None)
    metrics.watch_listeners({"imap": limiter})
    first, second = socket.socket(), socket.socket()
    try:
        assert limiter.admit(first, "192.0.2.1") is None
        assert limiter.admit(second, "192.0.2.1") is not None  # over the per-address cap
        found = await samples(metrics)
        assert found[("releves_connections_open", (("protocol", "imap"),))] == 1
        assert found[("releves_connections_total", (("protocol", "imap"),))] == 1
        assert found[("releves_connections_refused_total", (("protocol", "imap"),))] == 1
        first.close()
        found = await samples(metrics)
        assert found[("releves_connections_open", (("protocol", "imap"),))] == 0
        assert found[("releves_connections_total", (("protocol", "imap"),))] == 1
    finally:
        first.close()
        second.close()


async def test_a_failing_scrape_hook_keeps_the_scrape(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    calls = []

    async def broken() -> None:
        calls.append("broken")
        raise OSError("database gone")

    async def working() -> None:
        calls.append("working")
        metrics.outbox_queue.set(4)

    metrics.before_scrape(broken)
    metrics.before_scrape(working)
    found = await samples(metrics)
    assert calls == ["broken", "working"]
    assert found[("releves_outbox_queue_length", ())] == 4
    assert "could not be read" in caplog.text


def test_two_daemons_keep_separate_figures() -> None:
    one, two = Metrics(), Metrics()
    one.refreshed("testbank", "wrongpass")
    assert one.registry.get_sample_value("releves_refreshes_total", {"provider": "testbank"}) == 1
    assert (
        two.registry.get_sample_value("releves_refreshes_total", {"provider": "testbank"}) is None
    )

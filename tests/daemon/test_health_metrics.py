"""``/health`` and ``/metrics`` of a real daemon, read by httpx and prometheus-client's parser.

Every daemon runs on 127.0.0.1 with port 0 and its own metrics registry. The figures are
read as a monitoring tool reads them: the exposition parsed by
``prometheus_client.parser.text_string_to_metric_families``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import imaplib
import ipaddress
import re
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from releves_mailer.aggregators.testbank import parse_error_schedule
from releves_mailer.clock import ManualClock
from releves_mailer.collect.connections import build_test_bank, connect_test_bank
from releves_mailer.config import HttpSection
from releves_mailer.daemon.health import HealthCheck, store_folder_part
from releves_mailer.daemon.main import Daemon
from releves_mailer.db import Database
from releves_mailer.db.models import OutboxMessage, OutboxState
from releves_mailer.metrics import Metrics
from releves_mailer.services.monitoring import Monitoring
from releves_mailer.signing.secrets import KeyRing
from releves_mailer.web.ops import setup_ops
from releves_mailer.web.server import HttpServer
from tests.daemon.harness import add_portal_account, daemon_config, running_daemon
from tests.factories import PASSWORD, Spec, add_portfolio
from tests.statements.scenario import paris_night

DOCS = Path(__file__).parents[2] / "docs" / "metrics.md"
#: The first simulated night opens on this Paris date.
DAY = dt.date(2026, 3, 2)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def base_url(daemon: Daemon) -> str:
    return f"http://127.0.0.1:{daemon.ports['http']}"


async def scrape(client: httpx.AsyncClient) -> tuple[Samples, dict[str, str]]:
    """Every sample of ``/metrics`` by (name, labels), and every family's type by name."""
    answer = await client.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    types = {}
    for family in text_string_to_metric_families(answer.text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when absent (a labelled counter not incremented yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def health(client: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    answer = await client.get("/health")
    assert answer.headers["content-type"].startswith("application/json")
    return answer.status_code, answer.json()


@pytest.fixture
async def client_of() -> AsyncIterator[Any]:
    clients: list[httpx.AsyncClient] = []

    def make(daemon: Daemon) -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=base_url(daemon), timeout=60)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def test_metrics_change_after_a_simulated_night(tmp_path: Path, client_of: Any) -> None:
    clock = ManualClock(paris_night(DAY - dt.timedelta(days=1)))
    config = await daemon_config(tmp_path / "data")
    database = Database(config.database_url)
    try:
        keyring = KeyRing.from_file(config.path(config.secrets.key_file))
        bank = build_test_bank(config, clock)
        _, (good, broken) = await add_portfolio(database, clock.now(), [Spec(), Spec()])
        await connect_test_bank(database, good, bank=bank, keyring=keyring, clock=clock)
        await connect_test_bank(
            database,
            broken,
            bank=bank,
            keyring=keyring,
            clock=clock,
            errors=parse_error_schedule([f"wrongpass@{DAY}..{DAY + dt.timedelta(days=3)}"]),
        )
    finally:
        await database.dispose()
    async with running_daemon(config, clock) as daemon:
        client = client_of(daemon)
        before, types = await scrape(client)
        documented = {
            name.removesuffix("_total")
            for name in re.findall(r"^\| `(releves_\w+)`", DOCS.read_text(), re.MULTILINE)
        }
        served = {
            name
            for name in types
            if not name.startswith("process_") and not name.endswith("_created")
        }
        assert documented == served, "docs/metrics.md lists exactly the metrics served"
        assert types["releves_event_loop_stall_seconds"] == "histogram"
        assert types["releves_statement_delivery_lag_seconds"] == "histogram"
        assert types["releves_refreshes"] == "counter"
        assert types["releves_outbox_queue_length"] == "gauge"

        # Two simulated nights with the daemon's own collector, then its delivery.
        await daemon.collector.simulate(DAY, DAY + dt.timedelta(days=1))
        await daemon.delivery.deliver_due()
        after, _ = await scrape(client)

    refreshes = "releves_refreshes_total"
    bank = {"provider": "testbank"}
    assert value(after, refreshes, **bank) > value(before, refreshes, **bank)
    failures = "releves_refresh_failures_total"
    labels = {"provider": "testbank", "code": "wrongpass"}
    assert value(after, failures, **labels) > value(before, failures, **labels)
    cut = "releves_statements_cut_total"
    assert value(after, cut) > value(before, cut)
    delivered = "releves_statements_delivered_total"
    assert value(after, delivered, outcome="mailed") > value(before, delivered, outcome="mailed")
    lag = "releves_statement_delivery_lag_seconds_count"
    assert value(after, lag) > value(before, lag)
    # Read from the database at scrape time.
    produced = value(after, "releves_statements", state="produced")
    assert produced > value(before, "releves_statements", state="produced")
    assert produced >= value(after, cut) - value(before, cut)
    assert value(after, "releves_statements_undelivered") == 0
    # The daemon's own scrapes went through its HTTP listener.
    assert value(after, "releves_connections_total", protocol="http") >= 1


async def test_health_is_200_then_503_when_a_listener_stops(tmp_path: Path, client_of: Any) -> None:
    config = await daemon_config(tmp_path / "data")
    async with running_daemon(config) as daemon:
        client = client_of(daemon)
        status, document = await health(client)
        assert status == 200, document
        parts = document["composants"]
        assert document["etat"] == "ok"
        assert set(parts) == {
            "base_de_donnees",
            "stockage_messages",
            "imap",
            "smtp",
            "http",
            "file_envoi",
            "collecte",
        }
        assert all(part["etat"] == "ok" for part in parts.values())
        assert parts["file_envoi"]["en_attente"] == 0
        assert parts["stockage_messages"]["espace_libre_octets"] > 0
        assert parts["http"]["connexions"] >= 1  # this very request
        # The first collection round runs at start: wait until it has ended.
        for _ in range(600):
            if document["composants"]["collecte"]["dernier_tour"] is not None:
                break
            await asyncio.sleep(0.1)
            _, document = await health(client)
        last = document["composants"]["collecte"]["dernier_tour"]
        assert last is not None and last["rafraichissements"] == 0 and last["echecs"] == 0
        dt.datetime.fromisoformat(last["fin"])

        await daemon.smtp.stop()
        status, document = await health(client)
        assert status == 503
        assert document["etat"] == "panne"
        parts = document["composants"]
        assert parts["smtp"]["etat"] == "panne"
        assert {name for name, part in parts.items() if part["etat"] != "ok"} == {"smtp"}


async def test_a_stuck_outbox_makes_health_503(tmp_path: Path, client_of: Any) -> None:
    clock = ManualClock(dt.datetime(2026, 3, 10, 9, 30, tzinfo=dt.UTC))
    config = await daemon_config(tmp_path / "data")
    database = Database(config.database_url)
    try:
        async with database.session() as session:
            session.add(
                OutboxMessage(
                    created_at=clock.now(),
                    kind="alert",
                    sender="portail@releves.localhost",
                    recipient="client@ailleurs.example",
                    message_id="<stuck@releves.localhost>",
                    subject="Alerte",
                    raw=b"Subject: Alerte\r\n\r\nx\r\n",
                    state=OutboxState.PENDING,
                    attempts=3,
                    # Not due while the test runs: the outbox leaves it waiting.
                    next_attempt_at=clock.now() + dt.timedelta(days=2),
                    last_error="relais injoignable",
                )
            )
        async with running_daemon(config, clock) as daemon:
            client = client_of(daemon)
            status, document = await health(client)
            outbox = document["composants"]["file_envoi"]
            assert status == 200, document
            assert outbox["en_attente"] == 1 and outbox["plus_ancien_secondes"] == 0
            assert outbox["seuil_secondes"] == 3600

            clock.advance(dt.timedelta(hours=2))
            status, document = await health(client)
            outbox = document["composants"]["file_envoi"]
            assert status == 503
            assert outbox["etat"] == "panne" and outbox["plus_ancien_secondes"] == 7200
            samples, _ = await scrape(client)
            assert value(samples, "releves_outbox_queue_length") == 1
            assert value(samples, "releves_outbox_oldest_age_seconds") == 7200
    finally:
        await database.dispose()


async def test_other_networks_get_403(tmp_path: Path, client_of: Any) -> None:
    config = await daemon_config(tmp_path / "data")
    only_elsewhere = [ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("2001:db8::/32")]
    config = config.model_copy(
        update={"http": config.http.model_copy(update={"metrics_allowed": only_elsewhere})}
    )
    async with running_daemon(config) as daemon:
        client = client_of(daemon)
        for path in ("/health", "/metrics"):
            answer = await client.get(path)
            assert answer.status_code == 403
            assert "metrics_allowed" in answer.text
            assert "releves_" not in answer.text
        # The rest of the HTTP server is unaffected.
        assert (await client.get("/static/releves.css")).status_code == 200


async def test_failed_imap_and_smtp_logins_are_counted(tmp_path: Path, client_of: Any) -> None:
    config = await daemon_config(tmp_path / "data")
    await add_portal_account(config)
    async with running_daemon(config) as daemon:
        client = client_of(daemon)
        before, _ = await scrape(client)

        def wrong_login() -> str:
            imap = imaplib.IMAP4("127.0.0.1", daemon.ports["imap"])
            try:
                imap.login("cabinet", "pas le bon mot de passe")
            except imaplib.IMAP4.error as error:
                return str(error)
            finally:
                imap.shutdown()
            return "logged in"

        refusal = await asyncio.to_thread(wrong_login)
        assert "AUTHENTICATIONFAILED" in refusal or "failed" in refusal.lower(), refusal
        after, _ = await scrape(client)

        # SMTP AUTH after STARTTLS: one failure, then a success.
        tls = ssl.create_default_context(cafile=str(config.path(config.tls.certificate)))
        async with aiosmtplib.SMTP(
            hostname="127.0.0.1", port=daemon.ports["smtp"], tls_context=tls, start_tls=True
        ) as smtp:
            await smtp.ehlo()
            with pytest.raises(aiosmtplib.SMTPAuthenticationError):
                # One AUTH PLAIN exchange (login() would try every mechanism in turn).
                await smtp.auth_plain("cabinet", "pas le bon mot de passe")
            await smtp.auth_plain("cabinet", PASSWORD)
        with_smtp, _ = await scrape(client)
    name = "releves_login_failures_total"
    labels = {"protocol": "imap", "reason": "credentials"}
    assert value(before, name, **labels) == 0
    assert value(after, name, **labels) == 1
    assert value(after, name, protocol="smtp", reason="credentials") == 0
    assert value(with_smtp, name, protocol="smtp", reason="credentials") == 1
    assert value(with_smtp, "releves_logins_total", protocol="smtp") == 1
    assert value(with_smtp, "releves_logins_total", protocol="imap") == 0
    assert (
        value(after, "releves_connections_total", protocol="imap")
        == value(before, "releves_connections_total", protocol="imap") + 1
    )


async def test_health_says_database_down(tmp_path: Path) -> None:
    """A database that refuses connections: 503 naming it, the rest still reported."""
    dead = Database("postgresql+asyncpg://postgres@127.0.0.1:1/absent")
    metrics = Metrics()
    check = HealthCheck(
        Monitoring(dead, ManualClock(dt.datetime(2026, 3, 10, tzinfo=dt.UTC)), timeout=10),
        store_folder_part(tmp_path),
        metrics,
        outbox_max_age=dt.timedelta(hours=1),
        collection_max_age=dt.timedelta(hours=1),
    )
    app = web.Application()
    setup_ops(app, health=check, metrics=metrics, allowed=HttpSection().metrics_allowed)
    server = HttpServer(HttpSection(listen="127.0.0.1", port=0), app)
    await server.start()
    check.watch("http", server, server.limiter)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{server.port}", timeout=60
        ) as client:
            status, document = await health(client)
    finally:
        await server.stop()
        await dead.dispose()
    parts = document["composants"]
    assert status == 503
    assert parts["base_de_donnees"]["etat"] == "panne"
    assert "postgres" not in parts["base_de_donnees"]["erreur"]  # no address, no user
    assert parts["file_envoi"]["etat"] == "panne"
    assert parts["stockage_messages"]["etat"] == "ok"
    assert parts["http"]["etat"] == "ok"


async def test_monitoring_figures(database: Database, clock: ManualClock) -> None:
    """The outbox and statement figures of an empty database, then one waiting mail."""
    monitoring = Monitoring(database, clock, timeout=60)
    await monitoring.ping()
    empty = await monitoring.outbox()
    assert (empty.pending, empty.oldest_age, empty.failed) == (0, None, 0)
    statements = await monitoring.statements()
    assert statements.by_state == {"waiting": 0, "produced": 0, "failed": 0}
    assert statements.undelivered == 0
    async with database.session() as session:
        for state in (OutboxState.PENDING, OutboxState.FAILED):
            session.add(
                OutboxMessage(
                    created_at=clock.now(),
                    kind="alert",
                    sender="a@b.example",
                    recipient="c@d.example",
                    message_id=f"<{state}@b.example>",
                    subject="s",
                    raw=b"x",
                    state=state,
                    attempts=1,
                    next_attempt_at=clock.now(),
                    last_error="",
                )
            )
    clock.advance(dt.timedelta(minutes=5))
    figures = await monitoring.outbox()
    assert (figures.pending, figures.oldest_age, figures.failed) == (
        1,
        dt.timedelta(minutes=5),
        1,
    )

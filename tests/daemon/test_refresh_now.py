"""A finished webview or a Powens webhook refreshes early the one connection it concerns.

The real daemon runs (every port 0, 127.0.0.1) on a manual clock set to a Paris daytime, far
from the nightly refresh window, and every connection was checked once before it started: no
connection is due by its schedule, so a refresh seen afterwards can only come from the
"refresh soon" path. Each test triggers one connection, waits until its ``last_check_at``
moves and checks that no other one moved. A second trigger afterwards is the barrier showing
that the first one did nothing more later: collection rounds run one after the other, so
once the second refresh is visible, whatever the first trigger had started is visible too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from sqlalchemy import select

from releves_mailer.aggregators.powens.webhooks import DATE_HEADER, SIGNATURE_HEADER, sign
from releves_mailer.aggregators.registry import open_aggregators
from releves_mailer.clock import PARIS, ManualClock, SystemClock
from releves_mailer.collect.connections import build_test_bank, connect_test_bank
from releves_mailer.collect.scheduler import ConnectionClock, RefreshPlan, is_refresh_due
from releves_mailer.collect.service import CollectionService
from releves_mailer.config import Config
from releves_mailer.daemon.main import Daemon
from releves_mailer.db import Database
from releves_mailer.db.models import BankConnection, SecureLink
from releves_mailer.services.wiring import link_service
from releves_mailer.signing.secrets import KeyRing
from tests.daemon.harness import daemon_config, powens_section, running_daemon
from tests.factories import Spec, add_portfolio, add_powens_connection
from tests.fakes.powens_server import FakeConnection, FakePowens, dumps

#: Seconds to wait for a refresh: generous, CI is a loaded 2-core machine.
WAIT = 120.0
HOUR = dt.timedelta(hours=1)
WEBHOOK_SECRET = secrets.token_hex(16)
#: The calls of a refresh at Powens (the consent check reads ``connections/{id}`` only).
SYNC_CALL = re.compile(r"/users/me/connections/(\d+)/(?:accounts|transactions)$")
ACCOUNT_BOX = re.compile(r'name="account" value="([^"]+)"')

Checks = dict[int, dt.datetime | None]


def daytime_clock() -> ManualClock:
    """Today 10:00 in Paris: four hours after the refresh window (00:00-06:00) closed."""
    today = SystemClock().now().astimezone(PARIS).date()
    return ManualClock(dt.datetime.combine(today, dt.time(10, 0), PARIS))


def base_url(daemon: Daemon) -> str:
    return f"http://127.0.0.1:{daemon.ports['http']}"


async def last_checks(database: Database) -> Checks:
    """``last_check_at`` of every connection, by id."""
    async with database.session() as session:
        rows = await session.execute(select(BankConnection.id, BankConnection.last_check_at))
        return {connection_id: checked for connection_id, checked in rows}


async def assert_nothing_due(database: Database, clock: ManualClock, plan: RefreshPlan) -> None:
    """The precondition: the schedule alone would refresh no connection now."""
    async with database.session() as session:
        rows = (
            await session.execute(
                select(
                    BankConnection.id, BankConnection.last_check_at, BankConnection.last_success_at
                )
            )
        ).all()
    assert rows
    due = [
        connection_id
        for connection_id, checked, succeeded in rows
        if is_refresh_due(ConnectionClock(connection_id, checked, succeeded), clock.now(), plan)
    ]
    assert due == []


async def wait_for_check(database: Database, connection_id: int, at: dt.datetime) -> Checks:
    """Wait until the connection was checked at ``at``; every ``last_check_at`` then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while True:
        checks = await last_checks(database)
        if checks.get(connection_id) == at:
            return checks
        assert loop.time() < deadline, (
            f"connection {connection_id} not refreshed at {at} within {WAIT:.0f} s: {checks}"
        )
        await asyncio.sleep(0.05)


async def through_testbank_webview(client: aiohttp.ClientSession, base: str, link: str) -> None:
    """Open a link, go through the test bank's webview as a client does, come back."""
    opened = await client.get(link, allow_redirects=False)
    assert opened.status == 302, await opened.text()
    webview = opened.headers["Location"]
    page = await client.get(webview, allow_redirects=False)
    assert page.status == 200, await page.text()
    parts = urlsplit(webview)
    code = parse_qs(parts.query)["code"][0]
    connect = parts.path.rsplit("/", 1)[-1] == "connect"

    async def step(*fields: tuple[str, str]) -> aiohttp.ClientResponse:
        answer = await client.post(
            f"{base}/testbank/webview/etape",
            data=[("code", code), *fields],
            allow_redirects=False,
        )
        await answer.read()
        return answer

    if connect:
        for fields in (
            (("step", "bank"), ("bank", "testbank"), ("action", "continuer")),
            (("step", "terms"), ("action", "continuer")),
        ):
            answer = await step(*fields)
            assert answer.status == 200, await answer.text()
    answer = await step(
        ("step", "credentials"), ("login", "client"), ("password", "1234"), ("action", "ok")
    )
    if connect:
        assert answer.status == 200, await answer.text()
        boxes = [html.unescape(value) for value in ACCOUNT_BOX.findall(await answer.text())]
        assert boxes, await answer.text()
        answer = await step(
            ("step", "accounts"), ("action", "continuer"), *(("account", box) for box in boxes)
        )
        assert answer.status == 200, await answer.text()
        answer = await step(("step", "contact"), ("name", "Jean Test"), ("company", "CLIENT"))
    assert answer.status == 303, await answer.text()
    done = await client.get(answer.headers["Location"], allow_redirects=False)
    assert done.status == 200, await done.text()


async def test_webview_completion_refreshes_only_that_connection(tmp_path: Path) -> None:
    clock = daytime_clock()
    config = await daemon_config(tmp_path / "data")
    plan = RefreshPlan.from_config(config.collection)
    database = Database(config.database_url)
    try:
        keyring = KeyRing.from_file(config.path(config.secrets.key_file))
        bank = build_test_bank(config, clock)
        _, redevables = await add_portfolio(
            database,
            clock.now(),
            [Spec(email=f"client{index}@ailleurs.example") for index in range(5)],
        )
        *connected, newcomer = redevables
        connections = {}
        for redevable_id in connected:
            connection = await connect_test_bank(
                database, redevable_id, bank=bank, keyring=keyring, clock=clock
            )
            connections[redevable_id] = connection.id
        checked_at = clock.now()
        report = await CollectionService(
            database, clock, {bank.name: bank}, keyring, plan=plan
        ).run_due()
        assert sorted(r.connection_id for r in report.refreshed if r.ok) == sorted(
            connections.values()
        )
        clock.advance(HOUR)
        await assert_nothing_due(database, clock, plan)
        before = await last_checks(database)
        assert before == dict.fromkeys(connections.values(), checked_at)

        links = link_service(config, database, clock)
        owner = connected[1]
        repaired = connections[owner]
        repair = await links.send(owner, connection_id=repaired)  # a "maj" link
        async with running_daemon(config, clock) as daemon, aiohttp.ClientSession() as client:
            base = base_url(daemon)
            # The client updates the credentials of one connection: only it is refreshed.
            repaired_at = clock.now()
            await through_testbank_webview(client, base, repair.url)
            after = await wait_for_check(database, repaired, repaired_at)
            assert after == {**before, repaired: repaired_at}

            # Another client adds a bank through a "saisie" link: only the new connection is
            # refreshed, and the first one is not refreshed again.
            clock.advance(HOUR)
            added_at = clock.now()
            saisie = await links.send(newcomer)
            await through_testbank_webview(client, base, saisie.url)
            async with database.session() as session:
                link = await session.get(SecureLink, saisie.link.id)
                assert link is not None and link.connection_id is not None
                added = link.connection_id
            final = await wait_for_check(database, added, added_at)
        assert final == {**before, repaired: repaired_at, added: added_at}
    finally:
        await database.dispose()


@pytest.fixture
async def fake() -> AsyncIterator[FakePowens]:
    async with FakePowens(daytime_clock()) as server:
        yield server


def synced(fake: FakePowens, since: int) -> set[int]:
    """The Powens connections whose accounts or transactions were read since call ``since``."""
    return {
        int(found.group(1))
        for request in fake.requests[since:]
        if (found := SYNC_CALL.search(request.path)) is not None
    }


async def post_webhook(
    client: aiohttp.ClientSession, base: str, clock: ManualClock, body: bytes
) -> None:
    """POST a ``CONNECTION_SYNCED`` webhook signed as Powens does, dated now."""
    path = "/powens/webhooks/CONNECTION_SYNCED"
    date = clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    headers = {
        DATE_HEADER: date,
        SIGNATURE_HEADER: sign(WEBHOOK_SECRET, "POST", path, date, body),
        "Content-Type": "application/json",
    }
    async with client.post(base + path, data=body, headers=headers) as answer:
        assert answer.status == 200, await answer.text()
        assert await answer.json() == {"status": "ok"}


async def powens_portfolio(
    config: Config, database: Database, fake: FakePowens, clock: ManualClock, count: int
) -> dict[int, FakeConnection]:
    """``count`` redevables, each with a Powens user and connection at the fake: by local id."""
    keyring = KeyRing.from_file(config.path(config.secrets.key_file))
    _, redevables = await add_portfolio(
        database,
        clock.now(),
        [Spec(email=f"client{index}@ailleurs.example") for index in range(count)],
    )
    found = {}
    for redevable_id in redevables:
        user = fake.create_user()
        remote = fake.add_connection(user)
        account = fake.add_account(remote, name="Compte chèque", balance="100.00")
        fake.add_transaction(
            account,
            value="-12.34",
            date=clock.now().astimezone(PARIS).date() - dt.timedelta(days=1),
        )
        local = await add_powens_connection(
            database,
            keyring,
            clock.now(),
            redevable_id,
            user_id=user.id,
            user_token=user.token,
            connection_id=remote.id,
        )
        found[local] = remote
    return found


async def test_webhook_refreshes_only_the_connection_it_names(
    tmp_path: Path, fake: FakePowens
) -> None:
    assert isinstance(fake.clock, ManualClock)
    clock = fake.clock
    config = await daemon_config(tmp_path / "data", powens=powens_section(fake, WEBHOOK_SECRET))
    plan = RefreshPlan.from_config(config.collection)
    database = Database(config.database_url)
    try:
        remotes = await powens_portfolio(config, database, fake, clock, 4)
        checked_at = clock.now()
        async with open_aggregators(config, clock) as aggregators:
            report = await CollectionService(
                database,
                clock,
                aggregators.providers,
                KeyRing.from_file(config.path(config.secrets.key_file)),
                plan=plan,
            ).run_due()
        assert sorted(r.connection_id for r in report.refreshed if r.ok) == sorted(remotes)
        assert synced(fake, 0) == {remote.id for remote in remotes.values()}
        clock.advance(HOUR)
        await assert_nothing_due(database, clock, plan)
        before = await last_checks(database)
        assert before == dict.fromkeys(remotes, checked_at)
        first, _, last, _ = remotes
        unknown = max(fake.connections) + 1000

        mark = len(fake.requests)
        async with running_daemon(config, clock) as daemon, aiohttp.ClientSession() as client:
            base = base_url(daemon)
            # Powens says it synchronised one connection: only that one is refreshed.
            named_at = clock.now()
            payload = fake.webhook_payload("CONNECTION_SYNCED", remotes[first])
            await post_webhook(client, base, clock, dumps(payload).encode())
            after = await wait_for_check(database, first, named_at)
            assert after == {**before, first: named_at}
            assert synced(fake, mark) == {remotes[first].id}

            # A webhook naming a connection stored nowhere is acknowledged and refreshes
            # nothing; the known one posted after it is the barrier.
            clock.advance(HOUR)
            mark = len(fake.requests)
            barrier_at = clock.now()
            stranger = {"connection": {"id": unknown, "id_user": unknown + 1}}
            await post_webhook(client, base, clock, dumps(stranger).encode())
            payload = fake.webhook_payload("CONNECTION_SYNCED", remotes[last])
            await post_webhook(client, base, clock, dumps(payload).encode())
            final = await wait_for_check(database, last, barrier_at)
            assert synced(fake, mark) == {remotes[last].id}
        assert final == {**before, first: named_at, last: barrier_at}
    finally:
        await database.dispose()

"""Webhooks: signature checked over the raw body, events parsed into "refresh early" only."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from releves_mailer.aggregators.powens.webhooks import (
    WebhookEvent,
    WebhookKind,
    parse_event,
    sign,
    verify_signature,
    webhook_handler,
)
from releves_mailer.clock import ManualClock
from tests.fakes.powens_server import FakeConnection, FakePowens, FakeUser


@dataclass
class Receiver:
    """Our webhook endpoint, served for real on 127.0.0.1."""

    url: str
    events: list[WebhookEvent] = field(default_factory=list)
    fail: bool = False

    def to(self, event: str) -> str:
        return f"{self.url}/powens/webhooks/{event.lower()}"


async def _serve(
    fake: FakePowens, clock: ManualClock, max_age: dt.timedelta | None
) -> AsyncIterator[Receiver]:
    receiver = Receiver("")

    async def on_event(event: WebhookEvent) -> None:
        if receiver.fail:
            raise RuntimeError("boom")
        receiver.events.append(event)

    app = web.Application()
    handler = webhook_handler(fake.webhook_secret, on_event, max_age=max_age, clock=clock)
    app.router.add_post("/powens/webhooks/{event}", handler)
    app.router.add_post("/powens/webhook", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield receiver
    finally:
        await runner.cleanup()


@pytest.fixture
async def receiver(fake: FakePowens, clock: ManualClock) -> AsyncIterator[Receiver]:
    async for served in _serve(fake, clock, None):
        yield served


@pytest.fixture
async def strict_receiver(fake: FakePowens, clock: ManualClock) -> AsyncIterator[Receiver]:
    async for served in _serve(fake, clock, dt.timedelta(minutes=5)):
        yield served


async def test_connection_synced_is_accepted(
    fake: FakePowens, receiver: Receiver, connection: FakeConnection, user: FakeUser
) -> None:
    account = fake.add_account(connection)
    fake.add_transaction(account, value="-1.00", date=dt.date(2026, 3, 1))
    status = await fake.emit_webhook(
        "CONNECTION_SYNCED", connection, url=receiver.to("CONNECTION_SYNCED")
    )
    assert status == 200
    assert receiver.events == [
        WebhookEvent(WebhookKind.CONNECTION_SYNCED, str(connection.id), str(user.id))
    ]
    assert receiver.events[0].refresh and not receiver.events[0].deleted


async def test_account_synced_and_connection_deleted(
    fake: FakePowens, receiver: Receiver, connection: FakeConnection, user: FakeUser
) -> None:
    account = fake.add_account(connection)
    assert (
        await fake.emit_webhook(
            "ACCOUNT_SYNCED", connection, url=receiver.to("account_synced"), account=account
        )
        == 200
    )
    assert (
        await fake.emit_webhook(
            "CONNECTION_DELETED", connection, url=receiver.to("connection-deleted")
        )
        == 200
    )
    synced, deleted = receiver.events
    assert synced == WebhookEvent(
        WebhookKind.ACCOUNT_SYNCED, str(connection.id), str(user.id), str(account.id)
    )
    assert deleted.deleted and deleted.connection_id == str(connection.id)


async def test_event_inferred_without_a_name(
    fake: FakePowens, receiver: Receiver, connection: FakeConnection
) -> None:
    assert (
        await fake.emit_webhook(
            "CONNECTION_SYNCED", connection, url=f"{receiver.url}/powens/webhook"
        )
        == 200
    )
    assert receiver.events[0].kind is WebhookKind.CONNECTION_SYNCED


async def test_bad_signature_is_refused(
    fake: FakePowens, receiver: Receiver, connection: FakeConnection
) -> None:
    status = await fake.emit_webhook(
        "CONNECTION_SYNCED", connection, url=receiver.to("connection_synced"), secret="wrong"
    )
    assert status == 403 and receiver.events == []


async def test_missing_signature_is_refused(
    fake: FakePowens, receiver: Receiver, connection: FakeConnection
) -> None:
    status = await fake.emit_webhook(
        "CONNECTION_SYNCED", connection, url=receiver.to("connection_synced"), signed=False
    )
    assert status == 401 and receiver.events == []


async def test_tampered_body_is_refused(
    fake: FakePowens,
    receiver: Receiver,
    connection: FakeConnection,
    session: aiohttp.ClientSession,
) -> None:
    url = receiver.to("connection_synced")
    body = json.dumps({"user": {"id": 1}, "connection": {"id": connection.id}}).encode()
    date = "2026-03-02T09:00:00Z"
    signature = fake.sign("/powens/webhooks/connection_synced", date, body)
    headers = {"BI-Signature-Date": date, "BI-Signature": signature}
    tampered = body.replace(str(connection.id).encode(), b"999")
    async with session.post(url, data=tampered, headers=headers) as response:
        assert response.status == 403
    other_path = fake.sign("/elsewhere", date, body)
    async with session.post(url, data=body, headers={**headers, "BI-Signature": other_path}) as r:
        assert r.status == 403
    async with session.post(url, data=body, headers={**headers, "BI-Signature": "%%%"}) as r:
        assert r.status == 403
    async with session.post(url, data=body, headers=headers) as response:
        assert response.status == 200
    assert len(receiver.events) == 1


async def test_malformed_payloads_are_400(
    fake: FakePowens, receiver: Receiver, connection: FakeConnection
) -> None:
    for body in (b"not json", b"[1, 2]", b'{"connection": {"id": "x1"}}', b'{"user": {}}'):
        status = await fake.emit_webhook(
            "CONNECTION_SYNCED", connection, url=receiver.to("connection_synced"), body=body
        )
        assert status == 400, body
    assert receiver.events == []


async def test_other_events_are_acknowledged_and_ignored(
    fake: FakePowens, receiver: Receiver, connection: FakeConnection
) -> None:
    status = await fake.emit_webhook(
        "USER_SYNCED", connection, url=receiver.to("user_synced"), body=b'{"user": {"id": 1}}'
    )
    assert status == 200 and receiver.events == []


async def test_failing_consumer_answers_500(
    fake: FakePowens, receiver: Receiver, connection: FakeConnection
) -> None:
    receiver.fail = True
    status = await fake.emit_webhook(
        "CONNECTION_SYNCED", connection, url=receiver.to("connection_synced")
    )
    assert status == 500


async def test_stale_signature_date_when_checked(
    fake: FakePowens,
    strict_receiver: Receiver,
    connection: FakeConnection,
    clock: ManualClock,
) -> None:
    url = strict_receiver.to("connection_synced")
    assert await fake.emit_webhook("CONNECTION_SYNCED", connection, url=url) == 200
    # Signed one hour ago (the fake signs with its own clock), beyond the 5 minutes allowed.
    fake.clock = ManualClock(clock.now() - dt.timedelta(hours=1))
    assert await fake.emit_webhook("CONNECTION_SYNCED", connection, url=url) == 401
    assert len(strict_receiver.events) == 1


def test_signature_helpers() -> None:
    body = b'{"id": 1}'
    signature = sign("s3cr3t", "POST", "/hook", "2026-03-02T09:00:00Z", body)
    assert verify_signature(
        "s3cr3t",
        method="POST",
        path="/hook",
        date="2026-03-02T09:00:00Z",
        body=body,
        signature=signature,
    )
    assert not verify_signature(
        "s3cr3t",
        method="POST",
        path="/hook",
        date="2026-03-02T09:00:01Z",
        body=body,
        signature=signature,
    )
    assert parse_event("connection_deleted", b'{"id": 5, "id_user": 2}') == WebhookEvent(
        WebhookKind.CONNECTION_DELETED, "5", "2"
    )
    assert parse_event(None, b'{"id": 5}') is None


def test_handler_needs_a_secret() -> None:
    async def nothing(event: WebhookEvent) -> None:
        return None

    with pytest.raises(ValueError):
        webhook_handler("", nothing)

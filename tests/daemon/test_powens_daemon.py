"""The daemon with Powens enabled: signed webhooks accepted, links open the Powens webview."""

from __future__ import annotations

import asyncio
import secrets
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from releves_mailer.aggregators.powens.webhooks import DATE_HEADER, SIGNATURE_HEADER, sign
from releves_mailer.clock import SystemClock
from releves_mailer.config import Config
from releves_mailer.daemon.main import Daemon
from tests.daemon.harness import a_redevable_with_a_link, daemon_config, powens_section
from tests.fakes.powens_server import FakePowens

WEBHOOK_SECRET = secrets.token_hex(16)


@pytest.fixture
async def fake() -> AsyncIterator[FakePowens]:
    async with FakePowens(SystemClock()) as server:
        yield server


async def powens_config(tmp_path: Path, fake: FakePowens) -> Config:
    return await daemon_config(tmp_path / "data", powens=powens_section(fake, WEBHOOK_SECRET))


async def test_daemon_serves_powens_links_and_webhooks(tmp_path: Path, fake: FakePowens) -> None:
    config = await powens_config(tmp_path, fake)
    clock = SystemClock()
    link = await a_redevable_with_a_link(config)

    daemon = Daemon(config, clock)
    ready = asyncio.Event()
    runner = asyncio.create_task(daemon.run(on_ready=lambda _: ready.set()))
    try:
        await asyncio.wait_for(ready.wait(), timeout=30)
        base = f"http://127.0.0.1:{daemon.ports['http']}"
        async with aiohttp.ClientSession() as http:
            # The link opens the Powens webview (the fake's) with our client id and a state.
            async with http.get(link, allow_redirects=False) as answer:
                assert answer.status in (302, 303), await answer.text()
                target = urllib.parse.urlsplit(answer.headers["Location"])
            assert f"{target.scheme}://{target.netloc}/" == fake.webview_base.rstrip(
                "/"
            ) + "/" or fake.webview_base.startswith(f"{target.scheme}://{target.netloc}")
            query = urllib.parse.parse_qs(target.query)
            assert query["client_id"] == [fake.client_id]
            assert query["redirect_uri"] == [f"{base}/releves/retour"]
            assert query["state"] and query["code"]
            assert fake.user_creations == 1

            # Webhooks: a good signature is accepted, a forged one refused.
            body = b'{"connection": {"id": 7, "id_user": 1}}'
            path = "/powens/webhooks/CONNECTION_SYNCED"
            date = clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
            good = {
                DATE_HEADER: date,
                SIGNATURE_HEADER: sign(WEBHOOK_SECRET, "POST", path, date, body),
                "Content-Type": "application/json",
            }
            async with http.post(base + path, data=body, headers=good) as answer:
                assert answer.status == 200, await answer.text()
            bad = dict(good, **{SIGNATURE_HEADER: sign("autre", "POST", path, date, body)})
            async with http.post(base + path, data=body, headers=bad) as answer:
                assert answer.status == 403
    finally:
        daemon.stop()
        await asyncio.wait_for(runner, timeout=30)

"""No secret in the daemon's log: a real ``serve`` at DEBUG level, in both formats, sees
passwords (IMAP, SMTP, portal, relay), a secure link's jeton, Powens codes, tokens and
secrets go through it; none of them reaches its log file."""

from __future__ import annotations

import asyncio
import base64
import imaplib
import json
import secrets
import signal
import ssl
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib
import httpx
import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from releves_mailer.aggregators.powens.webhooks import DATE_HEADER, SIGNATURE_HEADER, sign
from releves_mailer.clock import SystemClock
from releves_mailer.config import Config
from tests.daemon.harness import a_redevable_with_a_link, daemon_config, powens_section
from tests.daemon.processes import start_serve, stop, wait_for_ports
from tests.factories import PASSWORD
from tests.fakes.powens_server import FakePowens, WebviewOutcome
from tests.waiting import polls
from tests.web.portal.conftest import csrf_of, log_in

WRONG_PASSWORD = "pas le bon mot de passe 42"
#: Generous: CI is a loaded 2-core machine.
WAIT = 120.0


class AuthRelay:
    """An outside relay (aiosmtpd sink) asking for AUTH: records the logins and the mails."""

    def __init__(self) -> None:
        self.logins: list[tuple[str, str]] = []
        self.received: list[Envelope] = []
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        self.logins.append((data.login.decode(), data.password.decode()))
        return AuthResult(success=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received.append(envelope)
        return "250 Message accepted"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: SMTP(
                self,
                hostname="relay.test",
                authenticator=self.authenticate,
                auth_require_tls=False,
                loop=loop,
            ),
            "127.0.0.1",
            0,
        )
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def fake() -> AsyncIterator[FakePowens]:
    async with FakePowens(SystemClock()) as server:
        yield server


@pytest.fixture
async def relay() -> AsyncIterator[AuthRelay]:
    sink = AuthRelay()
    await sink.start()
    yield sink
    await sink.stop()


async def prepared(tmp_path: Path, fake: FakePowens, relay: AuthRelay, webhook: str) -> Config:
    """Data directory with Powens, the relay (login ``relais``), DEBUG logs into a file."""
    config = await daemon_config(tmp_path / "data", powens=powens_section(fake, webhook))
    assert config.source is not None
    text = config.source.read_text(encoding="utf-8")
    relay_at = text.index("[relay]\n")
    text = text[:relay_at] + text[relay_at:].replace('host = ""', 'host = "127.0.0.1"', 1).replace(
        "port = 587", f"port = {relay.port}", 1
    ).replace('username = ""', 'username = "relais"', 1).replace(
        "starttls = true", "starttls = false", 1
    )
    text = text.replace('level = "INFO"', 'level = "DEBUG"', 1)
    text = text.replace('# file = "releves-mailer.log"', 'file = "daemon.log"', 1)
    config.source.write_text(text, encoding="utf-8")
    return config


def imap_logins(port: int) -> None:
    client = imaplib.IMAP4("127.0.0.1", port)
    client.starttls(ssl._create_unverified_context())
    client.login("cabinet", PASSWORD)
    client.logout()
    client = imaplib.IMAP4("127.0.0.1", port)
    client.starttls(ssl._create_unverified_context())
    with pytest.raises(imaplib.IMAP4.error):
        client.login("cabinet", WRONG_PASSWORD)
    client.logout()


async def smtp_logins(port: int) -> None:
    for password, accepted in ((PASSWORD, True), (WRONG_PASSWORD, False)):
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port, start_tls=False, validate_certs=False, timeout=30
        )
        await client.connect()
        await client.starttls()
        if accepted:
            await client.login("cabinet", password)
        else:
            with pytest.raises(aiosmtplib.SMTPAuthenticationError):
                await client.login("cabinet", password)
        await client.quit()


async def portal_logins(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        await log_in(client, "cabinet")
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        page = await client.get("/portail/connexion")
        refused = await client.post(
            "/portail/connexion",
            data={"login": "cabinet", "password": WRONG_PASSWORD, "csrf": csrf_of(page.text)},
        )
        assert refused.status_code != 302


async def until(condition: Any, what: str) -> None:
    async for _ in polls(f"{what} did not happen", limit=WAIT):
        if condition():
            break


def query_values(url: str) -> list[str]:
    return [value for _, value in urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query)]


@pytest.mark.slow
@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_no_secret_in_the_log_of_a_real_run(
    tmp_path: Path, fake: FakePowens, relay: AuthRelay, log_format: str
) -> None:
    webhook_secret = secrets.token_urlsafe(24)
    relay_password = secrets.token_urlsafe(18)
    config = await prepared(tmp_path, fake, relay, webhook_secret)
    link = await a_redevable_with_a_link(config)
    watched: dict[str, str] = {
        "account password": PASSWORD,
        "wrong password": WRONG_PASSWORD,
        "SASL PLAIN": base64.b64encode(f"\0cabinet\0{PASSWORD}".encode()).decode(),
        "relay password": relay_password,
        "webhook secret": webhook_secret,
        "Powens client secret": fake.client_secret,
        "jeton": query_values(link)[0],
    }
    process = start_serve(
        config,
        "--log-format",
        log_format,
        env={"RELEVES_MAILER__RELAY__PASSWORD": relay_password},
        http_port=config.http.port,
    )
    try:
        ports = await asyncio.to_thread(wait_for_ports, process, config.data_dir)
        base = f"http://127.0.0.1:{ports['http']}"

        # The link mail went out through the relay, logged in with its password.
        await until(lambda: relay.received, "the link mail through the relay")
        assert relay.logins == [("relais", relay_password)]

        await asyncio.to_thread(imap_logins, ports["imap"])
        await smtp_logins(ports["smtp"])
        await portal_logins(base)

        # The client goes through the Powens webview: code and state come back to us, we
        # trade the code for the user's token, then refresh the new connection with it.
        fake.queue_webview(WebviewOutcome())
        async with aiohttp.ClientSession() as client:
            opened = await client.get(link, allow_redirects=False)
            assert opened.status == 302, await opened.text()
            webview = opened.headers["Location"]
            visited = await client.get(webview, allow_redirects=False)
            assert visited.status == 302, await visited.text()
            callback = visited.headers["Location"]
            done = await client.get(callback, allow_redirects=False)
            assert done.status == 200, await done.text()
            for index, value in enumerate(query_values(webview) + query_values(callback)):
                if len(value) >= 16:
                    watched[f"webview parameter {index}"] = value
            await until(
                lambda: any("/transactions" in request.path for request in fake.requests),
                "the refresh of the new connection",
            )
            # A signed webhook.
            body = b'{"connection": {"id": 7, "id_user": 1}}'
            path = "/powens/webhooks/CONNECTION_SYNCED"
            date = SystemClock().now().strftime("%Y-%m-%dT%H:%M:%SZ")
            signature = sign(webhook_secret, "POST", path, date, body)
            watched["webhook signature"] = signature
            headers = {DATE_HEADER: date, SIGNATURE_HEADER: signature}
            async with client.post(base + path, data=body, headers=headers) as answer:
                assert answer.status == 200, await answer.text()
        for index, token in enumerate([*fake.tokens, *fake._temporary_tokens]):
            watched[f"Powens token {index}"] = token
        assert any(name.startswith("Powens token") for name in watched)

        process.send_signal(signal.SIGHUP)  # the reload logs too
        await asyncio.sleep(0)
    finally:
        assert await asyncio.to_thread(stop, process) == 0

    log = (config.data_dir / "daemon.log").read_text(encoding="utf-8")
    lines = log.splitlines()
    # The run was logged (at DEBUG): the link, the Powens calls, the IMAP/SMTP servers.
    assert any("opened, webview of powens" in line for line in lines), log[-3000:]
    assert any("powens GET" in line for line in lines)
    assert any("reloaded" in line for line in lines)
    for name, secret in watched.items():
        assert secret not in log, f"{name} found in the {log_format} log"
    if log_format == "json":
        entries = [json.loads(line) for line in lines]
        assert all({"time", "level", "logger", "message"} <= set(entry) for entry in entries)
        # The refresh of the new connection names it; the link's lines name the link.
        assert any("connection_id" in entry for entry in entries)
        opened = next(e for e in entries if "opened, webview of powens" in e["message"])
        assert isinstance(opened["link_id"], int)
    else:
        assert any("[connection_id=" in line for line in lines)
        assert any("opened, webview of powens [link_id=" in line for line in lines)

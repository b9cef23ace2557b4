"""Issue 13, point 6: one login guard for IMAP, SMTP AUTH and the portal.

Real servers on port 0 (IMAP on 127.0.0.1 and ::1, SMTP, the portal's HTTP server) share
one ``PasswordGuard``, driven by aioimaplib, imaplib, aiosmtplib and httpx. The guard's sleep
is a :class:`Gate`: it records each delay and, while closed, holds the attempts that passed
the limits, so the tests see exactly which attempts were in flight and which were refused.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import imaplib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aioimaplib
import aiosmtplib
import httpx
import pytest

from releves_mailer.clock import ManualClock
from releves_mailer.config import AuthSection
from releves_mailer.db import Database
from releves_mailer.portfolio.auth import PasswordGuard, PortfolioAuthenticator
from releves_mailer.portfolio.throttle import DatabaseGuardStore
from tests.factories import PASSWORD
from tests.mailservers import DOMAIN, MailServers, mail_servers, smtp_client
from tests.web.portal.conftest import PortalHarness, csrf_of, open_portal

T = TypeVar("T")
LIMIT = 5  # failures per (address, login)


class Gate:
    """The guard's sleep: records every delay; holds the sleepers while closed."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.opened = asyncio.Event()
        self.opened.set()

    async def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        await self.opened.wait()
        await asyncio.sleep(seconds)


class CountingAuthenticator(PortfolioAuthenticator):
    """The real authenticator, counting the password checks it is asked for."""

    checks = 0

    async def authenticate(self, username: str, password: str) -> str | None:
        self.checks += 1
        return await super().authenticate(username, password)


@dataclass
class World:
    mail: MailServers
    portal: PortalHarness
    guard: PasswordGuard
    gate: Gate
    authenticator: CountingAuthenticator
    clock: ManualClock


def world_fixture(**limits: float) -> Callable[..., AsyncIterator[World]]:
    async def make(
        database: Database, clock: ManualClock, tmp_path: Path, request: pytest.FixtureRequest
    ) -> AsyncIterator[World]:
        gate = Gate()
        config = AuthSection(max_failures_per_login_and_address=LIMIT, **limits)  # type: ignore[arg-type]
        # The daemon's store (the database, shared by every daemon) and the in-memory one.
        store = None
        if request.param == "database":
            store = DatabaseGuardStore(database, clock, config.window)
        guard = PasswordGuard(clock, config, DOMAIN, sleep=gate.sleep, store=store)
        authenticator = CountingAuthenticator(database, DOMAIN)
        async with (
            open_portal(database, clock, tmp_path, guard=guard) as portal,
            mail_servers(
                database, clock, tmp_path, guard=guard, authenticator=authenticator, ipv6=True
            ) as mail,
        ):
            yield World(mail, portal, guard, gate, authenticator, clock)

    return make


#: Every attempt sleeps (a gate to hold them in flight): no free failure before the delay.
#: The in-memory store checks no SQL: its variant runs once, not again on PostgreSQL.
STORES = [pytest.param("memory", marks=pytest.mark.once), "database"]
gated = pytest.fixture(params=STORES)(
    world_fixture(
        delay_after_failures=0,
        first_delay_seconds=0.01,
        max_delay_seconds=0.01,
        max_failures_per_address=12,
    )
)
#: The delay starts after one failure of a login, doubles from 0.05 s, at most 2 s.
delayed = pytest.fixture(params=STORES)(
    world_fixture(delay_after_failures=1, first_delay_seconds=0.05, max_delay_seconds=2)
)


async def settle(tasks: list[asyncio.Task[T]], count: int) -> list[T]:
    """Wait (a minute at most: a hang guard) until ``count`` of ``tasks`` are done; their
    results."""
    async with asyncio.timeout(60):
        while sum(task.done() for task in tasks) < count:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED, timeout=0.5)
    return [task.result() for task in tasks if task.done()]


async def imap_login(port: int, login: str, password: str, host: str = "127.0.0.1") -> str:
    """The tagged answer of one LOGIN over aioimaplib, as text."""
    client = aioimaplib.IMAP4(host=host, port=port, timeout=30)
    await client.wait_hello_from_server()
    try:
        response = await client.login(login, password)
        return f"{response.result} {response.lines[-1].decode()}"
    finally:
        await client.logout()


def imaplib_login(port: int, login: str, password: str, host: str = "127.0.0.1") -> str:
    client = imaplib.IMAP4(host, port, timeout=30)
    try:
        client.login(login, password)
        return "OK"
    except imaplib.IMAP4.error as error:
        return str(error)
    finally:
        client.shutdown()


async def smtp_login(mail: MailServers, login: str, password: str) -> int:
    """The reply code of AUTH PLAIN over aiosmtplib (235 on success)."""
    async with smtp_client(mail) as client:
        try:
            response = await client.auth_plain(login, password)
        except aiosmtplib.SMTPAuthenticationError as error:
            return error.code
        return response.code


async def test_parallel_imap_guesses_are_checked_up_to_the_limit_only(gated: World) -> None:
    gated.gate.opened.clear()
    port = gated.mail.imap_port
    tasks = [
        asyncio.create_task(imap_login(port, "cabinet", f"guess {index}")) for index in range(40)
    ]
    # While the first attempts are held in flight, every other one is refused at once.
    refused = await settle(tasks, 40 - LIMIT)
    assert len(refused) == 40 - LIMIT
    assert all(answer.startswith("NO [UNAVAILABLE]") for answer in refused), refused
    assert gated.authenticator.checks == 0
    gated.gate.opened.set()
    answers = await asyncio.wait_for(asyncio.gather(*tasks), 60)
    failed = [answer for answer in answers if "[AUTHENTICATIONFAILED]" in answer]
    assert len(failed) == LIMIT
    assert gated.authenticator.checks == LIMIT
    # The limit is reached: the right password is refused too, without being checked.
    assert (await imap_login(port, "cabinet", PASSWORD)).startswith("NO [UNAVAILABLE]")
    assert gated.authenticator.checks == LIMIT


async def test_parallel_portal_guesses_get_429_beyond_the_limit(gated: World) -> None:
    async with gated.portal.client() as client:
        page = await client.get("/portail/connexion")
        token = csrf_of(page.text)

        async def attempt(password: str) -> httpx.Response:
            return await client.post(
                "/portail/connexion",
                data={"login": "autre", "password": password, "csrf": token},
            )

        gated.gate.opened.clear()
        tasks = [asyncio.create_task(attempt(f"guess {index}")) for index in range(20)]
        refused = await settle(tasks, 20 - LIMIT)
        assert [response.status_code for response in refused] == [429] * (20 - LIMIT)
        assert "Trop de tentatives" in refused[0].text
        gated.gate.opened.set()
        responses = await asyncio.wait_for(asyncio.gather(*tasks), 60)
        assert sorted(response.status_code for response in responses) == [401] * LIMIT + [429] * (
            20 - LIMIT
        )
        assert (await attempt(PASSWORD)).status_code == 429


async def test_smtp_auth_is_limited_like_imap_and_never_confirms_a_refused_password(
    gated: World,
) -> None:
    gated.gate.opened.clear()
    tasks = [
        asyncio.create_task(smtp_login(gated.mail, "autre", f"guess {index}"))
        for index in range(12)
    ]
    refused = await settle(tasks, 12 - LIMIT)
    assert refused == [454] * (12 - LIMIT)
    gated.gate.opened.set()
    codes = await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert sorted(codes) == [454] * (12 - LIMIT) + [535] * LIMIT
    # IMAP and SMTP count together: guesses over IMAP close SMTP AUTH for that login too.
    for index in range(LIMIT):
        answer = await imap_login(gated.mail.imap_port, "agence", f"guess {index}")
        assert "[AUTHENTICATIONFAILED]" in answer
    checks = gated.authenticator.checks
    assert (await imap_login(gated.mail.imap_port, "agence", PASSWORD)).startswith(
        "NO [UNAVAILABLE]"
    )
    assert await smtp_login(gated.mail, "agence", PASSWORD) == 454
    assert await smtp_login(gated.mail, f"releves.agence@{DOMAIN}", PASSWORD) == 454
    assert gated.authenticator.checks == checks  # the right password was never checked


async def test_an_attacker_slows_the_owner_down_but_cannot_lock_him_out(delayed: World) -> None:
    port = delayed.mail.imap_port
    assert delayed.mail.imap6 is not None and delayed.mail.imap6.port is not None
    port6 = delayed.mail.imap6.port
    # The attacker hammers "cabinet" from 127.0.0.1 until the guard refuses him.
    for index in range(LIMIT):
        answer = await asyncio.to_thread(imaplib_login, port, "cabinet", f"guess {index}")
        assert "[AUTHENTICATIONFAILED]" in answer
    for _ in range(3):
        answer = await asyncio.to_thread(imaplib_login, port, "cabinet", PASSWORD)
        assert "[UNAVAILABLE]" in answer
    # Each failure made the next attempt on the login wait longer.
    assert delayed.gate.delays == [0.05, 0.1, 0.2, 0.4]
    # Another user behind the attacker's address is not shut out.
    assert await asyncio.to_thread(imaplib_login, port, "agence", PASSWORD) == "OK"
    # The owner, from ::1, logs in after the (grown) delay.
    expected = await delayed.guard.next_delay("cabinet")
    assert expected == 0.8
    started = time.monotonic()
    assert await asyncio.to_thread(imaplib_login, port6, "cabinet", PASSWORD, "::1") == "OK"
    assert time.monotonic() - started >= expected
    assert delayed.gate.delays[-1] == expected
    assert await delayed.guard.next_delay("cabinet") == 0.0  # his success ends the delay
    # The attacker stays refused until his failures leave the window.
    assert "[UNAVAILABLE]" in await asyncio.to_thread(imaplib_login, port, "cabinet", "again")
    delayed.clock.advance(dt.timedelta(minutes=delayed.guard.config.window_minutes))
    answer = await asyncio.to_thread(imaplib_login, port, "cabinet", "again")
    assert "[AUTHENTICATIONFAILED]" in answer


async def test_one_address_spraying_logins_is_refused_everywhere(gated: World) -> None:
    limit = gated.guard.config.max_failures_per_address
    logins = [f"inconnu{index}" for index in range(limit)]
    for login in logins:
        answer = await imap_login(gated.mail.imap_port, login, "guess")
        assert "[AUTHENTICATIONFAILED]" in answer
    assert (await imap_login(gated.mail.imap_port, "autre", PASSWORD)).startswith(
        "NO [UNAVAILABLE]"
    )
    assert await smtp_login(gated.mail, "autre", PASSWORD) == 454
    # Another address is not concerned.
    assert gated.mail.imap6 is not None and gated.mail.imap6.port is not None
    answer = await imap_login(gated.mail.imap6.port, "autre", PASSWORD, host="::1")
    assert answer.startswith("OK")

"""A real daemon for tests: a fresh data directory, every port 0, started and stopped cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from releves_mailer.clock import Clock, SystemClock
from releves_mailer.config import Config, load_config
from releves_mailer.daemon.main import Daemon, ListenOverrides
from releves_mailer.db import Database
from releves_mailer.portfolio.accounts import AccountInput, create_account
from releves_mailer.portfolio.redevables import create_redevable, validate_redevable
from releves_mailer.services.wiring import link_service
from tests.datadirs import initialised_data_dir
from tests.factories import PASSWORD, add_subscribed_account, make_nic, make_siren
from tests.fakes.powens_server import FakePowens
from tests.web.portal.conftest import log_in

__all__ = [
    "a_redevable_with_a_link",
    "add_portal_account",
    "daemon_config",
    "portal_client",
    "portal_daemon",
    "powens_section",
    "running_daemon",
]


def powens_section(fake: FakePowens, webhook_secret: str) -> str:
    """The ``[aggregator.powens]`` section pointing at ``fake``."""
    return (
        '[aggregator.powens]\nenabled = true\ndomain = "fake-sandbox"\n'
        f'api_url = "{fake.base_url}"\nwebview_url = "{fake.webview_base}"\n'
        f'client_id = "{fake.client_id}"\nclient_secret = "{fake.client_secret}"\n'
        f'webhook_secret = "{webhook_secret}"\n'
    )


async def daemon_config(folder: Path, *, powens: str = "", portal: str = "") -> Config:
    """A freshly initialised data directory, listening on 127.0.0.1 with free ports.

    ``powens`` replaces the ``[aggregator.powens]`` section; ``portal`` lines are added to
    ``[portal]``.
    """
    config = await initialised_data_dir(folder)
    assert config.source is not None
    text = config.source.read_text(encoding="utf-8")
    if powens:
        start = text.index("[aggregator.powens]")
        end = text.index("[aggregator.testbank]")
        text = text[:start] + powens + "\n" + text[end:]
    if portal:
        at = text.index("[portal]\n") + len("[portal]\n")
        text = text[:at] + portal + "\n" + text[at:]
    config.source.write_text(text, encoding="utf-8")
    return ListenOverrides("127.0.0.1", 0, 0, 0, 0).apply(load_config(config.source))


@contextlib.asynccontextmanager
async def running_daemon(config: Config, clock: Clock | None = None) -> AsyncIterator[Daemon]:
    """Run the daemon until the block ends; its ports are in ``daemon.ports``."""
    for attempt in range(3):
        daemon = Daemon(config, clock or SystemClock())
        ready = asyncio.Event()
        runner = asyncio.create_task(daemon.run(on_ready=lambda _, event=ready: event.set()))
        waiter = asyncio.create_task(ready.wait())
        try:
            await asyncio.wait({runner, waiter}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        error = runner.exception() if runner.done() else None
        if not (isinstance(error, OSError) and error.errno == errno.EADDRINUSE and attempt < 2):
            break
        # The HTTP port was free when the config was made (links need it before the start);
        # another process may have taken it since: pick another.
        config = ListenOverrides("127.0.0.1", http_port=0).apply(config)
    try:
        if runner.done():
            runner.result()  # the start failed: raise its error
        assert ready.is_set(), "the daemon did not start within 60 s"
        yield daemon
    finally:
        daemon.stop()
        await asyncio.wait_for(runner, timeout=30)


async def add_portal_account(config: Config, login: str = "cabinet", index: int = 1) -> int:
    """A subscribed portal account (password :data:`tests.factories.PASSWORD`); its id."""
    database = Database(config.database_url)
    try:
        return await add_subscribed_account(database, SystemClock(), login, index)
    finally:
        await database.dispose()


@contextlib.asynccontextmanager
async def portal_daemon(folder: Path) -> AsyncIterator[Daemon]:
    """A running daemon (fresh data directory) whose portal has the account ``cabinet``."""
    config = await daemon_config(folder)
    await add_portal_account(config)
    async with running_daemon(config) as running:
        yield running


@contextlib.asynccontextmanager
async def portal_client(daemon: Daemon, login: str = "cabinet") -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the daemon's portal, logged in as ``login``."""
    base = f"http://127.0.0.1:{daemon.ports['http']}"
    async with httpx.AsyncClient(base_url=base, follow_redirects=False, timeout=60) as client:
        await log_in(client, login)
        yield client


async def a_redevable_with_a_link(config: Config) -> str:
    """Portal account ``cabinet`` (password PASSWORD), a remote-entry redevable: its link."""
    clock = SystemClock()
    database = Database(config.database_url)
    try:
        async with database.session() as session:
            account = await create_account(
                session,
                clock,
                AccountInput(
                    login="cabinet",
                    company_name="Cabinet",
                    siret=make_siren(1) + make_nic(make_siren(1)),
                    email="chef@cabinet.example",
                ),
                PASSWORD,
            )
            data, _ = validate_redevable(
                siren=make_siren(40),
                company_name="CLIENT POWENS",
                email="client@ailleurs.example",
                periodicity="JOURNALIERE",
                remote_entry="1",
            )
            assert data is not None
            redevable = await create_redevable(session, clock, account, data)
        issued = await link_service(config, database).send(redevable.id)
        return issued.url
    finally:
        await database.dispose()

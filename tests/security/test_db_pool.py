"""Issue 13.5: a storm of correct IMAP logins queues on a bounded pool and leaves no handle.

200 aioimaplib clients log in at once to the real IMAP server over the real portfolio
authenticator and a SQLite database; the handles the process holds on the database file
(and its WAL and shared-memory files), counted from /proc/self/fd, never exceed those of
the full pool during the storm and are back to that baseline once the clients are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import aioimaplib
import pytest
from sqlalchemy import text

from releves_mailer.clock import ManualClock
from releves_mailer.db import Database
from releves_mailer.db.engine import SIDE_POOL_SIZE, SQLITE_POOL_SIZE
from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.store import MessageStore
from releves_mailer.portfolio.auth import PortfolioAuthenticator
from tests.factories import PASSWORD
from tests.mailbox.conftest import imap_section, quick_guard
from tests.waiting import polls

pytestmark = [
    pytest.mark.usefixtures("family"),
    pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd"),
]

DOMAIN = "releves.example"
STORM = 200
#: Descriptors one SQLite connection may hold: the database, its WAL, its shared memory.
PER_CONNECTION = 3


def database_handles(database: Database) -> int:
    """Open descriptors of this process on the database file or its -wal/-shm companions."""
    path = str(database.url.database)
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor, for one)
        if target in (path, path + "-wal", path + "-shm"):
            count += 1
    return count


async def log_in_and_out(port: int) -> None:
    client = aioimaplib.IMAP4(host="127.0.0.1", port=port, timeout=300)
    await client.wait_hello_from_server()
    response = await client.login("cabinet", PASSWORD)
    assert response.result == "OK", response
    await client.logout()


async def test_a_login_storm_leaves_no_database_handle_behind(
    database: Database, clock: ManualClock, tmp_path: Path
) -> None:
    if not database.is_sqlite:
        pytest.skip("counts handles on the SQLite file")
    store = MessageStore(database, tmp_path / "messages", clock)
    server = ImapServer(
        imap_section(
            max_connections_per_login=STORM,
            max_connections=STORM,
            max_connections_per_address=STORM,
        ),
        store,
        PortfolioAuthenticator(database, DOMAIN),
        None,
        clock,
        # Every login of the storm is in flight at once, from one address: let them all in.
        guard=quick_guard(
            clock, max_failures_per_address=STORM, max_failures_per_login_and_address=STORM
        ),
    )
    await server.start()
    try:
        assert server.port is not None
        # The baseline: both pools (the database's, the store's own) at their full size,
        # every connection they may ever open.
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(SQLITE_POOL_SIZE):
                session = await stack.enter_async_context(database.session())
                await session.execute(text("SELECT 1"))
            for _ in range(SIDE_POOL_SIZE):
                session = await stack.enter_async_context(store._session())
                await session.execute(text("SELECT 1"))
        await database.quick_rows("SELECT 1", {})  # and its one quick connection
        baseline = database_handles(database)
        assert 0 < baseline <= (SQLITE_POOL_SIZE + SIDE_POOL_SIZE + 1) * PER_CONNECTION

        peak = baseline
        done = asyncio.Event()

        async def watch() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, database_handles(database))
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        storm = asyncio.gather(*(log_in_and_out(server.port) for _ in range(STORM)))
        try:
            await asyncio.wait_for(storm, 600)
        finally:
            done.set()
            await watcher
        # The logins queued for the pool's connections instead of opening more.
        assert peak <= baseline, f"{peak} handles on the database during the storm"

        # Every client is gone: the count comes back to the baseline (at once or nearly; a
        # minute of patience is a hang guard).
        handles = database_handles(database)
        async for _ in polls(lambda: f"{handles} handles on the database after the storm"):
            if (handles := database_handles(database)) <= baseline:
                break
    finally:
        await server.stop()
        await store.close()

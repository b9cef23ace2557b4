"""Event-loop stalls and the owner's wait while an attacker guesses passwords over IMAP.

Usage: .venv/bin/python bench/login_guard_bench.py [--attackers N] [--rounds N]

Starts the real IMAP server (127.0.0.1 and ::1, port 0) over a temporary SQLite database
with one account and the default ``[auth]`` guard. Each round, N attackers on 127.0.0.1 send
a wrong password for that login at once (aioimaplib), while a ticker measures how late the
event loop wakes up; then the owner logs in from ::1. Prints, per round, how many guesses
were checked and refused, the worst loop stall and the owner's login time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aioimaplib

from releves_mailer.clock import SystemClock
from releves_mailer.config import AuthSection, ImapSection
from releves_mailer.db import Database
from releves_mailer.db.migrate import upgrade
from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.store import MessageStore
from releves_mailer.portfolio.accounts import AccountInput, create_account
from releves_mailer.portfolio.auth import PasswordGuard, PortfolioAuthenticator

DOMAIN = "releves.example"
PASSWORD = "bench password 1"
TICK = 0.01


async def login(host: str, port: int, password: str) -> str:
    client = aioimaplib.IMAP4(host=host, port=port, timeout=120)
    await client.wait_hello_from_server()
    try:
        response = await client.login("cabinet", password)
        return f"{response.result} {response.lines[-1].decode()}"
    finally:
        await client.logout()


async def ticker(stalls: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(TICK)
        stalls.append(time.perf_counter() - before - TICK)


async def main(attackers: int, rounds: int) -> None:
    clock = SystemClock()
    with tempfile.TemporaryDirectory() as folder:
        database = Database(f"sqlite+aiosqlite:///{folder}/bench.sqlite3")
        await upgrade(database)
        async with database.session() as session:
            await create_account(
                session,
                clock,
                AccountInput(
                    login="cabinet",
                    company_name="Cabinet Bench",
                    siret="94078161000016",
                    email="bench@cabinet.example",
                ),
                PASSWORD,
            )
        store = MessageStore(database, Path(folder) / "messages", clock)
        config = AuthSection()
        guard = PasswordGuard(clock, config, DOMAIN)
        authenticator = PortfolioAuthenticator(database, DOMAIN)
        servers = [
            ImapServer(
                ImapSection(listen=host, port=0, tls_port=0),
                store,
                authenticator,
                None,
                clock,
                guard=guard,
            )
            for host in ("127.0.0.1", "::1")
        ]
        for server in servers:
            await server.start()
        print(f"guard: {config.model_dump()}")
        print(f"{attackers} parallel wrong passwords from 127.0.0.1, then the owner from ::1")
        try:
            for number in range(1, rounds + 1):
                stalls: list[float] = []
                stop = asyncio.Event()
                ticking = asyncio.create_task(ticker(stalls, stop))
                started = time.perf_counter()
                answers = await asyncio.gather(
                    *(
                        login("127.0.0.1", servers[0].port or 0, f"guess {i}")
                        for i in range(attackers)
                    )
                )
                attack = time.perf_counter() - started
                started = time.perf_counter()
                owner = await login("::1", servers[1].port or 0, PASSWORD)
                owner_time = time.perf_counter() - started
                stop.set()
                await ticking
                checked = sum("[AUTHENTICATIONFAILED]" in answer for answer in answers)
                refused = sum("[UNAVAILABLE]" in answer for answer in answers)
                print(
                    f"round {number}: checked {checked}, refused {refused} "
                    f"(attack answered in {attack:.2f} s); owner {owner.split()[0]} "
                    f"in {owner_time:.2f} s; loop stall max {max(stalls) * 1000:.1f} ms, "
                    f"median {statistics.median(stalls) * 1000:.1f} ms"
                )
        finally:
            for server in servers:
                await server.stop()
            await store.close()
            await database.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attackers", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.attackers, arguments.rounds))

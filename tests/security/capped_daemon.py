"""The real daemon in a child process under a lowered open-file limit (tests and bench).

The parent side: :func:`capped_daemon` prepares a data directory (one account, ``cabinet``)
and runs the child, a :class:`Child` to talk to.

The child side: ``python -m tests.security.capped_daemon CONFIG LIMIT`` lowers
``RLIMIT_NOFILE`` (soft and hard) to LIMIT, then runs the daemon of CONFIG on free ports, as
``serve`` does, logging to ``daemon.log`` in the data directory. One-line commands on stdin,
each answered on stdout:

* ``hog ADDRESS``: wait until the daemon holds connections from ADDRESS only (the other
  clients' sockets closed on the daemon's side too), close the refusals still lingering
  (their timers would free descriptors meanwhile), then open ``/dev/null`` until the process
  is out of descriptors (``hogged N``);
* ``free``: close them again (``freed``);
* ``stop``: stop the daemon cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from releves_mailer.clock import SystemClock
from releves_mailer.config import Config, load_config
from releves_mailer.daemon.main import Daemon, ListenOverrides
from releves_mailer.db import Database
from releves_mailer.listeners import close_lingering_refusals
from releves_mailer.logs import configure_logging
from releves_mailer.portfolio.accounts import create_account
from tests.datadirs import initialised_data_dir
from tests.factories import CABINET, PASSWORD

DOMAIN = "releves.localhost"

# -- parent side -----------------------------------------------------------------------------


@dataclass
class Child:
    process: asyncio.subprocess.Process
    ports: dict[str, int]
    log: Path

    async def say(self, command: str) -> str:
        """Send one command; its answer (none for ``stop``)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()
        if command == "stop":
            return ""
        line = await asyncio.wait_for(self.process.stdout.readline(), 60)
        return line.decode().strip()


async def prepare(directory: Path) -> Config:
    """A data directory with one account, ``cabinet``, password ``PASSWORD``."""
    config = await initialised_data_dir(directory, DOMAIN)
    database = Database(config.database_url)
    try:
        async with database.session() as session:
            await create_account(session, SystemClock(), CABINET, PASSWORD)
    finally:
        await database.dispose()
    return config


@contextlib.asynccontextmanager
async def capped_daemon(directory: Path, limit: int) -> AsyncIterator[Child]:
    """The daemon of a new data directory in ``directory``, under ``limit`` descriptors."""
    config = await prepare(directory)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELEVES_MAILER")}
    env["RELEVES_MAILER__LOGGING__FILE"] = "daemon.log"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.security.capped_daemon",
        str(config.source),
        str(limit),
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    child = Child(process, {}, config.data_dir / "daemon.log")
    assert process.stdout is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 300)).decode().split()
        assert line and line[0] == "ready", line
        child.ports = {name: int(port) for name, port in (item.split("=") for item in line[1:])}
        yield child
    finally:
        if process.returncode is None:
            with contextlib.suppress(ConnectionError):
                await child.say("stop")
            try:
                await asyncio.wait_for(process.wait(), 60)
            except TimeoutError:
                process.kill()
                await process.wait()


# -- child side ------------------------------------------------------------------------------


def answer(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def only_connections_from(daemon: Daemon, address: str) -> None:
    for _ in range(6000):  # a minute: a hang guard
        servers = (daemon.imap, daemon.smtp, daemon.http)
        if all(set(server.limiter.per_address()) <= {address} for server in servers):
            return
        await asyncio.sleep(0.01)
    raise RuntimeError(f"connections from others than {address} stay open")


async def obey(daemon: Daemon) -> None:
    hogged: list[int] = []
    while True:
        command = (await asyncio.to_thread(sys.stdin.readline)).strip()
        if command.startswith("hog "):
            await only_connections_from(daemon, command.split()[1])
            close_lingering_refusals()
            try:
                while True:
                    hogged.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                answer(f"hogged {len(hogged)}")
        elif command == "free":
            while hogged:
                os.close(hogged.pop())
            answer("freed")
        elif command in ("stop", ""):
            daemon.stop()
            return


async def main(config_path: Path, limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    overrides = ListenOverrides("127.0.0.1", 0, 0, 0, 0)
    config = overrides.apply(load_config(config_path))
    configure_logging(config.logging, config.data_dir)
    daemon = Daemon(config, SystemClock())
    tasks: list[asyncio.Task[None]] = []

    def ready(running: Daemon) -> None:
        tasks.append(asyncio.create_task(obey(running)))
        answer("ready " + " ".join(f"{name}={port}" for name, port in running.ports.items()))

    await daemon.run(on_ready=ready)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))

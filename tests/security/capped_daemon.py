"""Child process of the connection-caps test: the real daemon under a lowered open-file limit.

``python -m tests.security.capped_daemon CONFIG LIMIT`` lowers ``RLIMIT_NOFILE`` (soft and
hard) to LIMIT, then runs the daemon of CONFIG on free ports, as ``serve`` does, logging to
the config's log file. One-line commands on stdin, each answered on stdout:

* ``hog``: open ``/dev/null`` until the process is out of descriptors (``hogged N``);
* ``free``: close them again (``freed``);
* ``stop``: stop the daemon cleanly.
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
from pathlib import Path

from releves_mailer.clock import SystemClock
from releves_mailer.config import load_config
from releves_mailer.daemon import Daemon, ListenOverrides
from releves_mailer.logs import configure_logging


def answer(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def obey(daemon: Daemon) -> None:
    hogged: list[int] = []
    while True:
        command = (await asyncio.to_thread(sys.stdin.readline)).strip()
        if command == "hog":
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

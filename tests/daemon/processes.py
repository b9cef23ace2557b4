"""``releves-mailer serve`` as a real process on a data directory, every port 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from releves_mailer.config import Config

__all__ = ["PORT_OPTIONS", "start_serve", "stop", "wait_for_ports"]

PORT_OPTIONS = (
    "--listen",
    "127.0.0.1",
    "--imap-port",
    "0",
    "--imaps-port",
    "0",
    "--smtp-port",
    "0",
    "--http-port",
    "0",
)


def start_serve(
    config: Config,
    *options: str,
    env: Mapping[str, str] | None = None,
    http_port: int = 0,
) -> subprocess.Popen[bytes]:
    """Start ``serve`` on ``config``'s file; its output goes to ``serve.out`` beside it.

    ``http_port``: the port links were made for (``config.http.port``), else a free one.
    """
    assert config.source is not None
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RELEVES_MAILER")}
    environ.update(env or {})
    output = (config.source.parent.parent / "serve.out").open("ab")
    with output:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "releves_mailer",
                "--config",
                str(config.source),
                "serve",
                *PORT_OPTIONS[:-1],
                str(http_port),
                *options,
            ],
            env=environ,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def wait_for_ports(
    process: subprocess.Popen[bytes], data_dir: Path, timeout: float = 120
) -> dict[str, int]:
    """The ports ``process`` wrote into ``ports.json`` (the file must not exist before)."""
    path = data_dir / "ports.json"
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"serve exited with status {process.returncode}"
        assert time.monotonic() < deadline, f"serve did not start within {timeout} s"
        time.sleep(0.2)
    ports: dict[str, int] = json.loads(path.read_text())
    return ports


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then the exit status (SIGKILL after a minute)."""
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()

"""Time from ``releves-mailer serve`` launch to an answering IMAP server, and clean stop.

Usage: .venv/bin/python bench/startup_bench.py [--runs 5]
Creates a fresh data directory, then starts the daemon ``runs`` times: each time it measures
the wall time until ``ports.json`` is written and the IMAP greeting arrives, then sends
SIGTERM and measures the time to exit. Target: ready in under 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = 2.0


def ready_time(config: Path, ports_file: Path) -> tuple[float, float]:
    env = dict(os.environ, RELEVES_MAILER_CONFIG=str(config))
    ports_file.unlink(missing_ok=True)
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "releves_mailer",
            "serve",
            "--imap-port",
            "0",
            "--imaps-port",
            "0",
            "--smtp-port",
            "0",
            "--http-port",
            "0",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not ports_file.exists():
            if process.poll() is not None:
                raise SystemExit("the daemon exited before being ready")
            time.sleep(0.005)
        port = json.loads(ports_file.read_text())["imap"]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            greeting = connection.recv(200)
        ready = time.perf_counter() - started
        assert greeting.startswith(b"* OK"), greeting
    finally:
        stopping = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    assert code == 0, f"exit status {code}"
    return ready, time.perf_counter() - stopping


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        subprocess.run(
            [sys.executable, "-m", "releves_mailer", "init", str(data)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        results = [
            ready_time(data / "releves-mailer.toml", data / "ports.json") for _ in range(runs)
        ]
    ready = statistics.median(r for r, _ in results)
    stop = statistics.median(s for _, s in results)
    verdict = "OK" if ready < TARGET else "TOO SLOW"
    print(
        f"ready (process start to IMAP greeting), median of {runs}: {ready:.2f} s "
        f"(target < {TARGET:.0f} s) {verdict}; runs: " + ", ".join(f"{r:.2f}" for r, _ in results)
    )
    print(f"clean stop on SIGTERM, median: {stop:.2f} s")


if __name__ == "__main__":
    main()

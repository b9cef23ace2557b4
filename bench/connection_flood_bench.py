"""Benchmark of the daemon under hostile connection counts (issue 13, points 4 and 5).

Runs the real daemon in a child process under an open-file limit (default 1,024, as in the
issue), with the default caps, then:

1. an idle flood: ``--idle`` sockets (default 1,500) from 127.0.0.2, spread over IMAP,
   SMTP and HTTP, kept open; it prints how many were refused, the child's open
   descriptors, and how long a legitimate client from 127.0.0.1 takes to log in and select
   over IMAP, send a mail over SMTP and load a page over HTTP meanwhile;
2. a login storm: ``--logins`` concurrent IMAP logins (default 1,000) from 40 loopback
   addresses; it prints the child's descriptors on ``releves.sqlite3`` (and its WAL/SHM)
   before, at the peak, and after, and how long the storm took;
3. the log: its size, its tracebacks and its lines about refusals and exhaustion.

Usage: ``python bench/connection_flood_bench.py [--limit N] [--idle N] [--logins N]``
(Linux: it reads ``/proc/<pid>/fd``).
"""

from __future__ import annotations

import argparse
import asyncio
import imaplib
import os
import smtplib
import sys
import tempfile
import time
from collections import Counter
from email.message import EmailMessage
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.factories import PASSWORD
from tests.security.capped_daemon import DOMAIN, Child, capped_daemon

REFUSALS = {"imap": b"* BYE", "smtp": b"421 ", "http": b"HTTP/1.1 503"}


def descriptors(pid: int, suffix: str | None = None) -> int:
    count = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if suffix is None or target.split("/")[-1].startswith(suffix):
            count += 1
    return count


async def idle_socket(port: int, service: str) -> tuple[str, asyncio.StreamWriter | None]:
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=("127.0.0.2", 0)
        )
    except OSError:
        return "failed", None
    try:
        said = await asyncio.wait_for(reader.read(100), 3)
    except TimeoutError:
        said = b""
    return ("refused" if said.startswith(REFUSALS[service]) else "held"), writer


def legitimate_imap(port: int) -> None:
    with imaplib.IMAP4("127.0.0.1", port, timeout=60) as client:
        client.login("cabinet", PASSWORD)
        client.select("INBOX")
        client.logout()


def legitimate_smtp(port: int) -> None:
    message = EmailMessage()
    message["From"] = "client@ailleurs.example"
    message["To"] = f"cabinet@{DOMAIN}"
    message["Subject"] = "Bench"
    message.set_content("Bonjour")
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.send_message(message)


async def timed(label: str, work: object) -> None:
    start = time.perf_counter()
    try:
        await work  # type: ignore[misc]
        outcome = "ok"
    except Exception as error:  # a bench reports, it does not stop
        outcome = f"FAILED ({type(error).__name__}: {error})"
    print(f"  legitimate {label}: {time.perf_counter() - start:.3f} s {outcome}")


async def flood(child: Child, count: int) -> None:
    pid = child.process.pid
    print(f"idle flood: {count} sockets from 127.0.0.2")
    services = ["imap", "smtp", "http"]
    results = await asyncio.gather(
        *(idle_socket(child.ports[services[i % 3]], services[i % 3]) for i in range(count))
    )
    outcomes = Counter(outcome for outcome, _ in results)
    print(f"  sockets: {dict(outcomes)}; daemon descriptors: {descriptors(pid)}")
    await timed("IMAP login+select", asyncio.to_thread(legitimate_imap, child.ports["imap"]))
    await timed("SMTP send", asyncio.to_thread(legitimate_smtp, child.ports["smtp"]))
    async with httpx.AsyncClient(timeout=60) as client:
        url = f"http://127.0.0.1:{child.ports['http']}/static/releves.css"
        await timed("HTTP GET", client.get(url))
    for _, writer in results:
        if writer is not None:
            writer.close()


async def login(port: int, source: str) -> str:
    """One LOGIN and LOGOUT from ``source`` (by hand: the client libraries pick no source)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    except OSError as error:
        return type(error).__name__
    try:
        greeting = await asyncio.wait_for(reader.readline(), 900)
        if not greeting.startswith(b"* OK"):
            return greeting.decode(errors="replace").split(" ", 2)[1]
        writer.write(f'a1 LOGIN cabinet "{PASSWORD}"\r\n'.encode())
        line = b""
        while not line.startswith(b"a1 "):
            line = await asyncio.wait_for(reader.readline(), 900)
        writer.write(b"a2 LOGOUT\r\n")
        await writer.drain()
        return line.split()[1].decode()
    except (OSError, TimeoutError, IndexError) as error:
        return type(error).__name__
    finally:
        writer.close()


async def storm(child: Child, count: int) -> None:
    pid = child.process.pid
    before = descriptors(pid, "releves.sqlite3")
    print(f"login storm: {count} concurrent IMAP logins from 40 addresses")
    peak = before
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, descriptors(pid, "releves.sqlite3"))
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    start = time.perf_counter()
    results = await asyncio.gather(
        *(login(child.ports["imap"], f"127.0.1.{1 + i % 40}") for i in range(count))
    )
    elapsed = time.perf_counter() - start
    done.set()
    await watcher
    await asyncio.sleep(2)
    after = descriptors(pid, "releves.sqlite3")
    print(f"  answers: {dict(Counter(results))} in {elapsed:.1f} s")
    print(f"  database descriptors: before {before}, peak {peak}, 2 s after {after}")


async def main(limit: int, idle: int, logins: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        async with capped_daemon(Path(folder) / "data", limit) as child:
            print(f"daemon pid {child.process.pid}, open-file limit {limit}")
            await flood(child, idle)
            await storm(child, logins)
            log = child.log.read_text(encoding="utf-8")
        print(
            f"log: {len(log.encode()):,} bytes, {log.count('Traceback')} tracebacks, "
            f"{log.count('refused a connection')} refusal lines, "
            f"{log.count('cannot accept connections')} exhaustion lines"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=1024)
    parser.add_argument("--idle", type=int, default=1500)
    parser.add_argument("--logins", type=int, default=1000)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.limit, arguments.idle, arguments.logins))

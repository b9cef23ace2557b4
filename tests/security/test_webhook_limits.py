"""Issue 13, points 3 and 9: the Powens webhook of the real daemon against hostile senders.

A body above 1 MiB is refused (413) as soon as that is known, without waiting for the rest;
an unsigned one before any of it is read; a signature older than 5 minutes, and a replay of
one already accepted, are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from releves_mailer.aggregators.powens import webhooks
from releves_mailer.aggregators.powens.webhooks import DATE_HEADER, SIGNATURE_HEADER, sign
from releves_mailer.clock import SystemClock
from releves_mailer.daemon.main import Daemon
from tests.daemon.harness import daemon_config, powens_section, running_daemon
from tests.fakes.powens_server import FakePowens

SECRET = secrets.token_hex(16)
PATH = "/powens/webhooks/connection_synced"
MIB = 1024 * 1024


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    async with FakePowens(SystemClock()) as fake:
        config = await daemon_config(tmp_path / "data", powens=powens_section(fake, SECRET))
        async with running_daemon(config) as running:
            yield running


def _signed(body: bytes, date: str) -> dict[str, str]:
    return {
        DATE_HEADER: date,
        SIGNATURE_HEADER: sign(SECRET, "POST", PATH, date, body),
        "Content-Type": "application/json",
    }


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _raw_exchange(port: int, head: bytes, body_parts: list[bytes]) -> tuple[int, bytes]:
    """Send ``head`` and ``body_parts`` (never the rest the head announces) while reading the
    answer: it must come while the sender still owes most of its body.

    The server closes the connection instead of draining the body, so the sender's writes may
    fail and the kernel may reset the connection: the answer is read as it arrives, alongside
    the writes, and a reset before any answer counts as status 0 (refused, no answer read).
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send() -> None:
        writer.write(head)
        for part in body_parts:
            writer.write(part)
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        try:
            answer = await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout=30)
        except (ConnectionResetError, asyncio.IncompleteReadError):
            return 0, b""
        status = int(answer.split(b" ", 2)[1])
        try:
            rest = await asyncio.wait_for(reader.read(), timeout=30)
        except ConnectionResetError:
            rest = b""
        return status, answer + rest
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sender
        writer.close()


def _head(port: int, headers: dict[str, str]) -> bytes:
    lines = [f"POST {PATH} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class TooLarge(logging.Handler):
    """Counts the webhook's log lines about a body refused as too large."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(f"powens webhook above {MIB} bytes"):
            self.count += 1


@pytest.fixture
def too_large() -> Iterator[TooLarge]:
    handler = TooLarge()
    webhooks.log.addHandler(handler)
    try:
        yield handler
    finally:
        webhooks.log.removeHandler(handler)


async def _refused_as_too_large(
    port: int, head: bytes, body_parts: list[bytes], too_large: TooLarge
) -> None:
    """The exchange ends in a refusal of the body for its size, the rest of it never sent.

    The server answers 413 and closes without reading the rest: part of what was sent may be
    left unread, and then the kernel resets the connection, which may destroy the answer
    before the client reads it (status 0). Either way the daemon logged, before it answered
    or closed, that it refused this body as too large: that is what proves the refusal."""
    before = too_large.count
    status, _ = await _raw_exchange(port, head, body_parts)
    assert status in (413, 0), status
    assert too_large.count == before + 1


async def test_a_2_mib_body_is_refused_without_being_read(
    daemon: Daemon, too_large: TooLarge
) -> None:
    port = daemon.ports["http"]
    assert port is not None
    body = b"x" * (2 * MIB)
    headers = {**_signed(body, _now()), "Content-Length": str(len(body))}
    # Announced: refused at once, though only the first 64 KiB of the 2 MiB were sent.
    await _refused_as_too_large(port, _head(port, headers), [body[: 64 * 1024]], too_large)

    # Not announced (chunked): refused once past 1 MiB, the other ~1 MiB never sent.
    chunked = {**_signed(body, _now()), "Transfer-Encoding": "chunked"}
    chunk = 64 * 1024
    parts = [
        b"%x\r\n" % chunk + body[i : i + chunk] + b"\r\n" for i in range(0, MIB + chunk, chunk)
    ]
    await _refused_as_too_large(port, _head(port, chunked), parts, too_large)

    # Unsigned: refused before a byte of the body is read.
    unsigned = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    status, _ = await _raw_exchange(port, _head(port, unsigned), [])
    assert status == 401

    # The webhook still works for a genuine delivery.
    good = json.dumps({"connection": {"id": 7, "id_user": 1}}).encode()
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"http://127.0.0.1:{port}{PATH}", data=good, headers=_signed(good, _now())) as r,
    ):
        assert r.status == 200, await r.text()


async def test_old_signatures_and_replays_are_refused(daemon: Daemon) -> None:
    url = f"http://127.0.0.1:{daemon.ports['http']}{PATH}"
    body = json.dumps({"connection": {"id": 7, "id_user": 1}}).encode()
    six_minutes_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=6)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    async with aiohttp.ClientSession() as http:
        for date in ("2001-01-01T00:00:00Z", six_minutes_ago, "Mon, 01 Jan 2001 00:00:00 GMT"):
            async with http.post(url, data=body, headers=_signed(body, date)) as answer:
                assert answer.status == 401, (date, await answer.text())
        fresh = _signed(body, _now())
        async with http.post(url, data=body, headers=fresh) as answer:
            assert answer.status == 200, await answer.text()
        for _ in range(3):
            async with http.post(url, data=body, headers=fresh) as answer:
                assert answer.status == 409, await answer.text()
        # A new delivery of the same event (signed at another second) is not a replay.
        await asyncio.sleep(1.1)
        async with http.post(url, data=body, headers=_signed(body, _now())) as answer:
            assert answer.status == 200, await answer.text()

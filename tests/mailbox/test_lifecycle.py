"""Server lifecycle and cross-process changes: listeners, autologout, another process's writes."""

from __future__ import annotations

import logging

import pytest

from releves_mailer.clock import ManualClock
from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.sink import MessageSink
from releves_mailer.mailbox.store import MessageStore

from .conftest import (
    DOMAIN,
    RawClient,
    StaticAuthenticator,
    imap_section,
    new_key,
    put,
    quick_guard,
    sample_message,
)

ADDRESS = f"demo@{DOMAIN}"


async def test_one_log_line_per_listener(
    store: MessageStore, server_ssl, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="releves_mailer.mailbox")
    server = ImapServer(
        imap_section(), store, StaticAuthenticator(), server_ssl, clock, guard=quick_guard(clock)
    )
    await server.start()
    await server.stop()
    lines = [r.getMessage() for r in caplog.records if "listening" in r.getMessage()]
    assert lines == [
        f"IMAP listening on 127.0.0.1:{server.port}",
        f"IMAPS listening on 127.0.0.1:{server.tls_port}",
    ]


async def test_idle_session_sees_changes_made_by_another_process(
    server: ImapServer, store: MessageStore, clock: ManualClock
) -> None:
    # A second store over the same database and files stands for the CLI process: it shares
    # no in-memory notification with the server, only the database.
    other_process = MessageStore(store.database, store.blob_dir, clock)
    sink: MessageSink = other_process
    client = await RawClient.connect(server.port)
    await client.ok("s SELECT INBOX")
    await client.send(b"i IDLE\r\n")
    assert (await client.line()).startswith(b"+ ")
    await sink.deliver(ADDRESS, sample_message(), new_key())
    # Only the server's poll of the database (every 0.3 s here) can bring this news.
    assert await client.line() == b"* 1 EXISTS\r\n"
    await client.send(b"DONE\r\n")
    lines = await client.until_tagged(b"i")
    assert lines[-1].startswith(b"i OK")
    await other_process.close()
    await client.close()


async def test_autologout_after_idle_timeout(server_factory) -> None:  # type: ignore[no-untyped-def]
    server: ImapServer = await server_factory()
    # The config refuses less than 60 s; the test shortens it past validation.
    server.config = server.config.model_copy(update={"idle_timeout_seconds": 1})
    # Logged in: before login the shorter preauth_idle_timeout_seconds applies.
    client = await RawClient.connect(server.port, login=True)
    assert (await client.until_closed())[0].startswith(b"* BYE")
    await client.close()


async def test_delivered_message_is_stored_once(store: MessageStore) -> None:
    raw = sample_message()
    await put(store, ADDRESS, raw)
    await put(store, ADDRESS, raw, folder="Archive")
    files = [path for path in store.blob_dir.rglob("*") if path.is_file()]
    assert len(files) == 1 and files[0].read_bytes() == raw


async def test_garbage_collection_keeps_referenced_and_recent_files(
    store: MessageStore, clock: ManualClock
) -> None:
    import datetime as dt
    import os

    kept = sample_message(subject="kept")
    await put(store, ADDRESS, kept)
    orphan = store.blob_dir / "ab" / ("c" * 62)
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"orphan")
    old = (clock.now() - dt.timedelta(hours=2)).timestamp()
    for path in store.blob_dir.glob("??/*"):
        os.utime(path, (old, old))
    assert await store.collect_garbage() == 1
    assert not orphan.exists()
    assert [p.read_bytes() for p in store.blob_dir.glob("??/*")] == [kept]

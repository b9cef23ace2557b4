"""The server driven by the three real client libraries: imaplib, imapclient, aioimaplib."""

from __future__ import annotations

import asyncio
import imaplib
from collections.abc import Callable
from typing import Any

import aioimaplib
import pytest
from imapclient import IMAPClient

from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.store import MessageStore

from .conftest import DOMAIN, PASSWORD, crash_after, in_thread, put, sample_message

ADDRESS = f"demo@{DOMAIN}"


async def test_aioimaplib_idle_hears_delivery_at_once(
    server_factory: Callable[..., Any], store: MessageStore
) -> None:
    # With an hour between polls, only the store's own notification can bring the news
    # within the test's patience: what is observed is that it came, not how fast.
    server: ImapServer = await server_factory(poll_interval=3600)
    await put(store, ADDRESS, sample_message())
    client = aioimaplib.IMAP4(host="127.0.0.1", port=server.port, timeout=60)
    await client.wait_hello_from_server()
    assert (await client.login("demo", PASSWORD)).result == "OK"
    assert (await client.select("INBOX")).result == "OK"
    idle = await client.idle_start(timeout=60)
    await put(store, ADDRESS, sample_message(subject="new"))
    pushed = await asyncio.wait_for(client.wait_server_push(), 60)
    client.idle_done()
    await asyncio.wait_for(idle, 60)
    await client.logout()
    assert any(b"2 EXISTS" in line for line in pushed)


async def test_idle_hears_delivery_from_another_transaction_after_commit_only(
    server: ImapServer, store: MessageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = aioimaplib.IMAP4(host="127.0.0.1", port=server.port, timeout=60)
    await client.wait_hello_from_server()
    await client.login("demo", PASSWORD)
    await client.select("INBOX")
    idle = await client.idle_start(timeout=60)
    # A rolled-back delivery (its transaction fails after its rows went in) is never
    # announced.
    with monkeypatch.context() as patch:
        patch.setattr(store, "_insert_many", crash_after(store._insert_many))
        with pytest.raises(RuntimeError):
            await put(store, ADDRESS, sample_message(subject="rolled back"))
    await put(store, ADDRESS, sample_message(subject="kept"))
    pushed = await asyncio.wait_for(client.wait_server_push(), 60)
    client.idle_done()
    await asyncio.wait_for(idle, 60)
    await client.logout()
    assert any(b"1 EXISTS" in line for line in pushed)


async def test_imapclient_round_trip(server: ImapServer, store: MessageStore) -> None:
    await put(store, ADDRESS, sample_message(subject="hello imapclient"))

    def conversation() -> None:
        with IMAPClient("127.0.0.1", port=server.port, ssl=False) as client:
            client.login("demo", PASSWORD)
            assert b"IDLE" in client.capabilities()
            client.create_folder("Archive/2026")
            folders = [name for _, _, name in client.list_folders()]
            assert "Archive/2026" in folders and "INBOX" in folders
            info = client.select_folder("INBOX")
            assert info[b"EXISTS"] == 1
            uids = client.search(["SUBJECT", "imapclient"])
            assert uids == [1]
            data = client.fetch(uids, ["ENVELOPE", "BODYSTRUCTURE", "RFC822.SIZE"])
            assert data[1][b"ENVELOPE"].subject == b"hello imapclient"
            client.add_flags(uids, [b"\\Flagged", b"$Label1"])
            assert set(client.get_flags(uids)[1]) >= {b"\\Flagged", b"$Label1"}
            client.copy(uids, "Archive/2026")
            client.move(uids, "Archive/2026")
            assert client.select_folder("INBOX")[b"EXISTS"] == 0
            assert client.folder_status("Archive/2026", ["MESSAGES"])[b"MESSAGES"] == 2

    await in_thread(conversation)


async def test_imaplib_over_tls_and_starttls(server: ImapServer, client_ssl) -> None:  # type: ignore[no-untyped-def]
    def conversation() -> None:
        implicit = imaplib.IMAP4_SSL("127.0.0.1", server.tls_port, ssl_context=client_ssl)
        implicit.login("demo", PASSWORD)
        implicit.logout()
        plain = imaplib.IMAP4("127.0.0.1", server.port)
        assert "STARTTLS" in plain.capabilities
        plain.starttls(ssl_context=client_ssl)
        plain.login("demo", PASSWORD)
        plain.logout()

    await in_thread(conversation)

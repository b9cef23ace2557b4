"""A logged-in user cannot fill the disk or the database: APPEND and COPY stop at the quota
(NO [OVERQUOTA]), CREATE at the folder cap (NO [LIMIT]); statements still get in."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from releves_mailer.mailbox.contracts import MailboxLimits
from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.store import MessageStore
from tests.mailbox.conftest import (  # noqa: F401  (fixtures)
    DOMAIN,
    PASSWORD,
    ca,
    in_thread,
    new_key,
    sample_message,
    server_factory,
    server_ssl,
    store,
)

ADDRESS = f"demo@{DOMAIN}"


def message_of(size: int) -> bytes:
    head = b"From: demo@example.test\r\nSubject: padding\r\n\r\n"
    return head + b"x" * (size - len(head))


def connect(server: ImapServer) -> IMAPClient:
    client = IMAPClient("127.0.0.1", port=server.port, ssl=False, timeout=60)
    client.login("demo", PASSWORD)
    return client


@pytest.fixture
async def limited(
    store: MessageStore,  # noqa: F811
    server_factory: Callable[..., Any],  # noqa: F811
) -> ImapServer:
    store.limits = MailboxLimits(quota_bytes=20_000, max_folders=3)
    server: ImapServer = await server_factory(spool_threshold=4096)
    return server


async def test_append_stops_at_the_quota_and_keeps_nothing_over_it(
    limited: ImapServer,
    store: MessageStore,  # noqa: F811
) -> None:
    def conversation() -> tuple[list[str], int]:
        client = connect(limited)
        refusals = []
        # 6,000 bytes in memory, then 9,000 bytes through the spool file (over 4,096).
        for size in (6_000, 6_000, 9_000, 6_000, 1_000):
            try:
                client.append("INBOX", message_of(size))
            except IMAPClientError as error:
                refusals.append(str(error))
        client.select_folder("INBOX", readonly=True)
        count = len(client.search("ALL"))
        client.logout()
        return refusals, count

    refusals, count = await in_thread(conversation)
    # 12,000 held, so 9,000 would make 21,000: refused; 6,000 then 1,000 still fit.
    assert count == 4 and len(refusals) == 1, (count, refusals)
    assert "OVERQUOTA" in refusals[0]
    assert await store.usage(ADDRESS) == 6_000 + 6_000 + 6_000 + 1_000


async def test_copy_cannot_double_a_box_past_the_quota(
    limited: ImapServer,
    store: MessageStore,  # noqa: F811
) -> None:
    def conversation() -> tuple[str, int, int]:
        client = connect(limited)
        for _ in range(3):
            client.append("INBOX", message_of(5_000))
        client.create_folder("Copies")
        client.select_folder("INBOX")
        client.copy([1], "Copies")  # 20,000: just fits
        try:
            client.copy([1, 2, 3], "Copies")
            refusal = ""
        except IMAPClientError as error:
            refusal = str(error)
        copies = client.folder_status("Copies", ["MESSAGES"])[b"MESSAGES"]
        inbox = client.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"]
        client.logout()
        return refusal, copies, inbox

    refusal, copies, inbox = await in_thread(conversation)
    assert "OVERQUOTA" in refusal
    assert (copies, inbox) == (1, 3)
    assert await store.usage(ADDRESS) == 20_000


async def test_move_is_never_refused_for_the_quota(
    limited: ImapServer,
    store: MessageStore,  # noqa: F811
) -> None:
    def conversation() -> int:
        client = connect(limited)
        for _ in range(4):
            client.append("INBOX", message_of(5_000))  # exactly the quota
        client.create_folder("Rangement")
        client.select_folder("INBOX")
        client.move([1, 2], "Rangement")
        moved = client.folder_status("Rangement", ["MESSAGES"])[b"MESSAGES"]
        client.logout()
        return int(moved)

    assert await in_thread(conversation) == 2
    assert await store.usage(ADDRESS) == 20_000


async def test_create_stops_at_the_folder_cap(limited: ImapServer) -> None:
    def conversation() -> tuple[str, list[str]]:
        client = connect(limited)
        client.create_folder("Un")
        client.create_folder("Deux")  # INBOX, Un, Deux: the cap of 3
        try:
            client.create_folder("Trois")
            refusal = ""
        except IMAPClientError as error:
            refusal = str(error)
        names = sorted(name for _, _, name in client.list_folders())
        client.logout()
        return refusal, names

    refusal, names = await in_thread(conversation)
    assert "LIMIT" in refusal
    assert names == ["Deux", "INBOX", "Un"]


async def test_statements_are_delivered_past_the_quota(
    limited: ImapServer,
    store: MessageStore,  # noqa: F811
) -> None:
    def fill() -> None:
        client = connect(limited)
        for _ in range(4):
            client.append("INBOX", message_of(5_000))
        client.logout()

    await in_thread(fill)
    await store.deliver(ADDRESS, sample_message(subject="Releve du jour"), new_key())
    assert await store.usage(ADDRESS) > 20_000

    def subjects() -> list[bytes]:
        client = connect(limited)
        client.select_folder("INBOX", readonly=True)
        envelopes = client.fetch(client.search("ALL"), ["ENVELOPE"])
        client.logout()
        return [data[b"ENVELOPE"].subject for data in envelopes.values()]

    assert b"Releve du jour" in await asyncio.wait_for(in_thread(subjects), 120)

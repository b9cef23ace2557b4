"""The delivery contract (MessageSink), held by the store and by a minimal Maildir sink alike.

Session-free, idempotent by Message-ID per box, unknown boxes refused before anything is
stored, batches in order, concurrent deliveries of one Message-ID stored once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from releves_mailer.clock import ManualClock
from releves_mailer.db import Database
from releves_mailer.mailbox.sink import MailDelivery, MessageSink, UnknownBox
from releves_mailer.mailbox.store import MessageStore

from .conftest import DOMAIN, StaticAuthenticator, sample_message
from .maildir_sink import MaildirSink

ADDRESS = f"demo@{DOMAIN}"
OTHER = f"other@{DOMAIN}"
NOBODY = f"nobody@{DOMAIN}"


@dataclass
class Sink:
    """A sink under test and how to look into its boxes."""

    sink: MessageSink
    #: The messages of a box (every folder), in delivery order.
    contents: Callable[[str], Awaitable[list[bytes]]]


async def store_contents(store: MessageStore, address: str) -> list[bytes]:
    raws: list[bytes] = []
    for folder in await store.list_folders(address):
        _, metas = await store.load_view(folder.id)
        records = await store.fetch_records(folder.id, [m.uid for m in metas], ["blob"])
        raws += await store.read_blobs([record.blob for record in records])
    return raws


@pytest.fixture(params=["store", "maildir"])
async def sink(
    request: pytest.FixtureRequest, database: Database, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[Sink]:
    if request.param == "store":
        store = MessageStore(database, tmp_path / "messages", clock, boxes=StaticAuthenticator())
        yield Sink(store, lambda address: store_contents(store, address))
        await store.close()
        return
    maildir = MaildirSink(tmp_path / "maildir")
    for address in (ADDRESS, OTHER):
        maildir.add_box(address)

    async def contents(address: str) -> list[bytes]:
        return [path.read_bytes() for path in maildir.messages(address)]

    yield Sink(maildir, contents)


async def test_deliver_stores_the_message_in_the_box(sink: Sink) -> None:
    raw = sample_message(subject="statement")
    receipt = await sink.sink.deliver(ADDRESS.upper(), raw, "<releve-1@test>")
    assert (receipt.box, receipt.message_id, receipt.stored) == (ADDRESS, "<releve-1@test>", True)
    assert await sink.contents(ADDRESS) == [raw]
    assert await sink.contents(OTHER) == []


async def test_the_same_message_id_is_stored_once_per_box(sink: Sink) -> None:
    first = sample_message(subject="built once")
    assert (await sink.sink.deliver(ADDRESS, first, "<releve-1@test>")).stored
    # Built again after a crash (another signature, other bytes): the same Message-ID.
    again = await sink.sink.deliver(ADDRESS, sample_message(subject="rebuilt"), "<releve-1@test>")
    assert (again.box, again.message_id, again.stored, again.uid) == (
        ADDRESS,
        "<releve-1@test>",
        False,
        None,
    )
    assert await sink.contents(ADDRESS) == [first]
    # The key is the box's: another box takes the same Message-ID.
    assert (await sink.sink.deliver(OTHER, first, "<releve-1@test>")).stored
    assert await sink.contents(OTHER) == [first]


async def test_an_unknown_box_is_refused_and_nothing_of_the_batch_is_stored(sink: Sink) -> None:
    with pytest.raises(UnknownBox):
        await sink.sink.deliver(NOBODY, sample_message(), "<m-1@test>")
    batch = [
        MailDelivery(ADDRESS, sample_message(subject="fine"), "<m-2@test>"),
        MailDelivery(NOBODY, sample_message(subject="lost"), "<m-3@test>"),
    ]
    with pytest.raises(UnknownBox):
        await sink.sink.deliver_many(batch)
    assert await sink.contents(ADDRESS) == []
    # Refused, not recorded: the same Message-ID is delivered once the box is right.
    assert (await sink.sink.deliver(ADDRESS, sample_message(), "<m-2@test>")).stored


async def test_deliver_many_answers_in_order(sink: Sink) -> None:
    raws = [sample_message(subject=f"s{index}") for index in range(4)]
    items = [
        MailDelivery(ADDRESS, raws[0], "<a@test>"),
        MailDelivery(OTHER, raws[1], "<b@test>"),
        MailDelivery(ADDRESS, raws[2], "<c@test>", folder="Archive/2026", flags=["\\Seen"]),
        MailDelivery(ADDRESS, raws[3], "<a@test>"),  # twice in one batch: once in the box
    ]
    receipts = await sink.sink.deliver_many(items)
    assert [(r.box, r.message_id, r.stored) for r in receipts] == [
        (ADDRESS, "<a@test>", True),
        (OTHER, "<b@test>", True),
        (ADDRESS, "<c@test>", True),
        (ADDRESS, "<a@test>", False),
    ]
    assert sorted(await sink.contents(ADDRESS)) == sorted([raws[0], raws[2]])
    assert await sink.contents(OTHER) == [raws[1]]
    assert await sink.sink.deliver_many([]) == []


async def test_concurrent_deliveries_of_one_message_id_store_it_once(sink: Sink) -> None:
    raw = sample_message(subject="raced")

    async def deliver(index: int) -> bool:
        await sink.sink.prepare(raw)
        return (await sink.sink.deliver(ADDRESS, raw, "<raced@test>")).stored

    stored = await asyncio.gather(*(deliver(index) for index in range(8)))
    assert stored.count(True) == 1
    assert await sink.contents(ADDRESS) == [raw]
    # Distinct Message-IDs at once: every one stored.
    others = [sample_message(subject=f"n{index}") for index in range(8)]
    receipts = await asyncio.gather(
        *(sink.sink.deliver(OTHER, raw, f"<n{index}@test>") for index, raw in enumerate(others))
    )
    assert all(receipt.stored for receipt in receipts)
    assert sorted(await sink.contents(OTHER)) == sorted(others)

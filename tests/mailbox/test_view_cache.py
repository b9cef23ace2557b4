"""The store's caches: load_view from its cached list (only the changes are read; the list is
the one a fresh load gives), SELECT's seeds, envelopes within their budget; concurrent
expunges and moves of the same messages."""

from __future__ import annotations

import asyncio

import pytest

from releves_mailer.clock import ManualClock
from releves_mailer.db import Database
from releves_mailer.mailbox import store as store_module
from releves_mailer.mailbox.contracts import MessageMeta
from releves_mailer.mailbox.imap.view import ViewSeeds
from releves_mailer.mailbox.store import MessageStore

from .conftest import DOMAIN, put, sample_message

ADDRESS = f"demo@{DOMAIN}"


async def fresh_view(database: Database, store: MessageStore, folder_id: int) -> list[tuple]:
    """The folder's list as a store with nothing cached reads it."""
    other = MessageStore(database, store.blobs.blob_dir, ManualClock(store.clock.now()))
    try:
        _, metas = await other.load_view(folder_id)
    finally:
        await other.close()
    return [(m.uid, m.flags, m.modseq) for m in metas]


async def test_cached_view_follows_every_kind_of_change(
    store: MessageStore, database: Database
) -> None:
    uids = [await put(store, ADDRESS, sample_message(f"m{n}")) for n in range(12)]
    inbox = await store.get_folder(ADDRESS, "INBOX")
    archive = await store.create_folder(ADDRESS, "Archive")
    assert inbox is not None
    info, first = await store.load_view(inbox.id)
    assert [m.uid for m in first] == uids

    await store.store_flags(inbox.id, uids[1:4], "add", ["\\Flagged", "$Todo"])
    await store.store_flags(inbox.id, uids[5:7], "add", ["\\Deleted"])
    await store.expunge(inbox.id)
    await store.copy(inbox.id, [uids[9]], archive.id, move=True)
    added = await put(store, ADDRESS, sample_message("late"))
    await store.store_flags(inbox.id, [uids[2]], "remove", ["$Todo"])

    info, metas = await store.load_view(inbox.id)
    seen = [(m.uid, m.flags, m.modseq) for m in metas]
    assert seen == await fresh_view(database, store, inbox.id)
    expected = [u for u in uids if u not in (uids[5], uids[6], uids[9])] + [added]
    assert [m.uid for m in metas] == expected
    flags = {m.uid: m.flags for m in metas}
    assert set(flags[uids[1]]) == {"\\Flagged", "$Todo"}
    assert set(flags[uids[2]]) == {"\\Flagged"}
    assert info.highestmodseq == max(m.modseq for m in metas)
    # The earlier list, shared with the sessions that hold it, is left as it was.
    assert [m.uid for m in first] == uids

    # Nothing changed since: the same list, not a copy.
    _, again = await store.load_view(inbox.id)
    assert again is metas


async def test_concurrent_expunges_and_moves_of_the_same_messages(store: MessageStore) -> None:
    """Two sessions expunging (or moving) the same messages at once: each message goes once,
    is recorded expunged once, and is copied once (imaptest's stress mode found the race)."""
    uids = [await put(store, ADDRESS, sample_message(f"m{n}")) for n in range(20)]
    inbox = await store.get_folder(ADDRESS, "INBOX")
    archive = await store.create_folder(ADDRESS, "Archive")
    assert inbox is not None
    await store.store_flags(inbox.id, uids[:10], "add", ["\\Deleted"])
    results = await asyncio.gather(*(store.expunge(inbox.id) for _ in range(4)))
    assert sorted(uid for result in results for uid in result) == uids[:10]
    assert await store.vanished(inbox.id, 1) == [(uids[0], uids[9])]

    moves = await asyncio.gather(
        *(store.copy(inbox.id, uids[10:], archive.id, move=True) for _ in range(4))
    )
    moved = sorted(old for _, mapping in moves for old, _ in mapping)
    assert moved == uids[10:]
    _, in_archive = await store.load_view(archive.id)
    assert len(in_archive) == 10
    _, left = await store.load_view(inbox.id)
    assert left == []


def test_view_seeds_are_copies_and_follow_the_list() -> None:
    seeds = ViewSeeds(size=2)
    metas = [
        MessageMeta(1, ("\\Seen",), 1),
        MessageMeta(2, ("$Todo",), 2),
        MessageMeta(5, ("\\Seen", "$Done"), 3),
    ]
    uids, meta, keywords, first_unseen = seeds.seed(7, metas)
    assert (uids, sorted(meta), first_unseen) == ([1, 2, 5], [1, 2, 5], 2)
    assert keywords == {"$Todo", "$Done"}
    # A session changes its own view: the next one starts from the list again.
    uids.append(9)
    del meta[1]
    keywords.add("$New")
    again = seeds.seed(7, metas)
    assert again == ([1, 2, 5], dict(zip([1, 2, 5], metas, strict=True)), {"$Todo", "$Done"}, 2)
    # Another list of the folder (the store saw changes): derived from it.
    changed = [MessageMeta(1, ("\\Seen",), 1), MessageMeta(5, ("\\Seen",), 4)]
    assert seeds.seed(7, changed) == ([1, 5], dict(zip([1, 5], changed, strict=True)), set(), None)


async def test_envelopes_kept_within_their_budget(
    store: MessageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    uids = [await put(store, ADDRESS, sample_message(f"m{n}")) for n in range(5)]
    inbox = await store.get_folder(ADDRESS, "INBOX")
    assert inbox is not None
    first = await store.fetch_records(inbox.id, uids, ["envelope"])
    assert [r.uid for r in first] == uids
    assert all(b'"m' in r.envelope for r in first)
    again = await store.fetch_records(inbox.id, uids[1:3], ["envelope"])
    assert again == first[1:3] and again[0] is first[1]  # from memory
    # Over the budget, the folder is dropped: read again, equal, not the same objects.
    monkeypatch.setattr(store_module, "ENVELOPE_CACHE_BYTES", 10)
    third = await store.fetch_records(inbox.id, uids, ["envelope"])
    fourth = await store.fetch_records(inbox.id, uids, ["envelope"])
    assert third == fourth == first and fourth[0] is not third[0]

"""MessageStore.deliver_many: one batch, the same messages as one deliver each, atomically."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib

import pytest
from sqlalchemy import select

from releves_mailer.clock import ManualClock
from releves_mailer.db.models.mailbox import MailFolder, MailMessage
from releves_mailer.mailbox.imap import mime
from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.sink import MailDelivery, MessageSink
from releves_mailer.mailbox.store import MessageStore

from .conftest import DOMAIN, RawClient, crash_after, new_key, put, sample_message

ADDRESS = f"demo@{DOMAIN}"
OTHER = f"other@{DOMAIN}"
COLUMNS = ("size", "blob", "header", "envelope", "bodystructure", "body", "sent_date")


def multipart_message(boundary: str = "=_b-1") -> bytes:
    return (
        "From: Portail <portail@example.org>\r\n"
        f"To: {ADDRESS}\r\n"
        "Subject: Releve\r\n"
        "Date: Mon, 02 Nov 2026 07:00:00 +0100\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n'
        "\r\n"
        "preamble\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"not a delimiter: --{boundary}\r\n"
        "line two\r\n"
        f"--{boundary}  \r\n"
        "Content-Type: application/octet-stream\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
        "QUJD\r\n"
        f"--{boundary}--\r\n"
        "epilogue\r\n"
    ).encode()


async def rows_of(store: MessageStore, owner: str, folder: str) -> list[MailMessage]:
    async with store.database.session() as session:
        return list(
            (
                await session.scalars(
                    select(MailMessage)
                    .join(MailFolder, MailFolder.id == MailMessage.folder_id)
                    .where(MailFolder.owner == owner, MailFolder.name == folder)
                    .order_by(MailMessage.uid)
                )
            ).all()
        )


async def test_batch_matches_single_deliveries(store: MessageStore, clock: ManualClock) -> None:
    first = sample_message(subject="first")
    await put(store, ADDRESS, first)  # UID 1 of INBOX, before the batch
    when = dt.datetime(2026, 3, 1, 8, 0, 0, 123456, tzinfo=dt.UTC)
    items = [
        MailDelivery(
            ADDRESS.upper(), multipart_message(), new_key(), "inbox", ("\\seen", "$Label")
        ),
        MailDelivery(OTHER, sample_message(subject="other"), new_key(), internal_date=when),
        MailDelivery(ADDRESS, sample_message(subject="archived"), new_key(), "Archive/2026"),
        MailDelivery(ADDRESS, sample_message(subject="second"), new_key(), "INBOX"),
    ]
    receipts = await store.deliver_many(items)
    assert [receipt.uid for receipt in receipts] == [2, 1, 1, 3]
    assert [receipt.box for receipt in receipts] == [ADDRESS, OTHER, ADDRESS, ADDRESS]

    inbox = await rows_of(store, ADDRESS, "INBOX")
    assert [row.uid for row in inbox] == [1, 2, 3]
    # One MODSEQ for the batch in a folder, above the one of the earlier delivery.
    assert inbox[1].modseq == inbox[2].modseq > inbox[0].modseq
    assert inbox[1].flags == "\\Seen $Label"
    assert (await rows_of(store, OTHER, "INBOX"))[0].internal_date == when.replace(microsecond=0)
    assert [row.uid for row in await rows_of(store, ADDRESS, "Archive/2026")] == [1]
    folders = {folder.name for folder in await store.list_folders(ADDRESS)}
    assert folders == {"INBOX", "Archive", "Archive/2026"}  # the parent is created too
    info = await store.get_folder(ADDRESS, "INBOX")
    assert info is not None and info.uidnext == 4 and info.highestmodseq == inbox[1].modseq

    # Exactly what deliver stores for the same message.
    await put(store, OTHER, multipart_message(), folder="Single")
    [single] = await rows_of(store, OTHER, "Single")
    batched = inbox[1]
    assert {c: getattr(batched, c) for c in COLUMNS} == {c: getattr(single, c) for c in COLUMNS}
    assert batched.blob == hashlib.sha256(multipart_message()).hexdigest()
    assert await store.read_blob(batched.blob) == multipart_message()


async def test_files_are_written_before_rows_and_rollback_leaves_no_row(
    store: MessageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    raws = [sample_message(subject=f"m{index}") for index in range(5)]
    info = await store.get_folder(ADDRESS, "INBOX")
    assert info is None
    await store.ensure_inbox(ADDRESS)
    info = await store.get_folder(ADDRESS, "INBOX")
    assert info is not None
    event = store.watch(info.id)
    insert_many = store._insert_many

    async def durable_first(*args: object, **kwargs: object) -> list[int]:
        # Durable before the transaction can commit.
        for raw in raws:
            blob = hashlib.sha256(raw).hexdigest()
            assert (store.blob_dir / blob[:2] / blob[2:]).read_bytes() == raw
        return await insert_many(*args, **kwargs)  # type: ignore[arg-type]

    items = [MailDelivery(ADDRESS, raw, new_key()) for raw in raws]
    with monkeypatch.context() as patch:
        patch.setattr(store, "_insert_many", crash_after(durable_first))
        with pytest.raises(RuntimeError):
            await store.deliver_many(items)
    assert await rows_of(store, ADDRESS, "INBOX") == []
    assert not event.is_set()
    after = await store.get_folder(ADDRESS, "INBOX")
    assert after == info  # neither UIDs nor MODSEQ were taken
    # Nor the Message-IDs: the same delivery done again stores every message.
    assert all(receipt.stored for receipt in await store.deliver_many(items))


async def test_watchers_hear_after_commit_only(
    store: MessageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.ensure_inbox(ADDRESS)
    info = await store.get_folder(ADDRESS, "INBOX")
    assert info is not None
    event = store.watch(info.id)
    sink: MessageSink = store
    insert_many = store._insert_many

    async def not_yet(*args: object, **kwargs: object) -> list[int]:
        uids = await insert_many(*args, **kwargs)  # type: ignore[arg-type]
        await asyncio.sleep(0)
        assert not event.is_set()  # inserted, not committed yet
        return uids

    monkeypatch.setattr(store, "_insert_many", not_yet)
    items = [MailDelivery(ADDRESS, sample_message(), new_key()) for _ in range(2)]
    await sink.deliver_many(items)
    assert event.is_set()
    store.unwatch(info.id, event)


async def test_same_message_twice_is_one_file_two_rows(store: MessageStore) -> None:
    raw = sample_message()
    receipts = await store.deliver_many([MailDelivery(ADDRESS, raw, new_key()) for _ in range(3)])
    assert [receipt.uid for receipt in receipts] == [1, 2, 3]
    assert await store.deliver_many([]) == []
    files = [path for path in store.blob_dir.rglob("*") if path.is_file()]
    assert [path.read_bytes() for path in files] == [raw]
    assert len(await rows_of(store, ADDRESS, "INBOX")) == 3


async def test_concurrent_batches_take_distinct_increasing_uids(store: MessageStore) -> None:
    # (Two transactions creating the same folder at once: one fails, as with deliver.)
    await store.ensure_inbox(ADDRESS)

    async def batch(tag: int) -> list[int]:
        items = [
            MailDelivery(ADDRESS, sample_message(subject=f"{tag}-{n}"), new_key())
            for n in range(10)
        ]
        return [receipt.uid or 0 for receipt in await store.deliver_many(items)]

    results = await asyncio.gather(*(batch(tag) for tag in range(4)))
    for uids in results:
        assert uids == list(range(uids[0], uids[0] + 10))
    assert sorted(uid for uids in results for uid in uids) == list(range(1, 41))


async def test_imap_session_sees_a_batch(server: ImapServer, store: MessageStore) -> None:
    items = [MailDelivery(ADDRESS, sample_message(subject=f"s{n}"), new_key()) for n in range(3)]
    await store.deliver_many(items)
    assert server.port is not None
    client = await RawClient.connect(server.port)
    lines = await client.ok("s SELECT INBOX")
    assert b"* 3 EXISTS\r\n" in lines and b"* 3 RECENT\r\n" in lines
    fetched = await client.ok("f UID FETCH 1:* (FLAGS ENVELOPE)")
    assert [line.split(b" ")[1] for line in fetched[:-1]] == [b"1", b"2", b"3"]
    assert b'"s1"' in fetched[1] and b"\\Recent" in fetched[1]
    await client.close()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Delimiter with trailing blanks, the boundary text mid-line is no delimiter.
        (b"--b\r\nA\r\n x --b\r\n--b \t\r\nB\r\n--b--\r\nafter", [b"A\r\n x --b", b"B"]),
        # Bare LF line ends; the last part runs to the end without a closing delimiter.
        (b"pre\n--b\nA\n--b\nB\n", [b"A", b"B\n"]),
        # "--bx" is another boundary, "--b--x" no delimiter; a CR alone does not end a line.
        (b"--b\r\nA\r\n--bx\r\n--b--x\r\n--b\rY\r\n--b--", [b"A\r\n--bx\r\n--b--x\r\n--b\rY"]),
        # The closing delimiter may end the data without a line end.
        (b"--b\r\n\r\n--b--", [b""]),
        (b"no delimiter at all", []),
    ],
)
def test_multipart_delimiters(raw: bytes, expected: list[bytes]) -> None:
    parts = mime._split_multipart(raw, 0, len(raw), b"b")
    assert [raw[start:end] for start, end in parts] == expected


def test_multipart_bodystructure_of_delivered_mail() -> None:
    part = mime.parse_message(multipart_message())
    assert [child.body_bytes for child in part.children] == [
        b"not a delimiter: --=_b-1\r\nline two",
        b"QUJD",
    ]
    structure = mime.bodystructure(part, extended=False)
    assert structure.startswith(b'(("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 34 2)')
    assert b'("application" "octet-stream" NIL NIL NIL "base64" 4) "mixed")' in structure


NESTED = (
    b"Content-Type: multipart/mixed; boundary=X\r\n\r\n--X\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Subject: in\r\nContent-Type: multipart/alternative; boundary=Y\r\n"
    b"Content-Disposition: inline; a=b\r\nContent-Language: fr, en\r\n\r\n--Y\r\n\r\nhi\r\n"
    b"--Y\r\nContent-Type: text/html\r\nContent-MD5: m\r\n\r\n<b>\r\n--Y--\r\n"
    b"--X\r\nContent-Type: multipart/digest; boundary=Z\r\n\r\n"
    b"--Z\r\n\r\nSubject: d\r\n\r\nbody\r\n--Z--\r\n--X--\r\n"
)


@pytest.mark.parametrize("raw", [NESTED, multipart_message(), sample_message()])
def test_one_walk_gives_bodystructure_and_body(raw: bytes) -> None:
    part = mime.parse_message(raw)
    assert mime.bodystructures(part) == (
        mime.bodystructure(part, extended=True),
        mime.bodystructure(part, extended=False),
    )


async def test_prepared_message_is_stored_ahead(store: MessageStore) -> None:
    raw = multipart_message()
    blob = hashlib.sha256(raw).hexdigest()
    await store.prepare(raw)
    await store.prepare(raw)  # once is enough, twice is harmless
    assert (store.blob_dir / blob[:2] / blob[2:]).read_bytes() == raw  # before any transaction
    [receipt] = await store.deliver_many([MailDelivery(ADDRESS, raw, new_key())])
    assert receipt.uid == 1
    [row] = await rows_of(store, ADDRESS, "INBOX")
    part = mime.parse_message(raw)
    assert (row.blob, row.envelope) == (blob, mime.envelope(part))
    assert (row.bodystructure, row.body) == mime.bodystructures(part)
    # Prepared, never delivered: an orphan file for the garbage collection, nothing else.
    await store.prepare(sample_message(subject="never delivered"))
    assert [row.uid for row in await rows_of(store, ADDRESS, "INBOX")] == [1]
    assert len([path for path in store.blob_dir.rglob("*") if path.is_file()]) == 2


async def test_prepared_beyond_the_limit_are_forgotten_not_lost(
    store: MessageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("releves_mailer.mailbox.blobs._PREPARED_MAX", 2)
    raws = [sample_message(subject=f"p{index}") for index in range(4)]
    for raw in raws:
        await store.prepare(raw)
    blobs = store.blobs
    assert list(blobs._prepared) == raws[2:]  # the two oldest were forgotten
    receipts = await store.deliver_many([MailDelivery(ADDRESS, raw, new_key()) for raw in raws])
    uids = [receipt.uid for receipt in receipts]
    assert uids == [1, 2, 3, 4] and not blobs._prepared and blobs._prepared_bytes == 0
    rows = await rows_of(store, ADDRESS, "INBOX")
    assert [await store.read_blob(row.blob) for row in rows] == raws

"""``mailbox move --to dovecot`` with the real programs: a built-in store of several boxes,
folders, flags and dates moved into a private Dovecot, read back over Dovecot's IMAP (bytes,
flags, dates); a move interrupted half-way and run again puts each message there once; the
demo installation copied to PostgreSQL (``db copy``) and its boxes moved (``mailbox move``)."""

from __future__ import annotations

import datetime as dt
import hashlib
import imaplib
import re
import shutil
import ssl
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from releves_mailer.clock import ManualClock
from releves_mailer.config import Config
from releves_mailer.db import Database
from releves_mailer.db.migrate import upgrade
from releves_mailer.mailbox.contracts import AppendItem
from releves_mailer.mailbox.dovecot.lmtp import LmtpSink
from releves_mailer.mailbox.dovecot.move import crlf_size, message_id_of, move_to_dovecot
from releves_mailer.mailbox.dovecot.setup import MASTER_USER, DovecotSetup
from releves_mailer.mailbox.store import MessageStore
from releves_mailer.portfolio.accounts import create_account
from tests.commands import run_command_async
from tests.conftest import new_postgres_database
from tests.datadirs import initialised_data_dir
from tests.db.test_copy import pointing_at, table_counts
from tests.factories import CABINET, PASSWORD, make_nic, make_siren

from .dovecot_instance import reachable_folder, running_dovecot

pytestmark = pytest.mark.slow

DOMAIN = "releves.localhost"
SECOND = replace(
    CABINET,
    login="agence",
    company_name="Agence Sud",
    siret=make_siren(7) + make_nic(make_siren(7)),
)
START = dt.datetime(2026, 3, 2, 8, 30, 15, 250_000, tzinfo=dt.UTC)


def mail(index: int, *, message_id: bool = True, lf: bool = False, size: int = 0) -> bytes:
    lines = [
        f"From: Portail <portail@{DOMAIN}>",
        f"To: cabinet@{DOMAIN}",
        f"Subject: =?utf-8?q?Relev=C3=A9?= {index}",
        *([f"Message-ID: <m{index}.{index * 7}@{DOMAIN}>"] if message_id else []),
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "",
        f"Corps du message {index}.",
        "x" * size,
        "",
    ]
    return ("\n" if lf else "\r\n").join(lines).encode()


async def populate(store: MessageStore) -> None:
    """Three boxes, nested folders with a special use, every flag, keywords, dates to the
    microsecond, a message without Message-ID twice in one folder, a big one, one with
    bare LF line ends, and a box Dovecot does not know."""
    cabinet, dedicated, agence = (
        f"cabinet@{DOMAIN}",
        f"releves.cabinet@{DOMAIN}",
        f"agence@{DOMAIN}",
    )
    for index in range(12):
        flags = [("\\Seen",), ("\\Seen", "\\Answered"), ("\\Flagged", "$Important"), ()][index % 4]
        await store.deliver(
            dedicated,
            mail(index),
            f"<m{index}.{index * 7}@{DOMAIN}>",
            flags=flags,
            internal_date=START + dt.timedelta(hours=index, microseconds=index),
        )
    await store.ensure_inbox(cabinet)
    await store.create_folder(cabinet, "Archives")
    archives = await store.create_folder(cabinet, "Archives/2026")
    drafts = await store.create_folder(cabinet, "Brouillons", "\\Drafts")
    await store.create_folder(cabinet, "Vide")
    await store.append_many(
        archives.id,
        [
            AppendItem(mail(100, message_id=False), ("\\Seen",), START),
            AppendItem(mail(100, message_id=False), ("\\Seen",), START),  # twice, on purpose
            AppendItem(mail(101), ("\\Deleted", "\\Seen", "client-tag"), START),
            AppendItem(mail(102, size=300_000), (), START - dt.timedelta(days=400)),
            AppendItem(mail(103, lf=True), ("\\Seen",), START),
        ],
    )
    await store.append_many(drafts.id, [AppendItem(mail(200), ("\\Draft",), START)])
    await store.set_subscribed(cabinet, "Archives/2026", True)
    for index in range(300, 306):
        await store.deliver(agence, mail(index), f"<m{index}.{index * 7}@{DOMAIN}>")
    # A box of no portal account: Dovecot does not know it.
    await store.deliver(f"inconnu@{DOMAIN}", mail(400), f"<m400.2800@{DOMAIN}>")


def master_client(setup: DovecotSetup, box: str) -> imaplib.IMAP4:
    tls = ssl.create_default_context(cafile=str(setup.certificate))
    tls.check_hostname = False
    client = imaplib.IMAP4(setup.listen, setup.ports.imap, timeout=60)
    client.starttls(ssl_context=tls)
    client.login(f"{box}*{MASTER_USER}", setup.master_password())
    return client


_FETCHED = re.compile(rb'FLAGS \(([^)]*)\).*INTERNALDATE "([^"]+)"')


def dovecot_contents(setup: DovecotSetup, box: str) -> dict[str, Counter[tuple[str, str, str]]]:
    """Per folder: (sha256 of the bytes, sorted flags, internal date in UTC) counted."""
    client = master_client(setup, box)
    try:
        status, listed = client.list('""', "*")
        assert status == "OK"
        names = [re.search(rb'"/" "?([^"]*)"?$', item).group(1).decode() for item in listed]  # type: ignore[union-attr, arg-type]
        contents: dict[str, Counter[tuple[str, str, str]]] = {}
        for name in names:
            status, data = client.select(f'"{name}"', readonly=True)
            assert status == "OK"
            found: Counter[tuple[str, str, str]] = Counter()
            if int(data[0] or 0):  # type: ignore[arg-type]
                status, fetched = client.fetch("1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
                assert status == "OK"
                for item in fetched:
                    if not isinstance(item, tuple):
                        continue
                    match = _FETCHED.search(item[0])
                    assert match is not None, item[0]
                    flags = sorted(f for f in match.group(1).decode().split() if f != "\\Recent")
                    moment = dt.datetime.strptime(match.group(2).decode(), "%d-%b-%Y %H:%M:%S %z")
                    found[
                        (
                            hashlib.sha256(item[1]).hexdigest(),
                            " ".join(flags),
                            moment.astimezone(dt.UTC).isoformat(),
                        )
                    ] += 1
            contents[name] = found
        return contents
    finally:
        client.logout()


async def store_contents(store: MessageStore, box: str) -> dict[str, Counter[tuple[str, str, str]]]:
    """The same view of the built-in store (bytes in IMAP's CRLF form, dates to the second)."""
    contents: dict[str, Counter[tuple[str, str, str]]] = {}
    for folder in await store.list_folders(box):
        _, metas = await store.load_view(folder.id)
        records = await store.fetch_records(
            folder.id, [m.uid for m in metas], ["flags", "internal_date", "blob"]
        )
        found: Counter[tuple[str, str, str]] = Counter()
        for record, raw in zip(
            records, await store.read_blobs([r.blob for r in records]), strict=True
        ):
            assert record.internal_date is not None
            crlf = re.sub(rb"(?<!\r)\n", b"\r\n", raw)
            found[
                (
                    hashlib.sha256(crlf).hexdigest(),
                    " ".join(sorted(record.flags)),
                    record.internal_date.replace(microsecond=0).astimezone(dt.UTC).isoformat(),
                )
            ] += 1
        contents[folder.name] = found
    return contents


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    async with new_postgres_database("dovecot_move") as url:
        database = Database(url)
        try:
            await upgrade(database)
            async with database.session() as session:
                clock = ManualClock(dt.datetime.now(dt.UTC))
                await create_account(session, clock, CABINET, PASSWORD)
                await create_account(session, clock, SECOND, PASSWORD)
        finally:
            await database.dispose()
        yield url


class Interrupted(Exception):
    pass


async def test_move_keeps_bytes_flags_dates_and_resumes_once(
    tmp_path: Path, postgres_url: str
) -> None:
    config: Config = await initialised_data_dir(tmp_path / "data", DOMAIN)
    database = Database(postgres_url)
    store = MessageStore(database, tmp_path / "messages", ManualClock(START))
    folder = reachable_folder()
    try:
        await populate(store)
        async with running_dovecot(
            folder,
            database_url=postgres_url,
            domain=DOMAIN,
            certificate=config.path(config.tls.certificate),
            key=config.path(config.tls.key),
        ) as setup:
            total, total_bytes = await store.totals()
            assert total == 12 + 5 + 1 + 6 + 1
            inconnu = await store.list_folders(f"inconnu@{DOMAIN}")
            total -= 1
            total_bytes -= len(mail(400))

            # Killed after 9 messages (the hook raises once the 9th is in Dovecot).
            done: list[int] = []

            def interrupt(size: int) -> None:
                done.append(size)
                if len(done) == 9:
                    raise Interrupted

            with pytest.raises(Interrupted):
                await move_to_dovecot(store, setup, parallel=1, on_message=interrupt)

            # Meanwhile a flag changes in the store on a message already moved (boxes go
            # in address order: agence@ first).
            dedicated = f"releves.cabinet@{DOMAIN}"
            inbox = await store.get_folder(f"agence@{DOMAIN}", "INBOX")
            assert inbox is not None
            await store.store_flags(inbox.id, [1], "add", ["\\Flagged"])

            report = await move_to_dovecot(store, setup, parallel=3)
            assert report.found + report.moved == total
            assert report.found >= 9 and report.moved == total - report.found
            assert report.moved_bytes + report.found_bytes == total_bytes
            assert report.flags_updated == 1
            assert report.unknown_boxes == [f"inconnu@{DOMAIN}"] and report.skipped == 1
            assert report.boxes == 3 and len(inconnu) == 1
            assert report.folders == 1 + 5 + 1

            again = await move_to_dovecot(store, setup)
            assert (again.moved, again.found, again.flags_updated) == (0, total, 0)

            for box in (dedicated, f"cabinet@{DOMAIN}", f"agence@{DOMAIN}"):
                assert dovecot_contents(setup, box) == await store_contents(store, box), box
            # A statement delivered over LMTP (Dovecot's lines on top: another size) that
            # the store holds too is found by its Message-ID, not appended a second time.
            agence = f"agence@{DOMAIN}"
            raw, message_id = mail(500), f"<m500.3500@{DOMAIN}>"
            await store.deliver(agence, raw, message_id)
            await LmtpSink(setup).deliver(agence, raw, message_id)
            last = await move_to_dovecot(store, setup)
            assert (last.moved, last.found) == (0, total + 1)
            lmtp_client = master_client(setup, agence)
            try:
                lmtp_client.select("INBOX", readonly=True)
                _, hits = lmtp_client.search(None, "HEADER", "Message-ID", message_id)
                assert len((hits[0] or b"").split()) == 1
            finally:
                lmtp_client.logout()

            client = master_client(setup, f"cabinet@{DOMAIN}")
            try:
                _, subscribed = client.lsub('""', "*")
                assert any(b"Archives/2026" in item for item in subscribed if item)
                _, listed = client.list('""', "Brouillons")
                capabilities = client.capability()[1][0] or b""
                if b"CREATE-SPECIAL-USE" in capabilities:
                    assert b"\\Drafts" in (listed[0] or b"")
                else:
                    assert report.special_use_lost == [f"cabinet@{DOMAIN} Brouillons"]
            finally:
                client.logout()
    finally:
        await store.close()
        await database.dispose()
        shutil.rmtree(folder, ignore_errors=True)


async def test_demo_round_trip_db_copy_then_mailbox_move(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo (a shorter history: 15 nights) → ``db copy --to`` PostgreSQL, every table's
    count equal → ``mailbox move --to dovecot``: every message of the store in Dovecot with
    its bytes, then a rerun that moves nothing."""
    from releves_mailer.services import demo

    monkeypatch.setattr(demo, "HISTORY_DAYS", 15)
    built = await demo.build_demo_data(tmp_path / "demo", "mot de passe de la démo")
    source = built.config
    assert built.delivered > 0
    async with new_postgres_database("demo_move") as url:
        copied = await run_command_async(source, "db", "copy", "--to", url)
        assert copied.returncode == 0, copied.stderr
        assert await table_counts(url) == await table_counts(source.database_url)
        config = pointing_at(source, url, tmp_path / "pg")
        refused = await run_command_async(source, "mailbox", "move", "--to", "dovecot")
        assert refused.returncode != 0 and "db copy" in refused.stderr, refused.stderr
        folder = reachable_folder()
        try:
            async with running_dovecot(
                folder,
                database_url=url,
                domain=DOMAIN,
                certificate=source.path(source.tls.certificate),
                key=source.path(source.tls.key),
            ) as setup:
                args = ("mailbox", "move", "--to", "dovecot", "--dovecot-dir", str(folder))
                moved = await run_command_async(config, *args)
                assert moved.returncode == 0, moved.stderr
                database = Database(url)
                store = MessageStore(database, source.data_dir / "messages", ManualClock(START))
                try:
                    total, total_bytes = await store.totals()
                    boxes = await store.owners()
                    for box in boxes:
                        assert dovecot_contents(setup, box) == await store_contents(store, box)
                finally:
                    await store.close()
                    await database.dispose()
                assert f"{total} message(s) déposé(s)" in moved.stdout, moved.stdout
                assert f"{len(boxes)} boîte(s)" in moved.stdout
                rerun = await run_command_async(config, *args)
                assert rerun.returncode == 0, rerun.stderr
                assert "0 message(s) déposé(s)" in rerun.stdout
                assert f"{total} déjà présent(s)" in rerun.stdout
                assert total > 0 and total_bytes > 0
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def test_keys_read_message_ids_and_sizes_as_dovecot_gives_them() -> None:
    folded = b"Subject: x\r\nMessage-ID:\r\n <a.1@b>\r\n\r\n"
    assert message_id_of(folded) == "<a.1@b>"
    assert message_id_of(b"Subject: x\r\n\r\n") == ""
    assert crlf_size(b"a\nb\r\nc\n") == len(b"a\r\nb\r\nc\r\n")

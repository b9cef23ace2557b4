"""Dovecot as the mailbox engine, with the real program: the configuration that
``dovecot-config`` writes, the portal passwords opening the boxes, delivery over LMTP
idempotent by Message-ID (a delivery in doubt is looked up before it is sent again)."""

from __future__ import annotations

import asyncio
import datetime as dt
import imaplib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from releves_mailer.clock import ManualClock
from releves_mailer.config import Config
from releves_mailer.db import Database
from releves_mailer.db.migrate import upgrade
from releves_mailer.mailbox.dovecot.lmtp import DovecotMasterRefused, LmtpSink
from releves_mailer.mailbox.dovecot.setup import DovecotSetup
from releves_mailer.mailbox.sink import MailDelivery, UnknownBox
from releves_mailer.portfolio.accounts import create_account
from tests.commands import run_command_async
from tests.conftest import new_postgres_database
from tests.datadirs import initialised_data_dir
from tests.factories import CABINET, PASSWORD

from .dovecot_instance import dovecot_for

DOMAIN = "releves.localhost"


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A new PostgreSQL database with one account, ``cabinet``."""
    async with new_postgres_database("dovecot") as url:
        database = Database(url)
        try:
            await upgrade(database)
            async with database.session() as session:
                await create_account(
                    session, ManualClock(dt.datetime.now(dt.UTC)), CABINET, PASSWORD
                )
        finally:
            await database.dispose()
        yield url


@pytest.fixture
async def dovecot(tmp_path: Path, postgres_url: str) -> AsyncIterator[DovecotSetup]:
    config: Config = await initialised_data_dir(tmp_path / "data", DOMAIN)
    async with dovecot_for(config, postgres_url) as setup:
        yield setup


def statement(subject: str, message_id: str) -> bytes:
    return (
        f"From: Portail <portail@{DOMAIN}>\r\n"
        f"To: cabinet@{DOMAIN}\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: {message_id}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "Relevé du jour\r\n"
    ).encode()


def read_box(setup: DovecotSetup, user: str, password: str, folder: str = "INBOX") -> list[bytes]:
    """Every message of ``folder``, read over Dovecot's IMAP as a mail client would."""
    with imaplib.IMAP4("127.0.0.1", setup.ports.imap, timeout=60) as client:
        client.login(user, password)
        status, _ = client.select(f'"{folder}"', readonly=True)
        assert status == "OK", folder
        _, found = client.uid("SEARCH", "ALL")
        messages = []
        for uid in found[0].split():
            _, data = client.uid("FETCH", uid, "(BODY.PEEK[])")
            messages.append(bytes(data[0][1]))
        return messages


async def test_portal_password_opens_both_boxes_and_lmtp_delivers_once(
    dovecot: DovecotSetup,
) -> None:
    sink = LmtpSink(dovecot)
    raw = statement("Relevé 1", "<releve-1@test>")
    first = await sink.deliver(f"releves.cabinet@{DOMAIN}", raw, "<releve-1@test>")
    assert (first.box, first.stored) == (f"releves.cabinet@{DOMAIN}", True)
    # Rebuilt after a crash (other bytes, the same Message-ID): found in the box, not sent.
    again = await sink.deliver(
        f"releves.cabinet@{DOMAIN}", statement("rebuilt", "<releve-1@test>"), "<releve-1@test>"
    )
    assert again.stored is False
    await sink.deliver(f"cabinet@{DOMAIN}", statement("Bienvenue", "<w@test>"), "<w@test>")

    dedicated = await asyncio.to_thread(read_box, dovecot, "releves.cabinet", PASSWORD)
    assert len(dedicated) == 1
    # Dovecot's LMTP puts its Return-Path and Delivered-To lines on top; the rest is ours.
    assert dedicated[0].endswith(raw)
    assert f"Delivered-To: releves.cabinet@{DOMAIN}".encode() in dedicated[0]
    own = await asyncio.to_thread(read_box, dovecot, f"cabinet@{DOMAIN}", PASSWORD)
    assert len(own) == 1 and own[0].endswith(statement("Bienvenue", "<w@test>"))

    with pytest.raises(imaplib.IMAP4.error):
        await asyncio.to_thread(read_box, dovecot, "cabinet", "not the password")


async def test_folders_flags_and_dates_are_kept_and_unknown_boxes_refused(
    dovecot: DovecotSetup,
) -> None:
    sink = LmtpSink(dovecot)
    raw = statement("Archive", "<archive-1@test>")
    when = dt.datetime(2026, 3, 10, 9, 30, tzinfo=dt.UTC)
    receipt = await sink.deliver(
        f"cabinet@{DOMAIN}",
        raw,
        "<archive-1@test>",
        folder="Releves/2026",
        flags=["\\Seen"],
        internal_date=when,
    )
    assert receipt.stored
    again = await sink.deliver(f"cabinet@{DOMAIN}", raw, "<archive-1@test>", folder="Releves/2026")
    assert again.stored is False

    def look() -> tuple[list[bytes], bytes]:
        with imaplib.IMAP4("127.0.0.1", dovecot.ports.imap, timeout=60) as client:
            client.login("cabinet", PASSWORD)
            client.select('"Releves/2026"', readonly=True)
            _, data = client.uid("FETCH", "1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
            return [bytes(data[0][1])], bytes(data[0][0])

    with pytest.raises(UnknownBox):
        await sink.deliver(f"personne@{DOMAIN}", raw, "<x@test>")
    with pytest.raises(UnknownBox):
        await sink.deliver("cabinet@ailleurs.example", raw, "<x@test>")
    assert await asyncio.to_thread(read_box, dovecot, "cabinet", PASSWORD) == []
    messages, head = await asyncio.to_thread(look)
    assert messages == [raw]  # appended over IMAP: the exact bytes
    assert b"\\Seen" in head and b"10-Mar-2026 09:30:00 +0000" in head


async def test_dovecot_config_needs_postgresql(tmp_path: Path) -> None:
    config = await initialised_data_dir(tmp_path / "data", DOMAIN)
    done = await run_command_async(config, "dovecot-config", str(tmp_path / "dovecot"))
    assert done.returncode != 0
    assert "Dovecot lit les comptes dans la base PostgreSQL" in done.stderr
    assert not (tmp_path / "dovecot" / "dovecot.conf").exists()


def master_logins(setup: DovecotSetup) -> int:
    """The IMAP logins Dovecot logged so far (the sink's, until the test reads a box)."""
    log = setup.folder / "log" / "dovecot-info.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return sum(1 for line in text.splitlines() if "imap-login: Info: Login:" in line)


async def test_a_batch_opens_each_box_once_and_stores_each_message_id_once(
    dovecot: DovecotSetup,
) -> None:
    sink = LmtpSink(dovecot)
    own, dedicated = f"cabinet@{DOMAIN}", f"releves.cabinet@{DOMAIN}"
    before = master_logins(dovecot)
    items = [
        MailDelivery(
            dedicated if index % 2 else own,
            statement(f"R{index}", f"<b{index}@t>"),
            f"<b{index}@t>",
        )
        for index in range(6)
    ]
    # The same Message-ID twice in one batch, and one already in the box.
    await sink.deliver(own, statement("R0", "<b0@t>"), "<b0@t>")
    after_one = master_logins(dovecot)
    items.append(MailDelivery(dedicated, statement("R1 again", "<b1@t>"), "<b1@t>"))
    receipts = await sink.deliver_many(items)
    assert [receipt.stored for receipt in receipts] == [False, True, True, True, True, True, False]
    assert [receipt.box for receipt in receipts] == [own, dedicated] * 3 + [dedicated]
    assert after_one - before == 1
    assert master_logins(dovecot) - after_one == 2  # one per box, not one per message
    own_box = await asyncio.to_thread(read_box, dovecot, own, PASSWORD)
    dedicated_box = await asyncio.to_thread(read_box, dovecot, dedicated, PASSWORD)
    assert len(own_box) == 3 and len(dedicated_box) == 3
    # An unknown box refuses the whole batch before anything is stored.
    with pytest.raises(UnknownBox):
        await sink.deliver_many(
            [
                MailDelivery(own, statement("new", "<new@t>"), "<new@t>"),
                MailDelivery(f"releves.personne@{DOMAIN}", statement("x", "<x@t>"), "<x@t>"),
            ]
        )
    assert len(await asyncio.to_thread(read_box, dovecot, own, PASSWORD)) == 3
    # The quota's measure: the bytes of every folder, as Dovecot counts them.
    await sink.deliver(own, statement("archive", "<a@t>"), "<a@t>", folder="Archives")
    sizes = [len(raw) for raw in await asyncio.to_thread(read_box, dovecot, own, PASSWORD)]
    archived = await asyncio.to_thread(read_box, dovecot, own, PASSWORD, "Archives")
    assert await sink.usage(own) == sum(sizes) + sum(len(raw) for raw in archived)
    assert await sink.usage(f"personne@{DOMAIN}") == 0


async def test_a_refused_master_password_is_not_an_unknown_box(dovecot: DovecotSetup) -> None:
    right = dovecot.master_password_file.read_text(encoding="utf-8")
    dovecot.master_password_file.write_text("pas le bon\n", encoding="utf-8")
    try:
        sink = LmtpSink(dovecot)
    finally:
        dovecot.master_password_file.write_text(right, encoding="utf-8")
    with pytest.raises(DovecotMasterRefused) as caught:
        await sink.deliver(f"cabinet@{DOMAIN}", statement("R", "<r@t>"), "<r@t>")
    assert not isinstance(caught.value, UnknownBox)
    assert "master-password" in str(caught.value) and "dovecot-config" in str(caught.value)
    assert await asyncio.to_thread(read_box, dovecot, "cabinet", PASSWORD) == []

"""The outbox against an outside relay (an aiosmtpd sink) that is down, refusing, or fine."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import select

from releves_mailer.clock import ManualClock
from releves_mailer.config import RelaySection
from releves_mailer.db import Database
from releves_mailer.db.models import MailMessage, OutboxMessage, OutboxState
from releves_mailer.listeners import reserve_port
from releves_mailer.mailbox.store import MessageStore
from releves_mailer.notify.outbox import Outbox
from releves_mailer.signing.smime import SmimeSigner


class Relay:
    """An outside SMTP relay: records what it accepts; can refuse or be stopped."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[Envelope] = []
        self.rcpt_reply: str | None = None
        self.server: asyncio.base_events.Server | None = None

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received.append(envelope)
        return "250 Message accepted"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: SMTP(self, hostname="relay.test", loop=loop), "127.0.0.1", self.port
        )

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    sink = Relay(reserve_port())
    yield sink
    await sink.stop()


@pytest.fixture
async def store(
    database: Database, clock: ManualClock, tmp_path: Path
) -> AsyncIterator[MessageStore]:
    messages = MessageStore(database, tmp_path / "messages", clock)
    yield messages
    await messages.close()


def outbox_for(
    database: Database,
    clock: ManualClock,
    tmp_path: Path,
    port: int,
    host: str = "127.0.0.1",
    store: MessageStore | None = None,
) -> Outbox:
    section = RelaySection(host=host, port=port, starttls=False)
    return Outbox(
        database,
        clock,
        section,
        domain="releves.example",
        data_dir=tmp_path,
        local_sink=store,
        timeout=60,
    )


def mail(index: int) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Portail <noreply@releves.example>"
    message["To"] = f"client{index}@ailleurs.example"
    message["Subject"] = f"Lien sécurisé {index}"
    message.set_content("Bonjour,\n")
    return message


async def enqueue(outbox: Outbox, database: Database, count: int) -> None:
    async with database.session() as session:
        for index in range(count):
            await outbox.enqueue(
                session, mail(index), kind="secure_link", dedup_key=f"link:{index}"
            )


async def states(database: Database) -> list[OutboxState]:
    async with database.session() as session:
        return list(
            (await session.scalars(select(OutboxMessage.state).order_by(OutboxMessage.id))).all()
        )


async def test_relay_down_for_an_hour_then_every_mail_once(
    database: Database, clock: ManualClock, tmp_path: Path, relay: Relay
) -> None:
    outbox = outbox_for(database, clock, tmp_path, relay.port)
    await enqueue(outbox, database, 5)
    await enqueue(outbox, database, 5)  # same dedup keys: ignored
    started = clock.now()
    while clock.now() - started < dt.timedelta(hours=1):
        report = await outbox.send_due()
        assert report.sent == 0
        clock.advance(dt.timedelta(minutes=1))
    async with database.session() as session:
        attempts = (await session.scalars(select(OutboxMessage.attempts))).all()
    assert max(attempts) >= 5  # retried with backoff, not given up
    assert await states(database) == [OutboxState.PENDING] * 5
    await relay.start()
    for _ in range(120):
        await outbox.send_due()
        clock.advance(dt.timedelta(minutes=1))
    assert await states(database) == [OutboxState.SENT] * 5
    assert sorted(e.rcpt_tos[0] for e in relay.received) == [
        f"client{i}@ailleurs.example" for i in range(5)
    ]
    ids = [
        e.original_content.split(b"Message-ID: ")[1].split(b"\r\n")[0]
        for e in relay.received
        if e.original_content
    ]
    assert len(set(ids)) == 5


async def test_relay_refusing_temporarily_then_accepting(
    database: Database, clock: ManualClock, tmp_path: Path, relay: Relay
) -> None:
    await relay.start()
    relay.rcpt_reply = "451 4.3.0 Try again later"
    outbox = outbox_for(database, clock, tmp_path, relay.port)
    await enqueue(outbox, database, 3)
    for _ in range(10):
        await outbox.send_due()
        clock.advance(dt.timedelta(minutes=5))
    assert relay.received == []
    relay.rcpt_reply = None
    for _ in range(30):
        await outbox.send_due()
        clock.advance(dt.timedelta(minutes=5))
    assert len(relay.received) == 3
    assert await states(database) == [OutboxState.SENT] * 3


async def test_recipient_rejected_for_good_is_not_retried(
    database: Database, clock: ManualClock, tmp_path: Path, relay: Relay
) -> None:
    await relay.start()
    relay.rcpt_reply = "550 5.1.1 No such user"
    outbox = outbox_for(database, clock, tmp_path, relay.port)
    await enqueue(outbox, database, 1)
    report = await outbox.send_due()
    assert report.failed == 1
    relay.rcpt_reply = None
    clock.advance(dt.timedelta(days=1))
    assert (await outbox.send_due()).sent == 0
    async with database.session() as session:
        row = await session.scalar(select(OutboxMessage))
    assert row is not None and row.state is OutboxState.FAILED
    assert "No such user" in row.last_error


async def test_gives_up_after_three_days(
    database: Database, clock: ManualClock, tmp_path: Path
) -> None:
    outbox = outbox_for(database, clock, tmp_path, reserve_port())
    await enqueue(outbox, database, 1)
    for _ in range(4 * 24):
        await outbox.send_due()
        clock.advance(dt.timedelta(hours=1))
    assert await states(database) == [OutboxState.FAILED]


async def test_without_relay_mail_is_filed_in_the_box_and_data_dir(
    database: Database, clock: ManualClock, tmp_path: Path, store: MessageStore
) -> None:
    outbox = outbox_for(database, clock, tmp_path, 587, host="", store=store)
    async with database.session() as session:
        await outbox.enqueue(
            session, mail(1), kind="alert", fallback_address="cabinet@releves.example"
        )
    report = await outbox.send_due()
    assert report.filed == 1
    files = list((tmp_path / "outbox").glob("*.eml"))
    assert len(files) == 1 and b"Subject: Lien =?utf-8?q?s=C3=A9curis" in files[0].read_bytes()
    async with database.session() as session:
        stored = (await session.scalars(select(MailMessage))).all()
    assert len(stored) == 1
    assert await states(database) == [OutboxState.SENT]


async def test_mails_are_signed_by_the_portal(
    database: Database,
    clock: ManualClock,
    tmp_path: Path,
    relay: Relay,
    signer: SmimeSigner,
    openssl_verify: Callable[[bytes], subprocess.CompletedProcess[bytes]],
) -> None:
    await relay.start()
    outbox = Outbox(
        database,
        clock,
        RelaySection(host="127.0.0.1", port=relay.port, starttls=False),
        domain="releves.example",
        data_dir=tmp_path,
        signer=signer,
        timeout=60,
    )
    await enqueue(outbox, database, 1)
    assert (await outbox.send_due()).sent == 1
    [envelope] = relay.received
    assert envelope.original_content is not None
    checked = openssl_verify(envelope.original_content)
    assert checked.returncode == 0, checked.stderr
    assert b"Bonjour," in checked.stdout

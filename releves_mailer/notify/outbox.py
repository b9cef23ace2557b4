"""The persistent outbox: mails to outside addresses survive relay outages and restarts.

Callers enqueue inside their own transaction (so a link and the mail that carries it are
committed together). A sender claims due messages one at a time with a short lease, hands
them to the configured SMTP relay (aiosmtplib) and marks them sent in the same step, so a
relay that is down or refusing for a while only delays mail: each one is delivered once when
it comes back. A recipient the relay rejects for good (5xx on RCPT) is marked failed; other
errors are retried with exponential backoff (1 minute doubling up to 1 hour) for 3 days.

Mails are S/MIME signed with the portal's certificate when a signer is given (the daemon
always gives one). With no relay configured (the embedded default), mail is filed instead: a
copy goes into the portal account's own box when the caller names one, and the ``.eml`` file
is written under ``<data_dir>/outbox/`` (0600, for the admin to pass on); the log says so.

A message's body leaves the database as soon as it is sent or given up: it may carry the
clear token of a secure link. The row keeps the sending history (recipient, subject,
Message-ID, dates, attempts, last error) and a plain-text copy with every token masked
(:mod:`releves_mailer.notify.masking`), shown on the portal's "Messages envoyés" page.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import aiosmtplib
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from releves_mailer.clock import Clock
from releves_mailer.config import RelaySection
from releves_mailer.db import Database
from releves_mailer.db.claims import worker_identity
from releves_mailer.db.models import OutboxMessage, OutboxState
from releves_mailer.files import make_private_dir, write_atomically
from releves_mailer.mailbox.sink import MessageSink
from releves_mailer.notify.masking import masked_copy
from releves_mailer.signing.smime import SmimeSigner
from releves_mailer.waiting import wait_any

__all__ = ["Outbox", "SendReport"]

_log = logging.getLogger(__name__)

FIRST_RETRY = dt.timedelta(minutes=1)
LONGEST_RETRY = dt.timedelta(hours=1)
GIVE_UP_AFTER = dt.timedelta(days=3)
#: How long a claimed message stays reserved by one sender (covers a slow relay).
LEASE = dt.timedelta(minutes=5)


@dataclasses.dataclass
class SendReport:
    sent: int = 0
    filed: int = 0
    retried: int = 0
    failed: int = 0


class _Permanent(Exception):
    """The relay refused the recipient for good."""


def _backoff(attempts: int) -> dt.timedelta:
    doublings = min(max(attempts - 1, 0), 16)
    return min(FIRST_RETRY * (1 << doublings), LONGEST_RETRY)


class Outbox:
    """Enqueue mails and send the due ones through the relay (or file them locally)."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        relay: RelaySection,
        *,
        domain: str,
        data_dir: Path,
        local_sink: MessageSink | None = None,
        signer: SmimeSigner | None = None,
        timeout: float = 30.0,
        worker: str | None = None,
    ) -> None:
        self.database = database
        self.worker = worker or worker_identity()
        self.clock = clock
        self.relay = relay
        self.domain = domain
        self.data_dir = data_dir
        self.local_sink = local_sink
        self.signer = signer
        self.timeout = timeout
        self.wakeup = asyncio.Event()

    @property
    def sender(self) -> str:
        return self.relay.from_address or f"noreply@{self.domain}"

    async def enqueue(
        self,
        session: AsyncSession,
        message: EmailMessage,
        *,
        kind: str,
        dedup_key: str | None = None,
        fallback_address: str | None = None,
    ) -> int | None:
        """Queue ``message`` (its ``To`` is the recipient) in the caller's transaction.

        Returns the outbox id, or ``None`` when ``dedup_key`` was already queued.
        """
        if dedup_key is not None:
            existing = await session.scalar(
                select(OutboxMessage.id).where(OutboxMessage.dedup_key == dedup_key)
            )
            if existing is not None:
                return None
        if message["Message-ID"] is None:
            message["Message-ID"] = make_msgid(domain=self.domain)
        recipient = str(message["To"])
        raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
        if self.signer is not None:
            # The seed's mails are "signés par le portail", like the statements.
            raw = await self.signer.sign_async(raw)
        now = self.clock.now()
        row = OutboxMessage(
            created_at=now,
            kind=kind,
            dedup_key=dedup_key,
            sender=self.sender,
            recipient=recipient,
            fallback_address=fallback_address,
            message_id=str(message["Message-ID"]),
            subject=str(message["Subject"] or ""),
            raw=raw,
            state=OutboxState.PENDING,
            attempts=0,
            next_attempt_at=now,
            last_error="",
        )
        session.add(row)
        await session.flush()
        self.wakeup.set()
        return row.id

    async def _claim(self) -> OutboxMessage | None:
        """Reserve the oldest due message for :data:`LEASE` (safe across processes).

        The lease is ``next_attempt_at`` moved :data:`LEASE` ahead (a sender that dies leaves
        the message due again once it passes), noted in ``claimed_by``/``claimed_until``.
        On PostgreSQL the candidate row is locked ``SKIP LOCKED``: concurrent senders take
        different messages instead of queueing for the same one; on SQLite the conditional
        update is the claim.
        """
        now = self.clock.now()
        async with self.database.session() as session:
            query = (
                select(OutboxMessage)
                .where(
                    OutboxMessage.state == OutboxState.PENDING,
                    OutboxMessage.next_attempt_at <= now,
                )
                .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
                .limit(1)
            )
            if not self.database.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            candidate = await session.scalar(query)
            if candidate is None:
                return None
            claimed = await session.execute(
                update(OutboxMessage)
                .where(
                    OutboxMessage.id == candidate.id,
                    OutboxMessage.state == OutboxState.PENDING,
                    OutboxMessage.next_attempt_at == candidate.next_attempt_at,
                )
                .values(
                    next_attempt_at=now + LEASE,
                    claimed_by=self.worker,
                    claimed_until=now + LEASE,
                )
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return None
            return candidate

    async def _relay_send(self, row: OutboxMessage) -> None:
        use_tls = self.relay.port == 465
        try:
            errors, _ = await aiosmtplib.send(
                row.raw,
                sender=row.sender,
                recipients=[row.recipient],
                hostname=self.relay.host,
                port=self.relay.port,
                username=self.relay.username or None,
                password=self.relay.password.get_secret_value() or None,
                use_tls=use_tls,
                start_tls=self.relay.starttls and not use_tls,
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as error:
            codes = [refusal.code for refusal in error.recipients]
            if codes and all(code >= 500 for code in codes):
                raise _Permanent(str(error.recipients[0].message)) from None
            raise
        if errors:
            raise _Permanent(str(next(iter(errors.values()))))

    async def _file_locally(self, row: OutboxMessage) -> str:
        directory = self.data_dir / "outbox"
        path = directory / f"{row.id:08d}.eml"

        def write() -> None:
            make_private_dir(directory)
            write_atomically(path, row.raw)

        await asyncio.to_thread(write)
        where = str(path)
        if row.fallback_address and self.local_sink is not None:
            # The mail's Message-ID: filed again after a crash, it is in the box once.
            await self.local_sink.deliver(row.fallback_address, row.raw, row.message_id)
            where += f" et la boîte {row.fallback_address}"
        return where

    async def _finish(self, row: OutboxMessage, **values: object) -> None:
        values["claimed_until"] = None
        if values.get("state") in (OutboxState.SENT, OutboxState.FAILED):
            # Only a copy with its tokens masked stays (see the module's doc).
            values["raw"] = masked_copy(row.raw)
        async with self.database.session() as session:
            await session.execute(
                update(OutboxMessage).where(OutboxMessage.id == row.id).values(**values)
            )

    async def send_due(self) -> SendReport:
        """Send (or file) every message due now; one commit per message."""
        report = SendReport()
        while (row := await self._claim()) is not None:
            now = self.clock.now()
            if not self.relay.host:
                where = await self._file_locally(row)
                await self._finish(
                    row, state=OutboxState.SENT, sent_at=now, attempts=row.attempts + 1
                )
                _log.info(
                    "no SMTP relay configured: mail %d (%s) filed in %s",
                    row.id,
                    row.kind,
                    where,
                    extra={"mail_id": row.id},
                )
                report.filed += 1
                continue
            try:
                await self._relay_send(row)
            except _Permanent as error:
                await self._finish(
                    row,
                    state=OutboxState.FAILED,
                    attempts=row.attempts + 1,
                    last_error=f"refus définitif du relais : {error}",
                )
                _log.warning(
                    "mail %d to the relay refused for good: %s",
                    row.id,
                    error,
                    extra={"mail_id": row.id},
                )
                report.failed += 1
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
                attempts = row.attempts + 1
                reason = f"{type(error).__name__}: {error}"
                if now - row.created_at >= GIVE_UP_AFTER:
                    await self._finish(
                        row,
                        state=OutboxState.FAILED,
                        attempts=attempts,
                        last_error=f"abandon après {attempts} essais : {reason}",
                    )
                    report.failed += 1
                else:
                    await self._finish(
                        row,
                        attempts=attempts,
                        last_error=reason,
                        next_attempt_at=now + _backoff(attempts),
                    )
                    report.retried += 1
                _log.warning(
                    "mail %d not sent (attempt %d): %s",
                    row.id,
                    attempts,
                    reason,
                    extra={"mail_id": row.id},
                )
                # The relay is unwell: leave the other messages for the next round.
                break
            else:
                await self._finish(
                    row,
                    state=OutboxState.SENT,
                    sent_at=now,
                    attempts=row.attempts + 1,
                    last_error="",
                )
                report.sent += 1
        return report

    async def next_attempt_at(self) -> dt.datetime | None:
        async with self.database.session() as session:
            return await session.scalar(
                select(OutboxMessage.next_attempt_at)
                .where(OutboxMessage.state == OutboxState.PENDING)
                .order_by(OutboxMessage.next_attempt_at)
                .limit(1)
            )

    async def run(self, stop: asyncio.Event, *, idle: float = 30.0) -> None:
        """Daemon loop: send what is due, then sleep until the next due time or a wake-up."""
        while not stop.is_set():
            try:
                await self.send_due()
            except Exception:
                _log.exception("outbox round failed")
            upcoming = await self.next_attempt_at()
            delay = idle
            if upcoming is not None:
                delay = min(idle, max((upcoming - self.clock.now()).total_seconds(), 0.5))
            self.wakeup.clear()
            await wait_any(stop, self.wakeup, seconds=delay)

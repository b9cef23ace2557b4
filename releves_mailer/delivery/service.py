"""Delivery of cut statements into the boxes, exactly once, by each account's reception mode.

A statement is mailed when it is cut (state ``produced``) and its portal account receives
statements by mail: mode ``default`` into ``<login>@<domain>``, ``dedicated`` into
``releves.<login>@<domain>``. The decision is taken once per statement and recorded in
``delivery_box``: an empty string means "not mailed" (mode ``none``, or an empty statement of
a redevable that asked not to receive those); it stays downloadable. A later change of mode
never mails old statements.

Exactly once: the signed mails are built first (off the event loop; their files are written
and analysed ahead by ``MessageSink.prepare``); then, per group of statements, the mails are
stored in their boxes (``deliver_many``, idempotent by Message-ID: a statement's Message-ID
is fixed by its id), and one transaction claims the statements with one update
(``delivery_box`` goes from NULL to its box, or another deliverer got there first) and
records their Message-IDs. The next groups are built while a group is stored. A crash before
the delivery leaves neither the messages nor the marks; a crash between the delivery and the
commit leaves the messages without their marks, and the next run delivers them again, which
the box absorbs (same Message-ID); a crash after leaves both. A restart therefore neither
delivers twice nor skips a statement.

Several workers (daemons sharing one PostgreSQL database) claim the statements they are
about to deliver (:mod:`releves_mailer.db.claims`): each statement is built, signed and
stored by one worker; a worker that dies leaves its claims to expire, and the next worker
delivers them again, which the box absorbs as above.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import Sequence

from sqlalchemy import Table, case, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from releves_mailer.clock import Clock
from releves_mailer.config import PortalSection
from releves_mailer.db import Database
from releves_mailer.db.claims import DEFAULT_LEASE, claim_rows, release_rows, worker_identity
from releves_mailer.db.models import (
    BankAccount,
    BankConnection,
    PortalAccount,
    Redevable,
)
from releves_mailer.db.models.statements import Statement, StatementFile, StatementState
from releves_mailer.delivery.compose import StatementMail, build_signed_statement_mail
from releves_mailer.logs import log_context
from releves_mailer.mailbox.sink import MailDelivery, MessageSink
from releves_mailer.metrics import Metrics
from releves_mailer.portfolio.boxes import statement_box
from releves_mailer.render import Renderer
from releves_mailer.signing.smime import SmimeSigner

__all__ = ["DeliveryReport", "StatementDelivery"]

_log = logging.getLogger(__name__)

#: ``delivery_box`` of a statement that is not to be mailed (download only).
NOT_MAILED = ""


@dataclasses.dataclass
class DeliveryReport:
    delivered: int = 0
    not_mailed: int = 0
    already_done: int = 0


@dataclasses.dataclass(frozen=True)
class _Job:
    statement_id: int
    mail: StatementMail | None  # None: not to be mailed


class StatementDelivery:
    """Builds, signs and stores statement mails; ``deliver_due`` is called after each cut."""

    def __init__(
        self,
        database: Database,
        sink: MessageSink,
        renderer: Renderer,
        signer: SmimeSigner,
        clock: Clock,
        portal: PortalSection,
        *,
        concurrency: int = 4,
        group: int = 25,
        metrics: Metrics | None = None,
        worker: str | None = None,
        lease: dt.timedelta = DEFAULT_LEASE,
    ) -> None:
        self.metrics = metrics
        self.worker = worker or worker_identity()
        self.lease = lease
        self.database = database
        self.sink = sink
        self.renderer = renderer
        self.signer = signer
        self.clock = clock
        self.portal = portal
        self.concurrency = concurrency
        self.group = group

    async def _jobs(self, session: AsyncSession, limit: int) -> list[_Job]:
        rows = (
            await session.execute(
                select(Statement, Redevable, PortalAccount, BankAccount, BankConnection)
                .join(Redevable, Redevable.id == Statement.redevable_id)
                .join(PortalAccount, PortalAccount.id == Redevable.account_id)
                .join(BankAccount, BankAccount.id == Statement.account_id)
                .join(BankConnection, BankConnection.id == BankAccount.connection_id)
                .where(
                    Statement.state == StatementState.PRODUCED,
                    Statement.delivery_box.is_(None),
                )
                .order_by(Statement.id)
                .limit(limit)
            )
        ).all()
        if not rows:
            return []
        ids = [row[0].id for row in rows]
        files: dict[tuple[int, str], bytes] = {
            (statement_id, kind): content
            for statement_id, kind, content in await session.execute(
                select(StatementFile.statement_id, StatementFile.kind, StatementFile.content).where(
                    StatementFile.statement_id.in_(ids)
                )
            )
        }
        jobs = []
        for statement, redevable, account, bank_account, connection in rows:
            box = statement_box(account.login, account.reception_mode, self.portal.domain)
            empty = statement.movement_count == 0 and statement.deleted_count == 0
            if box is None or (empty and redevable.skip_empty_mail):
                jobs.append(_Job(statement.id, None))
                continue
            jobs.append(
                _Job(
                    statement.id,
                    StatementMail(
                        statement_id=statement.id,
                        periodicity=statement.periodicity,
                        company_name=redevable.full_company_name,
                        siret=redevable.siret,
                        bank_name=connection.bank_name,
                        account_label=bank_account.label,
                        iban=statement.iban or bank_account.iban or "",
                        period_start=statement.period_start,
                        period_end=statement.period_end,
                        due_date=statement.due_date,
                        movement_count=statement.movement_count,
                        opening_balance=statement.opening_balance or 0,
                        closing_balance=statement.closing_balance or 0,
                        currency=statement.currency,
                        cfonb=files[(statement.id, "cfonb")],
                        deleted_csv=files.get((statement.id, "csv")),
                        bank_balance=statement.bank_balance if statement.balance_mismatch else None,
                        recipient=box,
                        domain=self.portal.domain,
                        portal_name=self.portal.name,
                        created_at=statement.created_at,
                        support_email=self.portal.support_email,
                        support_phone=self.portal.support_phone,
                    ),
                )
            )
        return jobs

    async def _store(self, pairs: Sequence[tuple[_Job, bytes | None]]) -> None:
        """Store the mails of a group in their boxes, with one batch delivery; those already
        there (an earlier run that crashed before its claim, another deliverer) stay once."""
        items = [
            MailDelivery(
                job.mail.recipient,
                raw,
                job.mail.message_id,
                internal_date=job.mail.created_at,
            )
            for job, raw in pairs
            if job.mail is not None and raw is not None
        ]
        await self.sink.deliver_many(items)

    async def _claim(
        self, session: AsyncSession, pairs: Sequence[tuple[_Job, bytes | None]]
    ) -> set[int]:
        """Mark the statements decided, with one update; returns the ids claimed (the others
        were decided by another deliverer)."""
        table = Statement.__table__
        assert isinstance(table, Table)
        columns = table.c
        mailed = {job.statement_id: job.mail for job, _ in pairs if job.mail is not None}
        ids = [job.statement_id for job, _ in pairs]
        values: dict[str, object] = {"delivery_box": NOT_MAILED}
        if mailed:
            # One conditional update for the whole group; each statement's values by CASE.
            values = {
                "delivery_box": case(
                    {key: mail.recipient for key, mail in mailed.items()},
                    value=columns.id,
                    else_=literal(NOT_MAILED),
                ),
                "message_id": case(
                    {key: mail.message_id for key, mail in mailed.items()},
                    value=columns.id,
                    else_=columns.message_id,
                ),
                "delivered_at": case(
                    (
                        columns.id.in_(list(mailed)),
                        literal(self.clock.now(), columns.delivered_at.type),
                    ),
                    else_=columns.delivered_at,
                ),
            }
        return set(
            (
                await session.execute(
                    update(table)
                    .where(columns.id.in_(ids), columns.delivery_box.is_(None))
                    .values(**values)
                    .returning(columns.id)
                )
            ).scalars()
        )

    async def _build(self, job: _Job, gate: asyncio.Semaphore) -> bytes | None:
        if job.mail is None:
            return None
        with log_context(statement_id=job.statement_id):
            async with gate:
                raw = await build_signed_statement_mail(job.mail, self.renderer, self.signer)
            # The file is written (fsync) and analysed ahead, while earlier groups are stored.
            await self.sink.prepare(raw)
        return raw

    async def _release(self, ids: list[int]) -> None:
        try:
            await release_rows(self.database, Statement, ids, worker=self.worker)
        except Exception:  # the lease ends by itself
            _log.warning("claims of statements %s not released", ids, exc_info=True)

    async def deliver_due(self, *, batch: int = 200) -> DeliveryReport:
        """Deliver every cut statement not yet decided; safe to run from several processes."""
        report = DeliveryReport()
        gate = asyncio.Semaphore(self.concurrency)
        while True:
            async with self.database.session() as session:
                jobs = await self._jobs(session, batch)
            if not jobs:
                return report
            full = len(jobs) == batch
            claimed_ids = await claim_rows(
                self.database,
                Statement,
                [job.statement_id for job in jobs],
                worker=self.worker,
                now=self.clock.now(),
                lease=self.lease,
                columns=(Statement.delivery_box,),
                keep=lambda row: row[1] is None,
            )
            if not claimed_ids:
                # Every one of them is another worker's, being delivered: theirs to finish.
                return report
            mine = set(claimed_ids)
            jobs = [job for job in jobs if job.statement_id in mine]
            # Built in worker threads while the groups before are stored: composition and
            # signature overlap the database and the fsyncs.
            builds = [asyncio.ensure_future(self._build(job, gate)) for job in jobs]
            try:
                for start in range(0, len(jobs), self.group):
                    group = jobs[start : start + self.group]
                    built = await asyncio.gather(*builds[start : start + self.group])
                    pairs = list(zip(group, built, strict=True))
                    # Stored first, then marked in one transaction per group: a crash in
                    # between leaves the group unmarked, and the next run's delivery of the
                    # same Message-IDs stores nothing again.
                    await self._store(pairs)
                    async with self.database.session() as session:
                        claimed = await self._claim(session, pairs)
                    now = self.clock.now()
                    for job in group:
                        if job.statement_id not in claimed:
                            report.already_done += 1
                            continue
                        if job.mail is None:
                            report.not_mailed += 1
                        else:
                            report.delivered += 1
                        if self.metrics is not None:
                            lag = None if job.mail is None else now - job.mail.created_at
                            self.metrics.delivered(None if lag is None else lag.total_seconds())
            finally:
                for build in builds:
                    build.cancel()
                await asyncio.gather(*builds, return_exceptions=True)
                await self._release(claimed_ids)
            if not full:
                return report

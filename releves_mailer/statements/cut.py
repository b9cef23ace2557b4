"""Statement cutting: every due statement exactly once, in batches, oldest first.

See the package docstring for the rules. A statement without fresh data waits (a row says so
once the night after its due date is over); one that cannot be built gets a ``failed`` row.

Workers sharing the database claim the accounts of each chunk before cutting them
(:mod:`releves_mailer.db.claims`): an account another worker holds is left to it. The
unique (account, due date) constraint stays the last guard: a statement is cut once.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from releves_mailer.clock import PARIS, Clock
from releves_mailer.collect.errors import describe_error
from releves_mailer.db import Database
from releves_mailer.db.claims import DEFAULT_LEASE, claim_rows, release_rows, worker_identity
from releves_mailer.db.models.collect import BankAccount, BankConnection, ConnectionState
from releves_mailer.db.models.portfolio import Redevable
from releves_mailer.db.models.statements import Statement, StatementState
from releves_mailer.logs import log_context
from releves_mailer.statements.build import BuildFailed, Target, build_statement
from releves_mailer.statements.plan import StatementTiming, paris_midnight
from releves_mailer.statements.storage import (
    CutOutcome,
    CutReport,
    CutResult,
    load_facts,
    load_targets,
    lock_connections,
    plan_due_accounts,
    upsert_row,
    write_statements,
)

__all__ = ["CUT_BATCH", "cut_due_statements", "cut_statement"]

log = logging.getLogger(__name__)


#: Statements the runner cuts in one database transaction (each one complete: a crash keeps
#: all of them or none, never part of one).
CUT_BATCH = 50


async def cut_statement(
    database: Database,
    account_id: int,
    due: dt.date,
    *,
    clock: Clock,
    timing: StatementTiming | None = None,
) -> CutResult:
    """Produce the statement of ``account_id`` due on ``due``, or record why it must wait.

    Idempotent: a statement that exists is left alone. Call in due date order for one account
    (the runner does); a due date after a waiting one is refused (``waiting``).
    """
    return await _cut_one(database, account_id, due, clock.now(), timing or StatementTiming())


async def _cut_one(
    database: Database, account_id: int, due: dt.date, now: dt.datetime, timing: StatementTiming
) -> CutResult:
    try:
        async with database.session() as session:
            (result,) = await _cut_many(
                session, database, {account_id: due}, now, timing, strict=True
            )
        return result
    except IntegrityError:
        # Another process cut it between our check and our insert (unique constraint).
        return CutResult(account_id, due, CutOutcome.ALREADY)
    except BuildFailed as failure:
        return await _record_failure(database, account_id, due, now, failure.reason)


async def _record_failure(
    database: Database, account_id: int, due: dt.date, now: dt.datetime, reason: str
) -> CutResult:
    """Everything the attempt changed was rolled back; only the failure is recorded."""
    async with database.session() as session:
        account = await session.get(BankAccount, account_id)
        assert account is not None
        await lock_connections(session, database, [account.connection_id])
        redevable = await session.get(Redevable, account.redevable_id)
        assert redevable is not None
        existing = await session.scalar(
            select(Statement).where(Statement.account_id == account_id, Statement.due_date == due)
        )
        statement = await upsert_row(session, account, existing, due, now, redevable)
        statement.state = StatementState.FAILED
        statement.reason = reason
        statement.updated_at = now
        return CutResult(account_id, due, CutOutcome.FAILED, statement.id, reason=reason)


async def _cut_many(
    session: AsyncSession,
    database: Database,
    wanted: dict[int, dt.date],
    now: dt.datetime,
    timing: StatementTiming,
    *,
    strict: bool = False,
) -> list[CutResult]:
    """Cut the statement of each account at its due date, in the session's transaction.

    Every statement is complete in the transaction; a failure to build one raises
    :class:`BuildFailed` (naming the account) before anything is written.
    """
    targets = await load_targets(session, database, wanted)
    results: list[CutResult] = []
    to_build: list[Target] = []
    for account_id, due in wanted.items():
        target = targets.get(account_id)
        if target is None:
            if strict:
                raise LookupError(f"bank account {account_id} not found")
            results.append(CutResult(account_id, due, CutOutcome.FAILED, reason="compte absent"))
            continue
        account, existing = target.account, target.existing
        if existing is not None and existing.state is StatementState.PRODUCED:
            results.append(CutResult(account_id, due, CutOutcome.ALREADY, existing.id))
        elif not account.active or not target.redevable.active:
            results.append(CutResult(account_id, due, CutOutcome.SKIPPED))
        elif target.earlier_open:
            results.append(
                CutResult(account_id, due, CutOutcome.WAITING, reason="relevé précédent en attente")
            )
        elif account.last_collected_at is None or account.last_collected_at < paris_midnight(
            due + dt.timedelta(days=1)
        ):
            results.append(
                await _wait(session, account, target.redevable, existing, due, now, timing)
            )
        else:
            to_build.append(target)
    if not to_build:
        return results
    facts = await load_facts(session, to_build)
    built = []
    for target in to_build:
        with log_context(account_id=target.account.id, connection_id=target.account.connection_id):
            built.append(await build_statement(target, facts, now))
    results.extend(await write_statements(session, built, now))
    return results


async def _wait(
    session: AsyncSession,
    account: BankAccount,
    redevable: Redevable,
    existing: Statement | None,
    due: dt.date,
    now: dt.datetime,
    timing: StatementTiming,
) -> CutResult:
    """No data collected after D yet: keep (or create, once the night is over) a waiting row."""
    if now < timing.deadline(due):
        return CutResult(account.id, due, CutOutcome.WAITING, reason="collecte à venir")
    connection = await session.get(BankConnection, account.connection_id)
    state = StatementState.WAITING
    since = (
        "jamais collecté"
        if account.last_collected_at is None
        else f"dernière collecte le {account.last_collected_at.astimezone(PARIS):%d/%m/%Y %H:%M}"
    )
    reason = f"en attente de la collecte bancaire ({since})"
    if connection is not None and connection.state is ConnectionState.ERROR:
        state = StatementState.FAILED
        message = describe_error(connection.error_code or "bug").message
        reason = f"connexion bancaire en erreur : {message} ({since})"
    elif connection is not None and not connection.active:
        state = StatementState.FAILED
        reason = f"connexion bancaire fermée ({since})"
    statement = await upsert_row(session, account, existing, due, now, redevable)
    if statement.state is not state or statement.reason != reason:
        statement.state = state
        statement.reason = reason
        statement.updated_at = now
    return CutResult(account.id, due, CutOutcome.WAITING, statement.id, reason=reason)


async def _cut_chunk(
    database: Database, wanted: dict[int, dt.date], now: dt.datetime, timing: StatementTiming
) -> list[CutResult]:
    """Cut a chunk of (account, due date) in one transaction; on trouble, one by one."""
    wanted = dict(wanted)
    results: list[CutResult] = []
    while wanted:
        try:
            async with database.session() as session:
                done = await _cut_many(session, database, wanted, now, timing)
        except BuildFailed as failure:
            # Rolled back; the account that cannot be built gets its failure, the others
            # are cut again without it.
            due = wanted.pop(failure.account_id)
            results.append(
                await _record_failure(database, failure.account_id, due, now, failure.reason)
            )
            continue
        except Exception:
            log.warning("statements of %s: batch failed, one by one", sorted(wanted), exc_info=True)
            for account_id, due in wanted.items():
                try:
                    with log_context(account_id=account_id):
                        results.append(await _cut_one(database, account_id, due, now, timing))
                except Exception as error:  # one account never sinks the batch
                    log.exception("statement of account %s due %s failed", account_id, due)
                    results.append(CutResult(account_id, due, CutOutcome.FAILED, reason=str(error)))
            return results
        results.extend(done)
        return results
    return results


async def _release(database: Database, ids: list[int], worker: str) -> None:
    try:
        await release_rows(database, BankAccount, ids, worker=worker)
    except Exception:  # the lease ends by itself
        log.warning("claims of accounts %s not released", ids, exc_info=True)


async def cut_due_statements(
    database: Database,
    *,
    clock: Clock,
    timing: StatementTiming | None = None,
    redevable_id: int | None = None,
    batch: int = CUT_BATCH,
    worker: str | None = None,
    lease: dt.timedelta = DEFAULT_LEASE,
) -> CutReport:
    """Cut every statement due before today (Paris) and not produced yet, oldest first.

    After downtime the missed due dates are caught up in order. An account whose data is not
    fresh waits (a row says so once the night is over); the others go on. The statements are
    cut ``batch`` accounts per transaction (each statement complete in its transaction), one
    due date per account per round, rounds until every account is done or must wait. Each
    chunk's accounts are claimed by ``worker`` for ``lease`` first; those another worker
    holds are skipped (that worker cuts them).
    """
    worker = worker or worker_identity()
    timing = timing or StatementTiming()
    now = clock.now()
    report = CutReport()
    plan = await plan_due_accounts(database, now=now, timing=timing, redevable_id=redevable_id)
    queue = {item.account_id: list(item.dates) for item in plan}
    while queue:
        items = [(account_id, dates[0]) for account_id, dates in queue.items()]
        results: list[CutResult] = []
        for start in range(0, len(items), max(1, batch)):
            chunk = dict(items[start : start + max(1, batch)])
            claimed = await claim_rows(
                database, BankAccount, chunk, worker=worker, now=clock.now(), lease=lease
            )
            if not claimed:
                continue
            try:
                results.extend(
                    await _cut_chunk(database, {key: chunk[key] for key in claimed}, now, timing)
                )
            finally:
                await _release(database, claimed, worker)
        following: dict[int, list[dt.date]] = {}
        for result in results:
            report.results.append(result)
            dates = queue[result.account_id]
            if result.outcome in (CutOutcome.CUT, CutOutcome.ALREADY) and len(dates) > 1:
                following[result.account_id] = dates[1:]
        queue = following
    return report

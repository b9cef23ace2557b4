"""Work claims: one worker at a time on a row, with a lease another worker takes over.

Several daemons may share one PostgreSQL database. A refresh, a cut or a delivery is
claimed first: one transaction selects the candidate rows ``FOR UPDATE SKIP LOCKED`` (rows
another worker is claiming right now are skipped, not waited for), then marks them
``claimed_by`` this worker until ``claimed_until`` (the lease) with a conditional update, so
a row is claimed only when nobody holds it or its lease has expired. A worker that dies
leaves its claims behind; they expire after the lease and another worker takes the work
over (at once when the dead worker ran on the same host: its process is gone). Finished
work releases its claims.

On SQLite (one daemon per data directory, single writer) there is no ``SKIP LOCKED``: the
conditional update alone, inside SQLite's serialised write transactions, is the claim.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import String, or_, select, update
from sqlalchemy.orm import Mapped, mapped_column

from releves_mailer.db.base import UTCDateTime
from releves_mailer.db.engine import Database

__all__ = ["DEFAULT_LEASE", "Claimable", "claim_rows", "release_rows", "worker_identity"]

#: How long a claim holds when nobody says otherwise (``[collection] claim_lease_seconds``).
DEFAULT_LEASE = dt.timedelta(minutes=5)
#: Ids claimed per statement (bounded IN lists).
CHUNK = 500

_identity: str | None = None


def worker_identity() -> str:
    """This process's worker name: host name, pid and a random suffix (fixed per process).

    The suffix tells a restarted process from a dead one that had the same pid.
    """
    global _identity
    if _identity is None or _identity.rsplit(":", 2)[1] != str(os.getpid()):
        _identity = f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"
    return _identity


class Claimable:
    """Mixin of the tables whose rows are claimed by one worker at a time."""

    #: The worker holding the row (kept after release: the last worker that did the work).
    claimed_by: Mapped[str | None] = mapped_column(String(120), default=None)
    #: End of the lease; NULL when nobody holds the row.
    claimed_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)


def _free(model: Any, worker: str, now: dt.datetime, dead: Sequence[str] = ()) -> Any:
    conditions = [
        model.claimed_until.is_(None),
        model.claimed_until <= now,
        model.claimed_by == worker,
    ]
    if dead:
        conditions.append(model.claimed_by.in_(list(dead)))
    return or_(*conditions)


def _dead_here(workers: Iterable[str | None]) -> list[str]:
    """The workers of this host whose process is gone (a killed daemon or command).

    Their claims need not wait for the lease: a ``simulate`` restarted after a kill redoes
    the same simulated instant at once. A process that cannot be signalled but exists
    counts as alive; a pid reused since only makes us wait for the lease.
    """
    host = socket.gethostname()[:80]
    dead = []
    for name in workers:
        if name is None:
            continue
        parts = name.rsplit(":", 2)
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
            continue
        try:
            os.kill(int(parts[1]), 0)
        except ProcessLookupError:
            dead.append(name)
        except OSError:
            continue  # exists, someone else's
    return dead


async def claim_rows(
    database: Database,
    model: Any,
    ids: Iterable[int],
    *,
    worker: str,
    now: dt.datetime,
    lease: dt.timedelta = DEFAULT_LEASE,
    columns: Sequence[Any] = (),
    keep: Callable[[Any], bool] | None = None,
) -> list[int]:
    """Claim the rows of ``model`` among ``ids`` that nobody else holds; their ids, sorted.

    ``columns`` are read with each candidate row (after its lock) and ``keep`` decides on
    them whether the work is still to do: a row another worker finished since the caller
    looked is then left alone (for instance a refresh no longer due).
    """
    wanted = sorted(set(ids))
    claimed: list[int] = []
    for start in range(0, len(wanted), CHUNK):
        part = wanted[start : start + CHUNK]
        async with database.session() as session:
            holders = await session.scalars(
                select(model.claimed_by)
                .where(model.id.in_(part), model.claimed_until > now, model.claimed_by != worker)
                .distinct()
            )
            dead = _dead_here(holders.all())
            query = (
                select(model.id, *columns)
                .where(model.id.in_(part), _free(model, worker, now, dead))
                .order_by(model.id)
            )
            if database.is_sqlite:
                # Any write takes SQLite's database lock; writing first avoids upgrading a
                # read snapshot later (which fails at once instead of waiting).
                await session.execute(
                    update(model)
                    .where(model.id.in_(part))
                    .values(claimed_by=model.claimed_by)
                    .execution_options(synchronize_session=False)
                )
            else:
                query = query.with_for_update(skip_locked=True, of=model)
            rows = (await session.execute(query)).all()
            candidates = [row[0] for row in rows if keep is None or keep(row)]
            if not candidates:
                continue
            # Conditional: on SQLite this update is the claim itself (it takes the write
            # lock); on PostgreSQL the rows are already locked by this transaction.
            result = await session.execute(
                update(model)
                .where(model.id.in_(candidates), _free(model, worker, now, dead))
                .values(claimed_by=worker, claimed_until=now + lease)
                .returning(model.id)
                .execution_options(synchronize_session=False)
            )
            claimed.extend(result.scalars())
    return sorted(claimed)


async def release_rows(database: Database, model: Any, ids: Iterable[int], *, worker: str) -> None:
    """End this worker's leases on ``ids`` (``claimed_by`` stays: who did the work last)."""
    wanted = sorted(set(ids))
    for start in range(0, len(wanted), CHUNK):
        async with database.session() as session:
            await session.execute(
                update(model)
                .where(model.id.in_(wanted[start : start + CHUNK]), model.claimed_by == worker)
                .values(claimed_until=None)
                .execution_options(synchronize_session=False)
            )

"""A portfolio of redevables with test bank connections, shared by the statement tests."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from releves_mailer.clock import ManualClock
from releves_mailer.collect.connections import connect_test_bank
from releves_mailer.collect.testbank import TestBank, parse_error_schedule
from releves_mailer.db import Database
from releves_mailer.db.models import Periodicity, PortalAccount, Redevable
from releves_mailer.signing.secrets import KeyRing
from tests.factories import make_siren


@dataclass(frozen=True)
class Spec:
    periodicity: Periodicity
    month: int | None = None
    day: int | None = None
    include_pending: bool = False
    #: Test bank errors of this connection only (``CODE@YYYY-MM-DD[..YYYY-MM-DD]``).
    errors: tuple[str, ...] = ()


P = Periodicity
#: Twenty redevables: the six periodicities with their day and month variants.
TWENTY = (
    Spec(P.JOURNALIERE),
    Spec(P.JOURNALIERE, include_pending=True),
    Spec(P.JOURNALIERE, include_pending=True),
    Spec(P.HEBDOMADAIRE, day=2),
    Spec(P.HEBDOMADAIRE, day=1),
    Spec(P.HEBDOMADAIRE, day=6, include_pending=True),
    Spec(P.MENSUELLE, day=1),
    Spec(P.MENSUELLE, day=0),
    Spec(P.MENSUELLE, day=15),
    Spec(P.MENSUELLE, day=28, include_pending=True),
    Spec(P.TRIMESTRIELLE, month=1, day=1),
    Spec(P.TRIMESTRIELLE, month=2, day=0),
    Spec(P.TRIMESTRIELLE, month=3, day=10),
    Spec(P.SEMESTRIELLE, month=1, day=5),
    Spec(P.SEMESTRIELLE, month=6, day=0),
    Spec(P.SEMESTRIELLE, month=3, day=20),
    Spec(P.ANNUELLE, month=2, day=31),
    Spec(P.ANNUELLE, month=12, day=31),
    Spec(P.ANNUELLE, month=7, day=14),
    Spec(P.JOURNALIERE),
)
FIVE = (
    Spec(P.JOURNALIERE),
    Spec(P.JOURNALIERE, include_pending=True),
    Spec(P.HEBDOMADAIRE, day=4),
    Spec(P.MENSUELLE, day=0),
    Spec(P.MENSUELLE, day=10, include_pending=True),
)


async def build_portfolio(
    database: Database,
    clock: ManualClock,
    keyring: KeyRing,
    bank: TestBank,
    specs: tuple[Spec, ...],
    *,
    first_index: int = 100,
) -> list[int]:
    """A portal account, one redevable per spec, each connected to the test bank."""
    now = clock.now()
    async with database.session() as session:
        account = PortalAccount(
            login=f"cabinet{first_index}",
            company_name="CABINET SIMULATION",
            siret="40483304800022",
            email="cabinet@example.org",
            password_hash="not-a-real-hash",
            created_at=now,
            updated_at=now,
        )
        session.add(account)
        await session.flush()
        redevables = [
            Redevable(
                account_id=account.id,
                family_id=account.id,
                siren=make_siren(first_index + index),
                company_name=f"REDEVABLE {index:02d}",
                periodicity=spec.periodicity,
                month=spec.month,
                day=spec.day,
                include_pending=spec.include_pending,
                created_at=now,
                updated_at=now,
            )
            for index, spec in enumerate(specs)
        ]
        session.add_all(redevables)
        await session.flush()
        ids = [redevable.id for redevable in redevables]
    for redevable_id, spec in zip(ids, specs, strict=True):
        await connect_test_bank(
            database,
            redevable_id,
            bank=bank,
            keyring=keyring,
            clock=clock,
            errors=parse_error_schedule(spec.errors),
        )
    return ids


def paris_night(day: dt.date) -> dt.datetime:
    """22:00 Paris on ``day``: a moment outside the collection window, before the night."""
    from releves_mailer.clock import PARIS

    return dt.datetime.combine(day, dt.time(22, 0), tzinfo=PARIS).astimezone(dt.UTC)

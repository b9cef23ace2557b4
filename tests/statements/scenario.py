"""The portfolios of the statement tests (built with :func:`tests.factories.build_portfolio`)."""

from __future__ import annotations

import datetime as dt

from releves_mailer.clock import PARIS
from releves_mailer.db.models import Periodicity
from tests.factories import Spec, build_portfolio

__all__ = ["FIVE", "TWENTY", "Spec", "build_portfolio", "paris_night"]

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


def paris_night(day: dt.date) -> dt.datetime:
    """22:00 Paris on ``day``: a moment outside the collection window, before the night."""
    return dt.datetime.combine(day, dt.time(22, 0), tzinfo=PARIS).astimezone(dt.UTC)

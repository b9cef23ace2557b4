"""Fixtures of the delivery tests: statement mail inputs and the shipped templates."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from releves_mailer.delivery.compose import StatementMail
from releves_mailer.render import Renderer

CFONB_LINE = b"04" + b"1" * 118 + b"\r\n"


def statement_mail(**overrides: object) -> StatementMail:
    """A small weekly statement; any field can be replaced."""
    fields: dict[str, object] = {
        "statement_id": 42,
        "periodicity": "HEBDOMADAIRE",
        "company_name": "ACME Société",
        "siret": "40483304800022",
        "bank_name": "Connecteur de test",
        "account_label": "Compte chèque",
        "iban": "FR7613026240019300290000029",
        "period_start": dt.date(2026, 11, 19),
        "period_end": dt.date(2026, 11, 25),
        "due_date": dt.date(2026, 11, 25),
        "movement_count": 3,
        "opening_balance": 123456,
        "closing_balance": 120000,
        "currency": "EUR",
        "cfonb": CFONB_LINE * 5,
        "recipient": "demo@releves.example",
        "domain": "releves.example",
        "portal_name": "Portail ASPOne.fr",
        "created_at": dt.datetime(2026, 11, 25, 23, 10, tzinfo=dt.UTC),
    }
    fields.update(overrides)
    return StatementMail(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def renderer() -> Renderer:
    return Renderer()


@pytest.fixture
def make_statement() -> Callable[..., StatementMail]:
    """Factory of :class:`StatementMail` (see :func:`statement_mail`)."""
    return statement_mail

"""Fixtures of the portfolio tests: a primary account with a secondary, and SIREN makers."""

from __future__ import annotations

import pytest
from stdnum import luhn

from releves_mailer.clock import ManualClock
from releves_mailer.db import Database
from releves_mailer.db.models import PortalAccount
from releves_mailer.portfolio.accounts import AccountInput, create_account

PASSWORD = "correct horse battery"


def make_siren(index: int) -> str:
    """A valid SIREN (Luhn) distinct for each ``index``."""
    base = f"9{index:07d}"
    return base + luhn.calc_check_digit(base)


def make_nic(siren: str, establishment: int = 1) -> str:
    base = f"{establishment:04d}"
    return base + luhn.calc_check_digit(siren + base)


@pytest.fixture
async def family(database: Database, clock: ManualClock) -> tuple[PortalAccount, PortalAccount]:
    """A primary account ``cabinet`` and its secondary ``agence``."""
    async with database.session() as session:
        primary = await create_account(
            session,
            clock,
            AccountInput(
                login="cabinet",
                company_name="Cabinet Martin",
                siret=make_siren(1) + make_nic(make_siren(1)),
                email="chef@cabinet.example",
            ),
            PASSWORD,
        )
        secondary = await create_account(
            session,
            clock,
            AccountInput(
                login="agence",
                company_name="Cabinet Martin Agence Sud",
                siret=make_siren(2) + make_nic(make_siren(2)),
                email="sud@cabinet.example",
                parent_login="cabinet",
            ),
            PASSWORD,
        )
    return primary, secondary

"""Portal accounts and the mailbox authenticator built on them."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from releves_mailer.clock import ManualClock
from releves_mailer.db import Database
from releves_mailer.db.models import PortalAccount, ReceptionMode
from releves_mailer.errors import UserError
from releves_mailer.portfolio.accounts import (
    AccountInput,
    create_account,
    get_account,
    set_password,
    subscribe,
)
from releves_mailer.portfolio.auth import PortfolioAuthenticator
from releves_mailer.portfolio.boxes import split_address
from tests.factories import PASSWORD, make_nic, make_siren


async def test_password_is_stored_as_argon2_hash_only(
    database: Database, family: tuple[PortalAccount, PortalAccount]
) -> None:
    async with database.session() as session:
        hashes = (await session.scalars(select(PortalAccount.password_hash))).all()
    assert hashes and all(h.startswith("$argon2id$") and PASSWORD not in h for h in hashes)


async def test_authenticator_opens_own_and_dedicated_box(
    database: Database, clock: ManualClock, family: tuple[PortalAccount, PortalAccount]
) -> None:
    auth = PortfolioAuthenticator(database, "releves.example")
    assert await auth.authenticate("cabinet", PASSWORD) == "cabinet@releves.example"
    assert await auth.authenticate("Cabinet@Releves.Example", PASSWORD) == "cabinet@releves.example"
    assert (
        await auth.authenticate("releves.cabinet@releves.example", PASSWORD)
        == "releves.cabinet@releves.example"
    )
    assert await auth.authenticate("cabinet", PASSWORD + "x") is None
    assert await auth.authenticate("personne", PASSWORD) is None
    assert await auth.authenticate("cabinet@ailleurs.example", PASSWORD) is None
    agence = await auth.local_box("Agence@releves.example")
    dedicated = await auth.local_box("releves.agence@releves.example")
    cabinet = await auth.local_box("cabinet@releves.example")
    assert agence is not None and dedicated is not None and cabinet is not None
    assert agence.address == "agence@releves.example" and not agence.dedicated
    assert dedicated.address == "releves.agence@releves.example" and dedicated.dedicated
    assert agence.family_id == cabinet.family_id == dedicated.family_id  # a secondary's family
    assert await auth.local_box("agence@ailleurs.example") is None
    assert await auth.local_box("noreply@releves.example") is None
    async with database.session() as session:
        account = await get_account(session, "cabinet")
        await set_password(session, clock, account, "un nouveau mot de passe")
    assert await auth.authenticate("cabinet", PASSWORD) is None
    assert await auth.authenticate("cabinet", "un nouveau mot de passe") is not None


def test_split_address() -> None:
    assert split_address("releves.demo", "d.example") == ("demo", True)
    assert split_address("demo@d.example", "d.example") == ("demo", False)
    assert split_address("releves.@d.example", "d.example") is None


async def test_account_rules(
    database: Database, clock: ManualClock, family: tuple[PortalAccount, PortalAccount]
) -> None:
    siret = make_siren(50) + make_nic(make_siren(50))

    def data(**changes: str) -> AccountInput:
        fields = {
            "login": "nouveau",
            "company_name": "N",
            "siret": siret,
            "email": "n@example.com",
        } | changes
        return AccountInput(**fields)  # type: ignore[arg-type]

    async with database.session() as session:
        for changes, field in (
            ({"login": "cabinet"}, "login"),
            ({"login": "releves.x"}, "login"),
            ({"login": "Pas bon!"}, "login"),
            ({"siret": "12345678901234"}, "siret"),
            ({"email": "x"}, "email"),
            ({"parent_login": "agence"}, "parent"),
            ({"parent_login": "inconnu"}, "login"),
        ):
            with pytest.raises(UserError) as caught:
                await create_account(session, clock, data(**changes), PASSWORD)
            assert caught.value.field == field, changes
        with pytest.raises(UserError) as caught:
            await create_account(session, clock, data(), "court")
        assert caught.value.field == "password"
        account = await create_account(session, clock, data(), PASSWORD)
        assert account.is_primary and not account.subscribed
        with pytest.raises(UserError):
            await subscribe(
                session, clock, account, accept_terms=False, reception_mode=ReceptionMode.NONE
            )
        await subscribe(
            session, clock, account, accept_terms=True, reception_mode=ReceptionMode.DEDICATED
        )
        assert account.terms_accepted_at == clock.now()
        assert account.reception_mode is ReceptionMode.DEDICATED

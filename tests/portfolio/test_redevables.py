"""Redevables: validation, the family-wide SIRET rule, (de)activation and search."""

from __future__ import annotations

import pytest

from releves_mailer.clock import ManualClock
from releves_mailer.db import Database
from releves_mailer.db.models import BankAccount, BankConnection, ConnectionState, PortalAccount
from releves_mailer.errors import UserError
from releves_mailer.portfolio.accounts import AccountInput, create_account
from releves_mailer.portfolio.redevables import (
    RedevableInput,
    RedevableSearch,
    create_redevable,
    deactivate_redevable,
    get_redevable,
    reactivate_redevable,
    search_redevables,
    validate_redevable,
)
from tests.factories import PASSWORD, make_nic, make_siren


def valid(index: int, name: str = "", nic: bool = True, **overrides: object) -> RedevableInput:
    siren = make_siren(index)
    fields: dict[str, object] = {
        "siren": siren,
        "nic": make_nic(siren) if nic else "",
        "company_name": name or f"SOCIETE {index}",
        "periodicity": "MENSUELLE",
        "day": 0,
    }
    fields.update(overrides)
    data, problems = validate_redevable(**fields)  # type: ignore[arg-type]
    assert problems == []
    assert data is not None
    return data


def test_validation_reports_every_field() -> None:
    data, problems = validate_redevable(
        siren="12345",
        nic="1",
        company_name="",
        company_name_2="X" * 36,
        email="pas-un-email",
        periodicity="ANNUELLE",
        month=13,
        day=40,
        remote_entry="2",
    )
    assert data is None
    fields = sorted(p.field or "" for p in problems)
    assert fields == [
        "company_name",
        "company_name_2",
        "day",
        "email",
        "month",
        "remote_entry",
        "siren",
    ]
    by_field = {p.field: p.message for p in problems}
    assert "9 chiffres" in by_field["siren"]
    assert "36 caractères, 35 au plus" in by_field["company_name_2"]


def test_nic_must_form_a_valid_siret() -> None:
    siren = make_siren(3)
    nic = make_nic(siren)
    wrong = nic[:-1] + str((int(nic[-1]) + 1) % 10)
    _, problems = validate_redevable(
        siren=siren, nic=wrong, company_name="A", periodicity="JOURNALIERE"
    )
    assert [p.field for p in problems] == ["nic"]
    data, problems = validate_redevable(
        siren=siren, nic=nic, company_name="  A   B ", periodicity="journaliere"
    )
    assert problems == [] and data is not None
    assert data.siret == siren + nic and data.company_name == "A B"


async def test_same_siret_refused_across_primary_and_secondaries_but_not_elsewhere(
    database: Database, clock: ManualClock, family: tuple[PortalAccount, PortalAccount]
) -> None:
    primary, secondary = family
    async with database.session() as session:
        await create_redevable(session, clock, secondary, valid(10, "BOULANGERIE"))
    async with database.session() as session:
        with pytest.raises(UserError) as caught:
            await create_redevable(session, clock, primary, valid(10))
    assert "même SIRET" in caught.value.message and "« agence »" in caught.value.message
    # The same SIREN with another NIC is another establishment: allowed.
    siren = make_siren(10)
    other = valid(10, nic=False)
    assert other.siret == siren
    async with database.session() as session:
        await create_redevable(session, clock, primary, other)
        # An unrelated primary account has its own portfolio.
        stranger = await create_account(
            session,
            clock,
            AccountInput(
                login="autre",
                company_name="Autre cabinet",
                siret=make_siren(99) + make_nic(make_siren(99)),
                email="autre@example.com",
            ),
            PASSWORD,
        )
        await create_redevable(session, clock, stranger, valid(10))


async def test_deactivate_reactivate_and_search(
    database: Database, clock: ManualClock, family: tuple[PortalAccount, PortalAccount]
) -> None:
    primary, secondary = family
    async with database.session() as session:
        for index, name in (
            (20, "BOULANGERIE DU PORT"),
            (21, "GARAGE CENTRAL"),
            (22, "BOULANGERIE 100% BIO"),
        ):
            await create_redevable(session, clock, primary, valid(index, name))
        await create_redevable(session, clock, secondary, valid(23, "BOULANGERIE DU SUD"))
    async with database.session() as session:
        target = await get_redevable(session, primary, make_siren(21))
        await deactivate_redevable(session, clock, target)
        with pytest.raises(UserError):
            await deactivate_redevable(session, clock, target)

    async def names(viewer: PortalAccount, **criteria: object) -> list[str]:
        async with database.session() as session:
            page = await search_redevables(session, viewer, RedevableSearch(**criteria))  # type: ignore[arg-type]
        return [r.company_name for r in page.rows]

    assert await names(primary) == ["BOULANGERIE 100% BIO", "BOULANGERIE DU PORT"]
    assert await names(primary, include_inactive=True) == [
        "BOULANGERIE 100% BIO",
        "BOULANGERIE DU PORT",
        "GARAGE CENTRAL",
    ]
    assert await names(primary, name="boulangerie", include_secondaries=True) == [
        "BOULANGERIE 100% BIO",
        "BOULANGERIE DU PORT",
        "BOULANGERIE DU SUD",
    ]
    assert await names(primary, name="100%") == ["BOULANGERIE 100% BIO"]
    assert await names(primary, siret=make_siren(20)) == ["BOULANGERIE DU PORT"]
    assert await names(secondary) == ["BOULANGERIE DU SUD"]
    with pytest.raises(UserError):
        await names(secondary, include_secondaries=True)
    async with database.session() as session:
        # A secondary never reaches its primary's redevables.
        with pytest.raises(UserError):
            await get_redevable(session, secondary, make_siren(20))
        target = await get_redevable(session, primary, make_siren(21))
        assert target.deactivated_at == clock.now()
        await reactivate_redevable(session, clock, target)
    assert "GARAGE CENTRAL" in await names(primary)


async def test_search_by_iban_and_collection_state(
    database: Database, clock: ManualClock, family: tuple[PortalAccount, PortalAccount]
) -> None:
    primary, _ = family
    now = clock.now()
    async with database.session() as session:
        rows = [
            await create_redevable(session, clock, primary, valid(30 + i, f"R{i}"))
            for i in range(3)
        ]
        states = [ConnectionState.OK, ConnectionState.ERROR, None]
        for index, (redevable, state) in enumerate(zip(rows, states, strict=True)):
            if state is None:
                continue
            connection = BankConnection(
                redevable_id=redevable.id,
                provider="testbank",
                provider_connection_id=f"c{index}",
                token_encrypted=b"x",
                state=state,
                active=True,
                created_at=now,
                updated_at=now,
            )
            session.add(connection)
            await session.flush()
            session.add(
                BankAccount(
                    redevable_id=redevable.id,
                    connection_id=connection.id,
                    provider_account_id=f"a{index}",
                    iban=f"FR76130262400193002900000{index}9",
                    activated_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )

    async def names(**criteria: object) -> list[str]:
        async with database.session() as session:
            page = await search_redevables(session, primary, RedevableSearch(**criteria))  # type: ignore[arg-type]
        return [r.company_name for r in page.rows]

    assert await names(iban="fr76 1302 6240 0193") == ["R0", "R1"]
    assert await names(iban="0000019") == ["R1"]
    assert await names(collection_state="succes") == ["R0"]
    assert await names(collection_state="erreur") == ["R1"]
    with pytest.raises(UserError):
        await names(collection_state="inconnu")

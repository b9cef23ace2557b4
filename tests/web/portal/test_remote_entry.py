"""Annexe 1 field 9 = 1 on the portal: the form and the import mail the secure "saisie" link.

Checked on the outbox rows (the portal fixture's relay is unreachable) and on the stored
link, whose hash must be the one of the token the mail carries.
"""

from __future__ import annotations

import httpx
from sqlalchemy import select

from releves_mailer.db.models import Redevable
from tests.factories import make_nic, make_siren
from tests.partner.conftest import remote_entry_mails
from tests.web.portal.conftest import PortalHarness, csrf_of


async def link_mails(portal: PortalHarness) -> list[tuple[str, str]]:
    """(recipient, company) of every queued link mail; the recipient is field 5's address."""
    async with portal.database.session() as session:
        found = []
        for row, link in await remote_entry_mails(session):
            redevable = await session.get_one(Redevable, link.redevable_id)
            assert redevable.email == row.recipient
            found.append((row.recipient, redevable.company_name))
        return found


def new_redevable(index: int, **fields: str) -> dict[str, str]:
    siren = make_siren(index)
    return {
        "siren": siren,
        "nic": make_nic(siren),
        "company_name": f"CLIENT {index}",
        "email": f"client{index}@client.example",
        "periodicity": "MENSUELLE",
        "day_month": "0",
        **fields,
    }


async def create(client: httpx.AsyncClient, fields: dict[str, str]) -> httpx.Response:
    page = await client.get("/portail/redevables/nouveau")
    assert page.status_code == 200
    return await client.post(
        "/portail/redevables/nouveau", data={**fields, "csrf": csrf_of(page.text)}
    )


async def test_form_with_field_9_mails_one_link_to_field_5(portal: PortalHarness) -> None:
    async with portal.logged_in(portal.primary.login) as client:
        created = await create(client, new_redevable(500, remote_entry="1"))
        assert created.status_code == 303, created.text
        assert created.headers["location"].endswith("?msg=cree_lien")
        shown = await client.get(created.headers["location"])
        assert "lien sécurisé de saisie des identifiants bancaires lui a été transmis" in (
            shown.text
        )
        tab = await client.get(created.headers["location"].split("?")[0] + "?onglet=jetons")
        assert "client500@client.example" in tab.text and "Jeton valide" in tab.text
    assert await link_mails(portal) == [("client500@client.example", "CLIENT 500")]


async def test_form_sends_nothing_with_the_flag_or_without_field_9(portal: PortalHarness) -> None:
    async with portal.logged_in(portal.primary.login) as client:
        flagged = await create(client, new_redevable(501, remote_entry="1", no_auto_link="1"))
        direct = await create(client, new_redevable(502))
        refused = await create(client, new_redevable(503, remote_entry="1", email=""))
    assert flagged.status_code == direct.status_code == 303
    assert flagged.headers["location"].endswith("?msg=cree")
    assert refused.status_code == 422 and "obligatoire" in refused.text
    assert await link_mails(portal) == []


async def test_edit_mails_the_link_when_field_9_is_switched_on(portal: PortalHarness) -> None:
    async with portal.logged_in(portal.primary.login) as client:
        created = await create(client, new_redevable(504))
        target = created.headers["location"].split("?")[0]
        page = await client.get(target)
        switched = await client.post(
            target,
            data={**new_redevable(504, remote_entry="1"), "csrf": csrf_of(page.text)},
        )
        assert switched.status_code == 303, switched.text
        assert switched.headers["location"].endswith("?msg=modifie_lien")
        # Saved again with field 9 still on: not news, no second link.
        again = await client.post(
            target,
            data={
                **new_redevable(504, remote_entry="1", day_month="5"),
                "csrf": csrf_of(page.text),
            },
        )
        assert again.headers["location"].endswith("?msg=modifie")
    assert await link_mails(portal) == [("client504@client.example", "CLIENT 504")]


def annexe1(*lines: tuple[int, str]) -> bytes:
    """An Annexe 1 file: one line per (index, field 9)."""
    rows = ["SIREN;NIC;Raison Sociale;Raison Sociale (Suite);Email;Périodicité;Mois;Jour;Saisie"]
    for index, remote in lines:
        siren = make_siren(index)
        rows.append(
            f"{siren};{make_nic(siren)};CLIENT {index};;client{index}@client.example;"
            f"HEBDOMADAIRE;;2;{remote}"
        )
    return ("\r\n".join(rows) + "\r\n").encode("utf-8")


async def upload(client: httpx.AsyncClient, data: bytes, **options: str) -> httpx.Response:
    page = await client.get("/portail/redevables/import")
    return await client.post(
        "/portail/redevables/import",
        data={**options, "csrf": csrf_of(page.text)},
        files={"fichier": ("redevables.csv", data, "text/csv")},
    )


async def test_import_mails_one_link_per_field_9_line(portal: PortalHarness) -> None:
    data = annexe1((510, "1"), (511, "0"), (512, "1"))
    async with portal.logged_in(portal.primary.login) as client:
        preview = await upload(client, data, verifier="1")
        assert preview.status_code == 200 and "seraient créé(s)" in preview.text
        assert await link_mails(portal) == []

        done = await upload(client, data)
        assert done.status_code == 200, done.text
        assert "3 redevable(s) ont été créé(s)" in done.text
        assert "2 lien(s) sécurisé(s) de saisie" in done.text
        expected = [
            ("client510@client.example", "CLIENT 510"),
            ("client512@client.example", "CLIENT 512"),
        ]
        assert await link_mails(portal) == expected

        # A re-import leaves field 9 as it was: nothing is sent again...
        again = await upload(client, data, maj="1")
        assert "3 mis à jour" in again.text and "lien(s)" not in again.text
        assert await link_mails(portal) == expected
        # ...unless it switches field 9 from 0 to 1.
        switched = await upload(client, annexe1((511, "1")), maj="1")
        assert "1 lien(s) sécurisé(s)" in switched.text
        assert await link_mails(portal) == [*expected, ("client511@client.example", "CLIENT 511")]


async def test_import_refusal_names_the_checkbox_not_an_option(portal: PortalHarness) -> None:
    data = annexe1((515, "0"))
    async with portal.logged_in(portal.primary.login) as client:
        assert (await upload(client, data)).status_code == 200
        refused = await upload(client, data)
    assert refused.status_code == 422
    assert "déjà présent sur le compte" in refused.text
    assert (
        "(cochez « Mettre à jour les redevables de ce compte déjà présents » pour le modifier)"
        in refused.text
    )
    assert "--update" not in refused.text


async def test_import_with_the_flag_sends_nothing(portal: PortalHarness) -> None:
    async with portal.logged_in(portal.primary.login) as client:
        done = await upload(client, annexe1((520, "1"), (521, "1")), no_auto_link="1")
        assert done.status_code == 200 and "2 redevable(s) ont été créé(s)" in done.text
    assert await link_mails(portal) == []
    async with portal.database.session() as session:
        flags = (
            await session.scalars(
                select(Redevable.no_auto_link).where(
                    Redevable.siren.in_([make_siren(520), make_siren(521)])
                )
            )
        ).all()
    assert flags == [True, True]  # stored, as the form's checkbox: later links stay manual

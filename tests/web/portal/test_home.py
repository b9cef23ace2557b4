"""The portal's home page: collection health figures, each linking to its filtered list."""

from __future__ import annotations

import re

import httpx

from tests.factories import PASSWORD
from tests.web.portal.conftest import PortalHarness, add_health_cases, csrf_of, expected_health

#: Element id on the home page -> the figure it shows.
FIGURES = {
    "connexions-erreur": "connections_in_error",
    "premiere-verification": "first_check_failures",
    "redevables-erreur": "redevables_in_error",
    "sans-connexion": "without_connection",
    "jetons-valides": "links_pending",
    "jetons-expires": "links_expired",
    "non-deposes": "undelivered",
    "nuit-rafraichies": "refreshed",
    "nuit-echecs": "failed",
    "nuit-non-verifiees": "not_checked",
}


def figure(html: str, element_id: str) -> int:
    """The number shown by the element of that id (its own text or its ``.chiffre`` span)."""
    found = re.search(rf'id="{element_id}"[^>]*>(?:<span class="chiffre">)?(\d+)<', html)
    assert found is not None, f"no figure #{element_id} on the page"
    return int(found.group(1))


def link(html: str, element_id: str) -> str:
    found = re.search(rf'<a id="{element_id}" href="([^"]+)"', html)
    assert found is not None, f"no link #{element_id}"
    return found.group(1).replace("&amp;", "&")


async def total_of(client: httpx.AsyncClient, url: str) -> int:
    page = await client.get(url)
    assert page.status_code == 200, page.text
    found = re.search(r'<span id="total">(\d+)</span>', page.text)
    assert found is not None
    return int(found.group(1))


async def test_login_lands_on_the_home_page_and_its_figures_match_the_database(
    portal: PortalHarness,
) -> None:
    await add_health_cases(portal)
    family = {portal.primary.account_id, portal.secondary.account_id}
    expected = await expected_health(portal, family)
    # The case data covers every figure with something to count.
    assert expected["connections_in_error"] == 2 and expected["first_check_failures"] == 1
    assert expected["links_pending"] == 1 and expected["links_expired"] == 1
    assert expected["undelivered"] == 3 and expected["without_connection"] == 2
    async with portal.client() as client:
        page = await client.get("/portail/connexion")
        response = await client.post(
            "/portail/connexion",
            data={
                "login": "cabinet",
                "password": PASSWORD,
                "csrf": csrf_of(page.text),
            },
        )
        assert response.headers["location"] == "/portail/"
        home = await client.get("/portail/")
        assert home.status_code == 200
        html = home.text
        shown = {name: figure(html, element_id) for element_id, name in FIGURES.items()}
        assert shown == {name: expected[name] for name in FIGURES.values()}
        # The manual's error texts, one row per error code.
        assert "L&#39;authentification au site de la banque a échoué" in html
        assert "Un processus d&#39;authentification forte est nécessaire" in html
        assert "Collecte de la nuit du 10/03/2026" in html


async def test_each_figure_leads_to_a_list_with_as_many_rows(portal: PortalHarness) -> None:
    await add_health_cases(portal)
    expected = await expected_health(
        portal, {portal.primary.account_id, portal.secondary.account_id}
    )
    async with portal.logged_in("cabinet") as client:
        html = (await client.get("/portail/")).text
        for element_id, name in (
            ("redevables-erreur", "redevables_in_error"),
            ("sans-connexion", "without_connection"),
            ("jetons-valides", "links_pending"),
            ("jetons-expires", "links_expired"),
            ("non-deposes", "undelivered"),
        ):
            assert await total_of(client, link(html, element_id)) == expected[name], element_id
        # Bank accounts in error, and the connection that failed its first check (no account
        # yet) listed with its error.
        accounts = await client.get(link(html, "connexions-erreur"))
        assert "MAUVAIS MOT DE PASSE" in accounts.text
        assert 'id="connexions-seules"' in accounts.text
        bare = accounts.text.split('id="connexions-seules"', 1)[1]
        assert "PREMIERE VERIFICATION" in bare and "Banque jamais vue" in bare
        assert "Un processus d&#39;authentification forte est nécessaire" in bare


async def test_a_secondary_account_sees_its_own_figures(portal: PortalHarness) -> None:
    await add_health_cases(portal)
    expected = await expected_health(portal, {portal.secondary.account_id})
    async with portal.logged_in("agence") as client:
        html = (await client.get("/portail/")).text
    assert figure(html, "sans-connexion") == expected["without_connection"] == 1
    assert figure(html, "jetons-valides") == expected["links_pending"] == 1
    assert figure(html, "connexions-erreur") == expected["connections_in_error"] == 0
    assert "secondaires=1" not in html

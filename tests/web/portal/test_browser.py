"""End-to-end tests of the portal in headless Chromium (Debian's ``chromium``, Playwright).

Skipped, with the reason, when ``/usr/bin/chromium`` or the ``playwright`` package is absent;
``.ci/run`` installs both. No browser is downloaded: Playwright drives the system Chromium.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from releves_mailer.db.models import PortalAccount, ReceptionMode, Redevable
from tests.factories import PASSWORD, make_nic, make_siren
from tests.web.portal.conftest import (
    PortalHarness,
    add_health_cases,
    cfonb_bytes,
    expected_health,
    make_account,
)
from tests.web.portal.test_home import FIGURES

CHROMIUM = Path("/usr/bin/chromium")
playwright_api = pytest.importorskip(
    "playwright.async_api",
    reason="the playwright package is not installed (pip install playwright)",
)
pytestmark = [
    pytest.mark.once,
    pytest.mark.skipif(
        not CHROMIUM.exists() and shutil.which("chromium") is None,
        reason="Chromium is not installed (apt-get install chromium)",
    ),
]

LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser_page(tmp_path: Path) -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=LAUNCH_ARGS,
            accept_downloads=True,
            viewport={"width": 390, "height": 844},  # a phone
        )
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            page.set_default_timeout(60_000)
            yield page
        finally:
            await context.close()


async def read_bytes(path: Path) -> bytes:
    return await asyncio.to_thread(Path(path).read_bytes)


async def login(page: Any, base: str, login: str) -> None:
    await page.goto(f"{base}/portail/connexion")
    await page.fill("#login", login)
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")


async def test_subscribe_import_create_search_download(
    portal: PortalHarness, browser_page: Any, tmp_path: Path
) -> None:
    page = browser_page
    base = portal.base_url
    new = await make_account(portal.database, portal.clock, "nouveau", 4)
    async with portal.database.session() as session:
        stored = await session.get(PortalAccount, new.account_id)
        assert stored is not None
        stored.subscribed = False
        stored.terms_accepted_at = None

    # Log in: an account not yet subscribed lands on the subscription page.
    await login(page, base, "nouveau")
    await page.wait_for_url("**/portail/souscription")
    assert await page.is_disabled("input[name=edi]")
    assert "releves.nouveau@releves.example" in await page.content()
    await page.check("input[name=reception][value=dedicated]")
    await page.click("text=Souscrire au service")
    assert "J'accepte" in await page.content()
    assert "vous devez accepter" in (await page.content()).lower()
    await page.check("input[name=cgau]")
    await page.check("input[name=reception][value=dedicated]")
    await page.click("text=Souscrire au service")
    await page.wait_for_selector("text=Votre souscription au service est enregistrée")
    async with portal.database.session() as session:
        stored = await session.get(PortalAccount, new.account_id)
        assert stored is not None
        assert stored.subscribed and stored.reception_mode is ReceptionMode.DEDICATED
        assert stored.terms_accepted_at == portal.clock.now()

    # Import a file with errors: the per-line report is shown, nothing is created.
    good = make_siren(41)
    bad_file = tmp_path / "import.csv"
    bad_file.write_text(
        "SIREN;NIC;Raison Sociale;Suite;Email;Périodicité;Mois;Jour;Déporté\n"
        f"{good};;BONNE LIGNE;;a@example.com;MENSUELLE;;0;1\n"
        "123456789;;MAUVAIS SIREN;;;MENSUELLE;;5;0\n"
        f"{make_siren(42)};;JOUR FAUX;;;HEBDOMADAIRE;;9;0\n",
        encoding="utf-8",
    )
    await page.goto(f"{base}/portail/redevables/import")
    await page.set_input_files("#fichier", str(bad_file))
    await page.click("button:has-text('Importer')")
    await page.wait_for_selector("#erreurs")
    report = await page.inner_text("#erreurs")
    assert "123456789" in report and "SIREN" in report
    assert "9" in report and "Jour" in report
    lines = await page.locator("#erreurs tbody tr").all_inner_texts()
    assert [row.split("\t")[0] for row in lines] == ["3", "4"]
    assert "rien n'a été importé" in await page.inner_text("#rapport")
    good_file = tmp_path / "ok.csv"
    good_file.write_text(f"{good};;BONNE LIGNE;;a@example.com;MENSUELLE;;0;1\n")
    await page.set_input_files("#fichier", str(good_file))
    await page.click("button:has-text('Importer')")
    await page.wait_for_selector("text=1 redevable(s) ont été créé(s)")

    # Create a redevable: the periodicity form shows the fields that fit.
    await page.goto(f"{base}/portail/redevables/nouveau")
    siren = make_siren(43)
    await page.fill("#siren", siren)
    await page.fill("#nic", make_nic(siren))
    await page.fill("#company_name", "CREEE AU NAVIGATEUR")
    await page.fill("#email", "creee@example.com")
    await page.select_option("#periodicite", "HEBDOMADAIRE")
    assert await page.is_visible("#day_week") and not await page.is_visible("#day_month")
    await page.select_option("#periodicite", "TRIMESTRIELLE")
    assert await page.is_visible("#month_q") and await page.is_visible("#day_month")
    assert not await page.is_visible("#day_week")
    await page.select_option("#day_month", label="Fin du mois")
    await page.select_option("#month_q", "2")
    await page.click("button:has-text('Enregistrer')")
    await page.wait_for_selector("text=Le redevable a été créé")
    async with portal.database.session() as session:
        created = await session.scalar(select(Redevable).where(Redevable.siren == siren))
        assert created is not None and (created.month, created.day) == (2, 0)

    # Search.
    await page.goto(f"{base}/portail/redevables")
    await page.fill("#nom", "navigateur")
    await page.click("button:has-text('Rechercher')")
    await page.wait_for_url("**nom=navigateur**")
    assert await page.inner_text("#total") == "1"
    assert "CREEE AU NAVIGATEUR" in await page.inner_text("#redevables")


async def test_downloads_and_bank_account_detail(portal: PortalHarness, browser_page: Any) -> None:
    page = browser_page
    base = portal.base_url
    await login(page, base, "cabinet")
    await page.wait_for_url("**/portail/")
    await page.goto(f"{base}/portail/releves")
    assert await page.inner_text("#total") == "3"
    first = portal.primary.statement_ids[0]
    async with page.expect_download() as info:
        await page.click(f"tr[data-id='{first}'] a.cfonb")
    download = await info.value
    assert download.suggested_filename.endswith(".cfonb")
    assert await read_bytes(await download.path()) == cfonb_bytes(first)

    for statement_id in portal.primary.statement_ids:
        await page.check(f"input[name=ids][value='{statement_id}']")
    async with page.expect_download() as info:
        await page.click("text=Télécharger la sélection (ZIP)")
    archive = await read_bytes(await (await info.value).path())
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        cfonb = sorted(name for name in zipped.namelist() if name.endswith(".cfonb"))
        assert len(cfonb) == 3
        contents = sorted(zipped.read(name) for name in cfonb)
        assert contents == sorted(cfonb_bytes(i) for i in portal.primary.statement_ids)
        assert any(name.startswith("Transactions_supprimees_") for name in zipped.namelist())

    # Bank account detail, then deactivation with a confirmation.
    await page.goto(f"{base}/portail/comptes")
    await page.click("#comptes >> text=Consulter")
    await page.wait_for_selector("#details")
    details = await page.inner_text("#details")
    assert "Connecteur de test" in details and "FR76300040000" in details
    assert "BNPAFRPP" in details and "EUR" in details
    history = await page.inner_text("#historique")
    assert "Ancienne valeur=FRXX0000" in history
    assert len(await page.locator("#derniers tbody tr").all()) == 3
    await page.click("text=Désactiver ce compte")
    await page.wait_for_selector("text=Voulez-vous vraiment désactiver")
    await page.click("text=Confirmer la désactivation")
    await page.wait_for_selector(
        "text=La réception des relevés sur ce compte bancaire est désactivée"
    )
    assert "Date de désactivation" in await page.inner_text("#details")


async def test_home_page_figures_match_the_database(
    portal: PortalHarness, browser_page: Any
) -> None:
    page = browser_page
    base = portal.base_url
    await add_health_cases(portal)
    expected = await expected_health(
        portal, {portal.primary.account_id, portal.secondary.account_id}
    )
    await login(page, base, "cabinet")
    await page.wait_for_url("**/portail/")
    assert await page.inner_text("h1") == "Accueil"
    for element_id, name in FIGURES.items():
        link = await page.query_selector(f"a#{element_id}")
        selector = f"#{element_id} .chiffre" if link is not None else f"#{element_id}"
        assert int(await page.inner_text(selector)) == expected[name], element_id
    errors = await page.inner_text("#erreurs")
    assert "L'authentification au site de la banque a échoué" in errors
    assert "authentification forte est nécessaire" in errors
    # A figure leads to its list, with as many rows.
    await page.click("#sans-connexion")
    await page.wait_for_url("**etat=aucune**")
    assert int(await page.inner_text("#total")) == expected["without_connection"]
    await page.go_back()
    await page.click("#connexions-erreur")
    await page.wait_for_url("**connexion=erreur**")
    bare = await page.inner_text("#connexions-seules")
    assert "PREMIERE VERIFICATION" in bare and "authentification forte" in bare

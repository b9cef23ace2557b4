"""The portal's EDI screens over real HTTP (httpx) and in headless Chromium (Playwright):
upload of several files, "Remonter mes redevables EDI" through the waiting page, the
subscription option."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from releves_mailer.clock import ManualClock
from releves_mailer.config import HttpSection
from releves_mailer.db import Database
from releves_mailer.db.models import EdiAutoDiscovery, Redevable
from releves_mailer.edi.discover import analysis_lock
from releves_mailer.partner.mails import PartnerSettings
from releves_mailer.render import Renderer
from releves_mailer.services import Services
from releves_mailer.services.edi import AnalysisJobs, EdiService
from releves_mailer.web.app import create_app
from releves_mailer.web.portal import setup_portal
from releves_mailer.web.portal.edi import setup as setup_edi
from releves_mailer.web.server import HttpServer
from tests.edi.interchanges import Decl, company, interchange
from tests.factories import PASSWORD, add_subscribed_account
from tests.waiting import polls
from tests.web.portal.conftest import csrf_of, log_in

CHROMIUM = Path("/usr/bin/chromium")


@dataclass
class Harness:
    base_url: str
    account_id: int
    secondary_id: int
    service: EdiService


@pytest.fixture
async def edi_portal(database: Database, clock: ManualClock) -> AsyncIterator[Harness]:
    account_id = await add_subscribed_account(database, clock, "cabinet", 1)
    secondary_id = await add_subscribed_account(database, clock, "agence", 2, "cabinet")
    settings = PartnerSettings(
        public_url="http://127.0.0.1:1",
        portal_name="Portail Relevés",
        domain="releves.example",
        support_phone="04 77 81 04 69",
    )
    service = EdiService(database, clock)
    jobs = AnalysisJobs(service, retry_every=0.05)
    app = create_app(
        renderer=Renderer(),
        settings=settings,
        setups=[
            functools.partial(
                setup_portal, services=Services(database, clock, None), settings=settings
            ),
            functools.partial(setup_edi, service=service, jobs=jobs),
        ],
    )
    server = HttpServer(HttpSection(listen="127.0.0.1", port=0), app)
    await server.start()
    try:
        yield Harness(f"http://127.0.0.1:{server.port}", account_id, secondary_id, service)
    finally:
        await server.stop()
        await jobs.close()


def _files() -> tuple[bytes, bytes, list[str]]:
    sirens = [company(index)[0] for index in range(3)]
    good = interchange(
        [
            Decl(siren=sirens[0], name="ALPHA", procedure="TDFC", deposited_on=dt.date(2026, 2, 1)),
            Decl(siren=sirens[1], name="BETA", procedure="OGA", deposited_on=dt.date(2026, 2, 2)),
        ]
    )
    other = interchange(
        [Decl(siren=sirens[2], name="GAMMA", procedure="PART", deposited_on=dt.date(2026, 3, 1))],
        reference="E2",
    )
    return good, other, sirens


@contextlib.asynccontextmanager
async def _client(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=harness.base_url, timeout=30) as client:
        await log_in(client, "cabinet", PASSWORD)
        yield client


async def _wait_report(client: httpx.AsyncClient, location: str) -> httpx.Response:
    async for _ in polls("the analysis did not finish", every=0.05):
        page = await client.get(location)
        if 'id="attente"' not in page.text:
            break
        assert page.headers["Refresh"] == "2"
        assert "L'analyse de vos dépôts EDI pour la création automatique" in page.text
    return page


async def test_upload_then_analysis_through_the_waiting_page(
    database: Database, edi_portal: Harness
) -> None:
    good, other, sirens = _files()
    bad = good.replace(b"UNZ+2+", b"UNZ+5+")
    async with _client(edi_portal) as client:
        page = await client.get("/portail/edi")
        assert "Remonter mes redevables EDI" in page.text
        assert "la première portera sur les dépôts des 18 derniers mois" in page.text
        response = await client.post(
            "/portail/edi/depots",
            data={"csrf": csrf_of(page.text)},
            files=[
                ("fichiers", ("a.edi", good, "application/octet-stream")),
                ("fichiers", ("b.edi", other, "application/octet-stream")),
                ("fichiers", ("tronque.edi", bad, "application/octet-stream")),
            ],
        )
        assert response.status_code == 422
        assert "Enregistré : 2 déclaration(s)" in response.text
        assert "tronque.edi : segment n° 18 : UNZ annonce 5 message(s)" in response.text
        assert (await edi_portal.service.overview(edi_portal.account_id)).deposits == 2

        # Another analysis of the account runs (its lock is held): the one started from the
        # portal waits for it behind the manual's waiting page, then runs.
        lock = analysis_lock(database, edi_portal.service.clock, edi_portal.account_id)
        await lock.__aenter__()
        try:
            started = await client.post(
                "/portail/edi/analyse", data={"csrf": csrf_of(page.text)}, follow_redirects=False
            )
            assert started.status_code == 303
            waiting = await client.get(started.headers["Location"])
            assert waiting.status_code == 200 and waiting.headers["Refresh"] == "2"
            assert (
                "L'analyse de vos dépôts EDI pour la création automatique de vos redevables est "
                "en cours... Cela peut prendre quelques minutes. Merci de patienter."
            ) in waiting.text
            # Clicking again while it waits joins the same job.
            again = await client.post(
                "/portail/edi/analyse", data={"csrf": csrf_of(page.text)}, follow_redirects=False
            )
            assert again.headers["Location"] == started.headers["Location"]
        finally:
            await lock.__aexit__(None, None, None)
        report = await _wait_report(client, started.headers["Location"])
        assert report.status_code == 200
        assert "3 redevable(s) créé(s), 0 déjà présent(s), 0 refusé(s)" in report.text
        for siren in sirens:
            assert siren in report.text

        # A second analysis: nothing deposited since the first.
        started = await client.post(
            "/portail/edi/analyse", data={"csrf": csrf_of(page.text)}, follow_redirects=False
        )
        report = await _wait_report(client, started.headers["Location"])
        assert report.status_code == 200
        assert "0 redevable(s) créé(s)" in report.text
        assert "Retour au paramétrage" in report.text
    async with database.session() as session:
        made = set(await session.scalars(select(Redevable.siren)))
    assert made == set(sirens)


async def test_other_accounts_cannot_read_a_job_and_option_is_saved(
    database: Database, clock: ManualClock, edi_portal: Harness
) -> None:
    async with _client(edi_portal) as client:
        page = await client.get("/portail/edi")
        started = await client.post(
            "/portail/edi/analyse", data={"csrf": csrf_of(page.text)}, follow_redirects=False
        )
        location = started.headers["Location"]
        await _wait_report(client, location)
        async with httpx.AsyncClient(base_url=edi_portal.base_url, timeout=30) as other:
            await log_in(other, "agence", PASSWORD)
            stolen = await other.get(location)
            assert stolen.status_code == 409 and "Analyse inconnue ou expirée." in stolen.text

        form = await client.get("/portail/souscription")
        assert 'name="edi" value="1">' in form.text  # enabled, not checked
        saved = await client.post(
            "/portail/souscription",
            data={"csrf": csrf_of(form.text), "cgau": "1", "reception": "default", "edi": "1"},
            follow_redirects=False,
        )
        assert saved.status_code == 303
        assert 'name="edi" value="1" checked' in (await client.get("/portail/souscription")).text
    async with database.session() as session:
        assert await session.get(EdiAutoDiscovery, edi_portal.account_id) is not None
    # The daemon's pass analyses the accounts with the option, once a day.
    assert await edi_portal.service.due_auto_discoveries() == []  # analysed just now
    clock.advance(dt.timedelta(hours=24))
    assert await edi_portal.service.due_auto_discoveries() == [edi_portal.account_id]
    assert await edi_portal.service.run_auto_discoveries() == 1
    assert await edi_portal.service.due_auto_discoveries() == []


@pytest.mark.once
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed")
async def test_in_chromium(database: Database, edi_portal: Harness, tmp_path: Path) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    from tests.web.portal.test_browser import LAUNCH_ARGS

    good, other, _ = _files()
    (tmp_path / "a.edi").write_bytes(good)
    (tmp_path / "b.edi").write_bytes(other)
    async with playwright_api.async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=LAUNCH_ARGS,
        )
        try:
            page: Any = context.pages[0] if context.pages else await context.new_page()
            page.set_default_timeout(60_000)
            base = edi_portal.base_url
            await page.goto(f"{base}/portail/connexion")
            await page.fill("#login", "cabinet")
            await page.fill("#password", PASSWORD)
            await page.click("button[type=submit]")
            # Logged in, the portal opens on its home page; Paramétrage holds the button.
            await page.wait_for_url("**/portail/")
            await page.goto(f"{base}/portail/redevables")
            await page.click("text=Remonter mes redevables EDI")
            await page.wait_for_url("**/portail/edi")
            await page.set_input_files(
                "#fichiers", [str(tmp_path / "a.edi"), str(tmp_path / "b.edi")]
            )
            await page.click("button:has-text('Enregistrer les dépôts')")
            await page.wait_for_selector("#depots")
            assert await page.locator("#depots tbody tr").count() == 2
            # Another analysis holds the account: the manual's waiting page shows, and the
            # browser reloads it by itself (HTTP Refresh) until the report comes.
            lock = analysis_lock(database, edi_portal.service.clock, edi_portal.account_id)
            await lock.__aenter__()
            try:
                await page.click("#remonter")
                await page.wait_for_selector("#attente")
                assert "Merci de patienter" in await page.inner_text("#attente")
            finally:
                await lock.__aexit__(None, None, None)
            await page.wait_for_selector("#rapport")
            text = await page.inner_text("#rapport")
            assert "3 redevable(s) créé(s)" in text
            assert await page.locator("#crees tbody tr").count() == 3
            await page.click("a.bouton:has-text('Retour au paramétrage')")
            await page.wait_for_url("**/portail/redevables")
            for name in ("ALPHA", "BETA", "GAMMA"):
                assert name in await page.inner_text("#redevables")
        finally:
            await context.close()

"""Mon compte: a primary account manages its secondaries; every account changes its password.

Over HTTP against the portal, with the real IMAP server on the same database: a new password
opens the boxes at once and the old one no longer does.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aioimaplib
import pytest
from sqlalchemy import select

from releves_mailer.clock import ManualClock
from releves_mailer.db import Database
from releves_mailer.db.models import PortalAccount, PortalSession
from tests.factories import PASSWORD, make_nic, make_siren
from tests.mailservers import mail_servers
from tests.web.portal.conftest import PortalHarness, csrf_of, log_in, open_portal

NEW_PASSWORD = "un tout nouveau secret"


@pytest.fixture
async def small_portal(
    database: Database, clock: ManualClock, tmp_path: Path
) -> AsyncIterator[PortalHarness]:
    """The portal where a primary account may open 2 secondaries (``agence`` is one)."""
    async with open_portal(database, clock, tmp_path, max_secondaries=2) as harness:
        yield harness


async def imap_login(port: int, login: str, password: str) -> str:
    client = aioimaplib.IMAP4(host="127.0.0.1", port=port, timeout=30)
    await client.wait_hello_from_server()
    try:
        return (await client.login(login, password)).result
    finally:
        await client.logout()


def secondary_form(login: str, index: int, password: str = NEW_PASSWORD) -> dict[str, str]:
    siren = make_siren(index)
    return {
        "login": login,
        "company_name": f"Agence {login}",
        "siret": siren + make_nic(siren),
        "email": f"{login}@cabinet.example",
        "mot_de_passe": password,
        "confirmation": password,
    }


async def stored(database: Database, login: str) -> PortalAccount | None:
    async with database.session() as session:
        return await session.scalar(select(PortalAccount).where(PortalAccount.login == login))


async def test_primary_creates_secondaries_up_to_the_allowed_number(
    small_portal: PortalHarness,
) -> None:
    portal = small_portal
    async with portal.logged_in("cabinet") as client:
        page = await client.get("/portail/mon-compte")
        assert page.status_code == 200
        quota = re.sub(r"<[^>]+>", "", page.text.split('id="quota">', 1)[1].split("</p>", 1)[0])
        assert "Vous avez souscrit à 2 compte(s) secondaire(s)" in quota
        assert "1 compte(s) ouvert(s)" in quota and "Il vous reste 1 compte(s)" in quota
        token = csrf_of(page.text)
        created = await client.post(
            "/portail/mon-compte/secondaires",
            data={"csrf": token, **secondary_form("agence-nord", 60)},
        )
        assert created.status_code == 303
        account = await stored(portal.database, "agence-nord")
        assert account is not None and account.parent_id == portal.primary.account_id
        assert account.active and not account.subscribed  # accepts the CGAU at first login
        # The quota is reached: a third one is refused with the reason, nothing written.
        refused = await client.post(
            "/portail/mon-compte/secondaires",
            data={"csrf": token, **secondary_form("agence-sud", 61)},
        )
        assert refused.status_code == 422
        assert "déjà 2 compte(s) secondaire(s) ouvert(s)" in refused.text
        assert await stored(portal.database, "agence-sud") is None
        page = await client.get("/portail/mon-compte")
        assert "Il vous reste <strong>0</strong>" in page.text
        assert 'id="nouveau-secondaire"' not in page.text
    # The new secondary logs in with the password its primary chose.
    async with portal.logged_in("agence-nord", NEW_PASSWORD) as client:
        assert (await client.get("/portail/redevables")).status_code == 302  # CGAU first


async def test_a_secondary_cannot_manage_accounts(portal: PortalHarness) -> None:
    async with portal.logged_in("agence") as client:
        page = await client.get("/portail/mon-compte")
        assert page.status_code == 200 and 'id="secondaires"' not in page.text
        token = csrf_of(page.text)
        refused = await client.post(
            "/portail/mon-compte/secondaires",
            data={"csrf": token, **secondary_form("sous-agence", 62)},
        )
        assert refused.status_code == 422
        assert await stored(portal.database, "sous-agence") is None
        other = portal.other.account_id
        answer = await client.post(
            f"/portail/mon-compte/secondaires/{other}/desactiver", data={"csrf": token}
        )
        assert answer.status_code == 404
    async with portal.logged_in("autre") as client:
        page = await client.get("/portail/mon-compte")
        # Another family's secondary is unknown here.
        answer = await client.post(
            f"/portail/mon-compte/secondaires/{portal.secondary.account_id}/desactiver",
            data={"csrf": csrf_of(page.text)},
        )
        assert answer.status_code == 404
    account = await stored(portal.database, "agence")
    assert account is not None and account.active


async def test_deactivation_asks_for_confirmation_then_locks_every_door(
    portal: PortalHarness, database: Database, clock: ManualClock, tmp_path: Path
) -> None:
    secondary = portal.secondary.account_id
    async with mail_servers(database, clock, tmp_path) as mail:
        assert await imap_login(mail.imap_port, "agence", PASSWORD) == "OK"
        async with portal.logged_in("agence") as victim, portal.logged_in("cabinet") as client:
            assert (await victim.get("/portail/redevables")).status_code == 200
            confirm = await client.get(f"/portail/mon-compte/secondaires/{secondary}/desactiver")
            assert "Voulez-vous vraiment désactiver le compte secondaire « agence »" in (
                confirm.text
            )
            done = await client.post(
                f"/portail/mon-compte/secondaires/{secondary}/desactiver",
                data={"csrf": csrf_of(confirm.text)},
            )
            assert done.status_code == 303
            # Its open session ended; it logs in nowhere.
            assert (await victim.get("/portail/redevables")).status_code == 302
            assert await imap_login(mail.imap_port, "agence", PASSWORD) == "NO"
            page = await client.get("/portail/connexion")
            async with portal.client() as again:
                login_page = await again.get("/portail/connexion")
                refused = await again.post(
                    "/portail/connexion",
                    data={
                        "login": "agence",
                        "password": PASSWORD,
                        "csrf": csrf_of(login_page.text),
                    },
                )
                assert refused.status_code == 401
            page = await client.get("/portail/mon-compte")
            assert "Désactivé" in page.text
            back = await client.post(
                f"/portail/mon-compte/secondaires/{secondary}/reactiver",
                data={"csrf": csrf_of(page.text)},
            )
            assert back.status_code == 303
        assert await imap_login(mail.imap_port, "agence", PASSWORD) == "OK"


async def test_primary_sets_a_secondary_password(
    portal: PortalHarness, database: Database, clock: ManualClock, tmp_path: Path
) -> None:
    secondary = portal.secondary.account_id
    async with mail_servers(database, clock, tmp_path) as mail:
        async with portal.logged_in("agence") as victim, portal.logged_in("cabinet") as client:
            page = await client.get("/portail/mon-compte")
            token = csrf_of(page.text)
            mismatch = await client.post(
                f"/portail/mon-compte/secondaires/{secondary}/mot-de-passe",
                data={"csrf": token, "mot_de_passe": NEW_PASSWORD, "confirmation": "autre chose!"},
            )
            assert mismatch.status_code == 422 and "diffèrent" in mismatch.text
            short = await client.post(
                f"/portail/mon-compte/secondaires/{secondary}/mot-de-passe",
                data={"csrf": token, "mot_de_passe": "court", "confirmation": "court"},
            )
            assert short.status_code == 422 and "trop court" in short.text
            done = await client.post(
                f"/portail/mon-compte/secondaires/{secondary}/mot-de-passe",
                data={"csrf": token, "mot_de_passe": NEW_PASSWORD, "confirmation": NEW_PASSWORD},
            )
            assert done.status_code == 303
            assert (await victim.get("/portail/redevables")).status_code == 302
        assert await imap_login(mail.imap_port, "agence", PASSWORD) == "NO"
        assert (
            await imap_login(mail.imap_port, "releves.agence@releves.example", NEW_PASSWORD) == "OK"
        )


async def test_every_account_changes_its_own_password(
    portal: PortalHarness, database: Database, clock: ManualClock, tmp_path: Path
) -> None:
    async with mail_servers(database, clock, tmp_path) as mail:
        async with (
            portal.logged_in("agence") as other_browser,
            portal.logged_in("agence") as client,
        ):
            page = await client.get("/portail/mon-compte")
            token = csrf_of(page.text)
            wrong = await client.post(
                "/portail/mon-compte/mot-de-passe",
                data={
                    "csrf": token,
                    "ancien": "pas le bon mot de passe",
                    "nouveau": NEW_PASSWORD,
                    "confirmation": NEW_PASSWORD,
                },
            )
            assert wrong.status_code == 422
            assert "L&#39;ancien mot de passe est incorrect" in wrong.text
            assert await imap_login(mail.imap_port, "agence", PASSWORD) == "OK"
            done = await client.post(
                "/portail/mon-compte/mot-de-passe",
                data={
                    "csrf": token,
                    "ancien": PASSWORD,
                    "nouveau": NEW_PASSWORD,
                    "confirmation": NEW_PASSWORD,
                },
            )
            assert done.status_code == 303
            shown = await client.get(done.headers["location"])
            assert "Votre mot de passe a été changé" in shown.text
            # This session goes on; the account's other session ended.
            assert (await client.get("/portail/redevables")).status_code == 200
            assert (await other_browser.get("/portail/redevables")).status_code == 302
        async with database.session() as session:
            sessions = (
                await session.scalars(
                    select(PortalSession).where(
                        PortalSession.account_id == portal.secondary.account_id
                    )
                )
            ).all()
        assert len(sessions) == 1
        # The mail protocols take the new password at once, and only it.
        assert await imap_login(mail.imap_port, "agence", PASSWORD) == "NO"
        assert await imap_login(mail.imap_port, "agence", NEW_PASSWORD) == "OK"
    async with portal.client() as client:
        await log_in(client, "agence", NEW_PASSWORD)

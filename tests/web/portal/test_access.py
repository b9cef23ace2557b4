"""Access control and CSRF of the portal, through a real HTTP client against the server."""

from __future__ import annotations

import datetime as dt
import io
import zipfile

from sqlalchemy import select

from releves_mailer.db.models import PortalSession, Redevable
from tests.factories import PASSWORD
from tests.web.portal.conftest import PortalHarness, cfonb_bytes, csrf_of


async def test_pages_need_a_login(portal: PortalHarness) -> None:
    async with portal.client() as client:
        for url in ("/portail/redevables", "/portail/releves", "/portail/comptes", "/portail/"):
            response = await client.get(url)
            assert response.status_code == 302
            assert response.headers["location"].startswith("/portail/connexion?suite=")
        statement = portal.primary.statement_ids[0]
        assert (await client.get(f"/portail/releves/{statement}/cfonb")).status_code == 302
        assert (await client.post("/portail/releves/zip", data={"ids": "1"})).status_code == 403


async def test_login_sets_a_protected_cookie_and_logout_ends_the_session(
    portal: PortalHarness,
) -> None:
    async with portal.client() as client:
        page = await client.get("/portail/connexion")
        response = await client.post(
            "/portail/connexion",
            data={"login": "cabinet", "password": PASSWORD, "csrf": csrf_of(page.text)},
        )
        assert response.status_code == 302
        cookie = response.headers["set-cookie"]
        assert "releves_session=" in cookie
        assert "HttpOnly" in cookie
        assert "SameSite=Lax" in cookie
        assert "Path=/portail" in cookie
        assert "Secure" not in cookie  # http public URL here
        value = client.cookies["releves_session"]
        async with portal.database.session() as session:
            stored = (await session.scalars(select(PortalSession))).all()
        assert len(stored) == 1 and value not in stored[0].id  # only a hash is stored
        page = await client.get("/portail/redevables")
        assert page.status_code == 200
        logout = await client.post("/portail/deconnexion", data={"csrf": csrf_of(page.text)})
        assert logout.status_code == 302
    async with portal.client() as replay:
        replay.cookies.set("releves_session", value, domain="127.0.0.1", path="/portail")
        assert (await replay.get("/portail/redevables")).status_code == 302


async def test_wrong_password_and_throttle(portal: PortalHarness) -> None:
    async with portal.client() as client:
        page = await client.get("/portail/connexion")
        token = csrf_of(page.text)
        for password in ("wrong-password-1", "", "x" * 20):
            response = await client.post(
                "/portail/connexion", data={"login": "cabinet", "password": password, "csrf": token}
            )
            assert response.status_code == 401
            assert "Identifiant ou mot de passe incorrect" in response.text
        unknown = await client.post(
            "/portail/connexion", data={"login": "personne", "password": PASSWORD, "csrf": token}
        )
        assert unknown.status_code == 401
        for _ in range(2):
            await client.post(
                "/portail/connexion", data={"login": "cabinet", "password": "bad", "csrf": token}
            )
        blocked = await client.post(
            "/portail/connexion", data={"login": "cabinet", "password": PASSWORD, "csrf": token}
        )
        assert blocked.status_code == 429
        assert "Trop de tentatives" in blocked.text
        portal.clock.advance(dt.timedelta(minutes=16))
        allowed = await client.post(
            "/portail/connexion", data={"login": "cabinet", "password": PASSWORD, "csrf": token}
        )
        assert allowed.status_code == 302


async def test_login_form_needs_its_csrf_token(portal: PortalHarness) -> None:
    async with portal.client() as client:
        await client.get("/portail/connexion")
        response = await client.post(
            "/portail/connexion", data={"login": "cabinet", "password": PASSWORD, "csrf": "forged"}
        )
        assert response.status_code == 403
    async with portal.client() as fresh:  # no cookie at all
        response = await fresh.post(
            "/portail/connexion", data={"login": "cabinet", "password": PASSWORD}
        )
        assert response.status_code == 403


async def test_idle_session_expires(portal: PortalHarness) -> None:
    async with portal.logged_in("cabinet") as client:
        assert (await client.get("/portail/releves")).status_code == 200
        portal.clock.advance(dt.timedelta(minutes=29))
        assert (await client.get("/portail/releves")).status_code == 200
        portal.clock.advance(dt.timedelta(minutes=31))
        assert (await client.get("/portail/releves")).status_code == 302


async def test_secondary_cannot_reach_primary_or_foreign_objects(portal: PortalHarness) -> None:
    async with portal.logged_in("agence") as client:
        for owner in (portal.primary, portal.other):
            statement = owner.statement_ids[0]
            for url in (
                f"/portail/releves/{statement}",
                f"/portail/releves/{statement}/cfonb",
                f"/portail/releves/{statement}/csv",
                f"/portail/redevables/{owner.redevable_ids[0]}",
                f"/portail/comptes/{owner.bank_account_ids[0]}",
                f"/portail/comptes/{owner.bank_account_ids[0]}/desactiver",
            ):
                response = await client.get(url)
                assert response.status_code == 404, url
                assert "SOCIETE" not in response.text
        page = await client.get("/portail/releves")
        token = csrf_of(page.text)
        mixed = [portal.secondary.statement_ids[0], portal.primary.statement_ids[0]]
        response = await client.post(
            "/portail/releves/zip", data={"csrf": token, "ids": [str(i) for i in mixed]}
        )
        assert response.status_code == 404
        # Changing an object outside the scope is refused the same way, and changes nothing.
        target = portal.primary.redevable_ids[0]
        response = await client.post(
            f"/portail/redevables/{target}/desactiver", data={"csrf": token}
        )
        assert response.status_code == 404
        async with portal.database.session() as session:
            redevable = await session.get(Redevable, target)
            assert redevable is not None and redevable.active
        # Its own statement is fine.
        own = portal.secondary.statement_ids[0]
        response = await client.get(f"/portail/releves/{own}/cfonb")
        assert response.status_code == 200
        assert response.content == cfonb_bytes(own)
        # Its lists show only its own data, even when asking for secondaries.
        listing = await client.get("/portail/redevables?secondaires=1")
        assert "FILIALE SUD" in listing.text
        assert "SOCIETE 10" not in listing.text and "AUTRE CLIENT" not in listing.text
        tracking = await client.get("/portail/releves?secondaires=1")
        assert 'id="total">1<' in tracking.text


async def test_primary_sees_secondaries_only_when_asked(portal: PortalHarness) -> None:
    async with portal.logged_in("cabinet") as client:
        own = await client.get("/portail/redevables")
        assert "SOCIETE 10" in own.text and "FILIALE SUD" not in own.text
        assert "<th>Compte</th>" not in own.text
        family = await client.get("/portail/redevables?secondaires=1")
        assert "FILIALE SUD" in family.text and "<td>agence</td>" in family.text
        assert "AUTRE CLIENT" not in family.text
        tracking = await client.get("/portail/releves?secondaires=1")
        assert 'id="total">4<' in tracking.text and "<td>agence</td>" in tracking.text
        banks = await client.get("/portail/comptes?secondaires=1")
        assert 'id="total">2<' in banks.text
        # A secondary's objects are the primary's to manage; another family's are not.
        child = portal.secondary.statement_ids[0]
        assert (await client.get(f"/portail/releves/{child}")).status_code == 200
        foreign = portal.other.statement_ids[0]
        assert (await client.get(f"/portail/releves/{foreign}/cfonb")).status_code == 404
        assert (await client.get("/portail/releves/99999999")).status_code == 404
        assert (await client.get("/portail/releves/abc")).status_code == 404


async def test_every_form_enforces_csrf(portal: PortalHarness) -> None:
    async with portal.logged_in("cabinet") as client, portal.logged_in("agence") as other:
        foreign_token = csrf_of((await other.get("/portail/releves")).text)
        redevable = portal.primary.redevable_ids[0]
        account = portal.primary.bank_account_ids[0]
        posts = [
            f"/portail/redevables/{redevable}/desactiver",
            f"/portail/redevables/{redevable}",
            "/portail/redevables/nouveau",
            "/portail/redevables/import",
            f"/portail/redevables/{redevable}/lien",
            f"/portail/comptes/{account}/desactiver",
            f"/portail/comptes/{account}/lien",
            "/portail/releves/zip",
            "/portail/souscription",
            "/portail/deconnexion",
        ]
        for url in posts:
            for data in ({}, {"csrf": "forged"}, {"csrf": foreign_token}):
                response = await client.post(url, data=data)
                assert response.status_code == 403, (url, data)
        async with portal.database.session() as session:
            stored = await session.get(Redevable, redevable)
            assert stored is not None and stored.active
        # The right token works.
        token = csrf_of((await client.get("/portail/releves")).text)
        response = await client.post(
            "/portail/releves/zip",
            data={"csrf": token, "ids": [str(i) for i in portal.primary.statement_ids]},
        )
        assert response.status_code == 200
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            assert len([n for n in archive.namelist() if n.endswith(".cfonb")]) == 3

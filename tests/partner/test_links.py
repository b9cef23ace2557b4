"""Secure links: 72 h expiry by the clock, single use, tampering, history of 10, refusals."""

from __future__ import annotations

import datetime as dt
import html
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from releves_mailer.cli import MainGroup, main
from releves_mailer.cli.tokens import tokens
from releves_mailer.collect.connections import connect_test_bank
from releves_mailer.db.models import OutboxMessage, Redevable, SecureLink
from releves_mailer.errors import UserError
from releves_mailer.partner.links import LinkKind, LinkState, hash_token, link_state
from tests.partner.conftest import Harness, body

SECOND = dt.timedelta(seconds=1)


async def status_of(url: str) -> tuple[int, str, str | None]:
    async with aiohttp.ClientSession() as client:
        response = await client.get(url, allow_redirects=False)
        page = html.unescape(await response.text())
        return response.status, page, response.headers.get("Location")


async def test_link_is_random_and_stored_hashed(harness: Harness) -> None:
    issued = await harness.links.send(harness.redevable_id)
    assert len(issued.token) >= 43  # 32 random bytes, base64url
    async with harness.database.session() as session:
        link = await session.get(SecureLink, issued.link.id)
        assert link is not None
        assert link.token_hash == hash_token(issued.token)
        assert issued.token not in link.token_hash
        assert link.expires_at - link.created_at == dt.timedelta(hours=72)
    (mail,) = await harness.queued()
    assert issued.token in body(mail)  # the mail carries it, the table does not


async def test_expiry_at_exactly_72_hours(harness: Harness) -> None:
    issued = await harness.links.send(harness.redevable_id)
    harness.clock.advance(dt.timedelta(hours=72) - SECOND)
    status, _, location = await status_of(issued.url)
    assert status == 302 and location is not None and "/testbank/webview/fr/connect" in location
    harness.clock.advance(SECOND)
    status, page, _ = await status_of(issued.url)
    assert status == 410
    assert "Ce lien a expiré" in page
    async with harness.database.session() as session:
        link = await session.get(SecureLink, issued.link.id)
        assert link is not None
        assert link_state(link, harness.clock.now()) is LinkState.EXPIRED
        assert link.used_at is None


async def test_tampered_and_unknown_links_change_nothing(harness: Harness) -> None:
    issued = await harness.links.send(harness.redevable_id)
    token = issued.token
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    for url in (
        f"{harness.base_url}/releves/saisie?token={tampered}",
        f"{harness.base_url}/releves/saisie?token=",
        f"{harness.base_url}/releves/saisie",
        f"{harness.base_url}/releves/maj?idConnexion=1&token={token}",  # right token, wrong kind
        f"{harness.base_url}/releves/maj?idConnexion=abc&token={token}",
    ):
        status, page, _ = await status_of(url)
        assert status == 404, url
        assert "Ce lien n'est pas valide" in page
    async with harness.database.session() as session:
        link = await session.get(SecureLink, issued.link.id)
        assert link is not None and link.opened_at is None and link.state_nonce is None


async def test_callback_with_forged_state_is_refused(harness: Harness) -> None:
    status, page, _ = await status_of(
        f"{harness.base_url}/releves/retour?state=forged&connection_id=1"
    )
    assert status == 404 and "Ce lien n'est pas valide" in page


async def test_security_headers_on_link_pages(harness: Harness) -> None:
    async with aiohttp.ClientSession() as client:
        response = await client.get(f"{harness.base_url}/releves/saisie?token=x")
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "no-store" in response.headers["Cache-Control"]
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Frame-Options"] == "DENY"
        css = await client.get(f"{harness.base_url}/static/releves.css")
        assert css.status == 200 and "body" in await css.text()


async def test_maj_link_of_closed_connection_and_inactive_redevable(harness: Harness) -> None:
    connection = await connect_test_bank(
        harness.database,
        harness.redevable_id,
        bank=harness.bank,
        keyring=harness.keyring,
        clock=harness.clock,
    )
    issued = await harness.links.send(harness.redevable_id, connection_id=connection.id)
    assert issued.url.startswith(f"{harness.base_url}/releves/maj?idConnexion={connection.id}&")
    status, _, location = await status_of(issued.url)
    assert status == 302 and location is not None and "/fr/reconnect?" in location
    # A new connection replaces it: the link now leads to a clear page.
    await connect_test_bank(
        harness.database,
        harness.redevable_id,
        bank=harness.bank,
        keyring=harness.keyring,
        clock=harness.clock,
    )
    status, page, _ = await status_of(issued.url)
    assert status == 410 and "n'est plus utilisée" in page
    other = await harness.links.send(harness.redevable_id)
    async with harness.database.session() as session:
        redevable = await session.get(Redevable, harness.redevable_id)
        assert redevable is not None
        redevable.active = False
    status, page, _ = await status_of(other.url)
    assert status == 410 and "n'est plus actif" in page
    with pytest.raises(UserError, match="désactivé"):
        await harness.links.send(harness.redevable_id)


async def test_no_email_no_link(harness: Harness) -> None:
    async with harness.database.session() as session:
        redevable = await session.get(Redevable, harness.redevable_id)
        assert redevable is not None
        redevable.email = ""
    with pytest.raises(UserError, match="pas d'adresse email"):
        await harness.links.send(harness.redevable_id)
    async with harness.database.session() as session:
        assert (await session.scalars(select(SecureLink))).all() == []


async def test_holder_opens_the_webview_only_for_his_own_company(harness: Harness) -> None:
    with pytest.raises(UserError, match="doit être envoyé au redevable"):
        await harness.links.open_for_holder(harness.redevable_id)
    async with harness.database.session() as session:
        redevable = await session.get(Redevable, harness.redevable_id)
        assert redevable is not None
        redevable.siren = "404833048"  # the SIREN of the portal account "brunol"
    issued = await harness.links.open_for_holder(harness.redevable_id)
    assert issued.link.created_by == "login" and issued.link.sent_at is None
    assert issued.link.recipient == "expert@cabinet.example"
    status, _, location = await status_of(issued.url)
    assert status == 302 and location is not None
    async with harness.database.session() as session:
        assert (await session.scalars(select(OutboxMessage))).all() == []


async def test_ten_most_recent_listed(harness: Harness) -> None:
    ids = []
    for _ in range(11):
        ids.append((await harness.links.send(harness.redevable_id)).link.id)
        harness.clock.advance(dt.timedelta(hours=10))
    async with harness.database.session() as session:
        rows = await harness.links.recent(session, harness.redevable_id, harness.clock.now())
    assert [row.id for row in rows] == list(reversed(ids))[:10]
    assert rows[0].state is LinkState.VALID
    assert rows[-1].state is LinkState.EXPIRED
    assert rows[0].kind_label == "Ajout de nouveaux comptes bancaires"
    assert rows[0].state_label == "Jeton valide"


async def test_link_mail_wording_for_update(harness: Harness) -> None:
    connection = await connect_test_bank(
        harness.database,
        harness.redevable_id,
        bank=harness.bank,
        keyring=harness.keyring,
        clock=harness.clock,
    )
    await harness.links.send(harness.redevable_id, connection_id=connection.id)
    (mail,) = await harness.queued("secure_link")
    text = body(mail)
    assert (
        "Afin de maintenir la réception automatique des relevés de compte au format CFONB120 "
        "sur votre dossier, EXPERT COMPTABLE TEST vous demande de mettre à jour les "
        "identifiants bancaires du/des compte(s) indiqué(s) ci-dessous via l'URL sécurisée "
        "suivante (valide seulement durant les 72 prochaines heures) :" in text
    )
    assert f"/releves/maj?idConnexion={connection.id}&token=" in text
    assert "Cet email a été émis depuis une adresse technique" in text
    assert LinkKind.UPDATE.value == "update"


def test_cli_list_and_send(tmp_path: Path) -> None:
    """``tokens send`` then ``tokens list`` on a real data directory."""
    import asyncio

    from releves_mailer.db import Database
    from releves_mailer.db.migrate import upgrade
    from tests.partner.conftest import START, cli_data_dir, make_portfolio

    config = cli_data_dir(tmp_path)

    async def prepare() -> None:
        database = Database(config.database_url)
        await upgrade(database)
        await make_portfolio(database, START)
        await database.dispose()

    asyncio.run(prepare())
    root = MainGroup(
        name="releves-mailer",
        params=list(main.params),
        callback=main.callback,
        commands={"tokens": tokens},
    )
    runner = CliRunner()
    args = ["--config", str(tmp_path / "releves-mailer.toml"), "tokens"]
    sent = runner.invoke(root, [*args, "send", "800000036"])
    assert sent.exit_code == 0, sent.output
    assert "Lien sécurisé transmis à redevable@client.example" in sent.output
    listed = runner.invoke(root, [*args, "list", "800000036"])
    assert listed.exit_code == 0, listed.output
    assert "Ajout de nouveaux comptes bancaires" in listed.output
    assert "Jeton valide" in listed.output
    as_json = runner.invoke(root, [*args, "list", "800000036", "--json"])
    assert '"etat": "valide"' in as_json.output
    refused = runner.invoke(root, [*args, "open", "800000036"])
    assert refused.exit_code != 0 and "doit être envoyé au redevable" in refused.output
    unknown = runner.invoke(root, [*args, "list", "123456789"])
    assert unknown.exit_code != 0 and "aucun redevable" in unknown.output

"""The whole round trip with the test bank, driven over HTTP: link mail, webview, callback."""

from __future__ import annotations

import datetime as dt
import html
import re
from urllib.parse import parse_qs, urlsplit

import aiohttp
from sqlalchemy import select

from releves_mailer.collect.service import CollectionService
from releves_mailer.db.models import (
    BankAccount,
    BankConnection,
    BankTransaction,
    SecureLink,
)
from tests.partner.conftest import Harness, assert_three_accounts_attached, body


async def _follow_webview(
    client: aiohttp.ClientSession, harness: Harness, url: str, choose: list[str] | None
) -> str:
    """Walk the test bank's webview from ``url``; return the callback URL it redirects to."""
    page = await client.get(url, allow_redirects=False)
    assert page.status == 200
    code = parse_qs(urlsplit(url).query)["code"][0]
    steps: list[dict[str, str] | list[tuple[str, str]]] = []
    flow = urlsplit(url).path.rsplit("/", 1)[-1]
    if flow == "connect":
        steps += [
            {"step": "bank", "bank": "testbank", "action": "continuer"},
            {"step": "terms", "action": "continuer"},
        ]
    steps.append({"step": "credentials", "login": "client", "password": "1234", "action": "x"})
    if flow == "connect":
        assert choose is not None
        steps.append(
            [("step", "accounts"), ("action", "continuer")]
            + [("account", value) for value in choose]
        )
        steps.append({"step": "contact", "name": "Jean Test", "company": "ENTREPRISE TEST"})
    for index, fields in enumerate(steps):
        form = list(fields.items()) if isinstance(fields, dict) else fields
        response = await client.post(
            f"{harness.base_url}/testbank/webview/etape",
            data=[("code", code), *form],
            allow_redirects=False,
        )
        if index < len(steps) - 1:
            assert response.status == 200, await response.text()
        else:
            assert response.status == 303
            return response.headers["Location"]
    raise AssertionError("unreachable")


async def test_saisie_round_trip_attaches_three_accounts_and_notifies(harness: Harness) -> None:
    issued = await harness.links.send(harness.redevable_id)
    mails = await harness.relayed()
    assert len(mails) == 1
    link_mail = mails[0]
    assert link_mail["To"] == "redevable@client.example"
    text = body(link_mail)
    assert (
        "Afin d'activer la réception automatique des relevés de compte au format CFONB120 sur "
        "votre dossier, EXPERT COMPTABLE TEST vous demande de saisir vos identifiants bancaires"
        in text
    )
    url = re.search(r"(http://\S+/releves/saisie\?token=[A-Za-z0-9_-]+)", text)
    assert url is not None and url.group(1) == issued.url
    assert "0102030405" in text and "expert@cabinet.example" in text

    harness.clock.advance(dt.timedelta(hours=5))
    async with aiohttp.ClientSession() as client:
        opened = await client.get(issued.url, allow_redirects=False)
        assert opened.status == 302
        assert opened.headers["Referrer-Policy"] == "no-referrer"
        assert "no-store" in opened.headers["Cache-Control"]
        webview = opened.headers["Location"]
        parts = urlsplit(webview)
        query = parse_qs(parts.query)
        assert parts.path == "/testbank/webview/fr/connect"
        assert query["redirect_uri"] == [f"{harness.base_url}/releves/retour"]
        async with harness.database.session() as session:
            link = await session.get(SecureLink, issued.link.id)
            assert link is not None
            assert query["state"] == [link.state_nonce]
        webview_session = harness.partner.session(query["code"][0])
        assert webview_session is not None
        accounts = await harness.partner.accounts(webview_session)
        chosen = [a.provider_id for a in accounts if a.label != "Compte sur livret"]
        assert len(chosen) == 3
        callback = await _follow_webview(client, harness, webview, chosen)
        cb = urlsplit(callback)
        assert cb.path == "/releves/retour"
        assert parse_qs(cb.query)["state"] == query["state"]
        done = await client.get(callback, allow_redirects=False)
        page = await done.text()
        assert done.status == 200, page
        assert "COMPTE CHÈQUE USD (CONNECTEUR DE TEST)" in page
        # Replay of the callback: same page, nothing more happens.
        again = await client.get(callback, allow_redirects=False)
        assert again.status == 200
        # The link is spent.
        reused = await client.get(issued.url, allow_redirects=False)
        assert reused.status == 410
        assert "déjà été utilisé" in html.unescape(await reused.text())

    async with harness.database.session() as session:
        connection_id = (await session.scalars(select(BankConnection.id))).one()
    await assert_three_accounts_attached(
        harness, issued.link.id, connection_id, "Compte sur livret"
    )

    # The next collection brings the transactions of the three chosen accounts only.
    result = await CollectionService(
        harness.database, harness.clock, {harness.bank.name: harness.bank}, harness.keyring
    ).refresh_one(connection_id)
    assert result.ok and result.inserted > 0
    async with harness.database.session() as session:
        connection = await session.get(BankConnection, connection_id)
        assert connection is not None and connection.state.value == "ok"
        per_account = (
            await session.execute(
                select(BankAccount.label, BankAccount.active, BankTransaction.id).join(
                    BankTransaction, BankTransaction.account_id == BankAccount.id
                )
            )
        ).all()
        assert {label for label, active, _ in per_account if active} >= {"Compte chèque"}
        savings = (
            await session.scalars(
                select(BankAccount).where(BankAccount.label == "Compte sur livret")
            )
        ).one()
        assert not savings.active

"""Broken connections: messages, link from the second failure, holder alert, transient delay,
consent renewal, and collection resuming after the client's new credentials."""

from __future__ import annotations

import datetime as dt
import html
import re
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from sqlalchemy import func, select

from releves_mailer.aggregators.testbank import ScheduledError
from releves_mailer.clock import PARIS
from releves_mailer.collect.connections import connect_test_bank
from releves_mailer.collect.errors import ERROR_CODES, describe_error
from releves_mailer.collect.service import CollectionService
from releves_mailer.db.models import (
    BankAccount,
    BankEvent,
    BankEventKind,
    BankTransaction,
    Redevable,
    SecureLink,
)
from releves_mailer.partner.alerts import AlertDecision
from tests.partner.conftest import Harness, body

DAY = dt.timedelta(days=1)


def today(harness: Harness) -> dt.date:
    return harness.clock.now().astimezone(PARIS).date()


async def connect(harness: Harness, code: str | None, days: int = 30) -> int:
    errors = ()
    if code is not None:
        start = today(harness) + DAY
        errors = (ScheduledError(code, start, start + dt.timedelta(days=days - 1)),)
    connection = await connect_test_bank(
        harness.database,
        harness.redevable_id,
        bank=harness.bank,
        keyring=harness.keyring,
        clock=harness.clock,
        errors=errors,
    )
    await check(harness, connection.id)  # first check: fine, accounts known
    return connection.id


async def check(harness: Harness, connection_id: int) -> AlertDecision:
    result = await CollectionService(
        harness.database, harness.clock, {harness.bank.name: harness.bank}, harness.keyring
    ).refresh_one(connection_id)
    return await harness.alerts.after_refresh(result)


async def nights(harness: Harness, connection_id: int, count: int) -> list[AlertDecision]:
    decisions = []
    for _ in range(count):
        harness.clock.advance(DAY)
        decisions.append(await check(harness, connection_id))
    return decisions


async def set_option(harness: Harness, **values: object) -> None:
    async with harness.database.session() as session:
        redevable = await session.get(Redevable, harness.redevable_id)
        assert redevable is not None
        for name, value in values.items():
            setattr(redevable, name, value)


@pytest.mark.parametrize("code", sorted(ERROR_CODES))
async def test_every_state_of_the_table(harness: Harness, code: str) -> None:
    error = describe_error(code)
    connection_id = await connect(harness, code)
    if error.needs_action:
        first, second, third = await nights(harness, connection_id, 3)
        assert first.error_code == code and first.message == error.message
        assert first.needs_action and not first.alert_sent and first.link_sent_to is None
        assert second.alert_sent and second.link_sent_to == "redevable@client.example"
        assert not third.alert_sent  # one alert per episode
        link_mail, alert = await harness.queued("secure_link") + await harness.queued("alert")
        assert error.message in body(link_mail)
        assert "Détails de l'erreur :" in body(link_mail)
        text = body(alert)
        assert alert["To"] == "expert@cabinet.example"
        assert error.message in text
        assert (
            "Un jeton de mise à jour valide durant les 72 prochaines heures a été "
            "automatiquement généré et transmis au redevable sur l'adresse email "
            "redevable@client.example." in text
        )
    else:
        decisions = await nights(harness, connection_id, 4)
        assert all(d.retry_after is not None for d in decisions)
        assert [d.alert_sent for d in decisions] == [False, False, False, True]
        assert all(d.link_sent_to is None for d in decisions)
        assert await harness.queued("secure_link") == []
        (alert,) = await harness.queued("alert")
        assert error.message in body(alert)
        assert "ne demande pas d'action du redevable" in body(alert)


async def test_holder_alert_content(harness: Harness) -> None:
    connection_id = await connect(harness, "wrongpass")
    await nights(harness, connection_id, 2)
    (alert,) = await harness.queued("alert")
    assert alert["Subject"] == "Alerte Relevés de compte - 800000036 - ENTREPRISE TEST"
    text = body(alert)
    assert (
        "Une erreur est survenue lors de la connexion à la banque CONNECTEUR DE TEST pour la "
        "récupération du/des relevé(s) de compte suivant(s) de la société 800000036 - "
        "ENTREPRISE TEST configuré(s) sur le compte client BRUNOL :" in text
    )
    for label in ("COMPTE CHÈQUE", "COMPTE CHÈQUE USD", "COMPTE CARTE DÉBIT DIFFÉRÉ"):
        assert f"- {label}\n" in text.replace("\r\n", "\n")
    assert "Email Support : support@releves.example" in text
    assert "Téléphone Support : 04 77 81 04 69" in text
    html_part = alert.get_body(preferencelist=("html",))
    assert html_part is not None and "Alerte Relevés de compte" in str(html_part.get_content())
    async with harness.database.session() as session:
        kinds = (
            await session.scalars(
                select(BankEvent.kind)
                .where(BankEvent.connection_id == connection_id)
                .order_by(BankEvent.id)
            )
        ).all()
    assert BankEventKind.LINK_SENT in kinds and BankEventKind.ALERT_SENT in kinds


async def test_no_link_when_option_set(harness: Harness) -> None:
    await set_option(harness, no_auto_link=True)
    connection_id = await connect(harness, "SCARequired")
    first, second = await nights(harness, connection_id, 2)
    assert not first.alert_sent
    assert second.alert_sent and second.link_sent_to is None
    assert await harness.queued("secure_link") == []
    (alert,) = await harness.queued("alert")
    text = body(alert)
    assert "Aucun jeton de mise à jour n'a été transmis au redevable" in text
    assert "Ne pas générer automatiquement le jeton" in text


async def test_replayed_check_changes_nothing_and_realert_after_seven_days(
    harness: Harness,
) -> None:
    connection_id = await connect(harness, "decoupled", days=20)
    await nights(harness, connection_id, 2)
    again = await check(harness, connection_id)  # same clock time: same check
    assert not again.alert_sent
    decisions = await nights(harness, connection_id, 7)
    assert [d.alert_sent for d in decisions] == [False] * 6 + [True]
    async with harness.database.session() as session:
        links = (await session.scalar(select(func.count()).select_from(SecureLink))) or 0
    assert links == 2


async def test_transient_then_recovery_never_alerts(harness: Harness) -> None:
    connection_id = await connect(harness, "websiteUnavailable", days=2)
    decisions = await nights(harness, connection_id, 4)
    assert not any(d.alert_sent for d in decisions)
    assert decisions[-1].error_code is None
    assert await harness.queued() == []


async def test_repaired_by_the_client_collection_resumes(harness: Harness) -> None:
    connection_id = await connect(harness, "wrongpass", days=60)
    async with harness.database.session() as session:
        before = (await session.scalar(select(func.count()).select_from(BankTransaction))) or 0
    await nights(harness, connection_id, 3)  # three nights broken, link sent after the 2nd
    (link_mail,) = await harness.queued("secure_link")
    found = re.search(
        r"(http://\S+/releves/maj\?idConnexion=\d+&token=[A-Za-z0-9_-]+)", body(link_mail)
    )
    assert found is not None
    url = found.group(1)
    async with aiohttp.ClientSession() as client:
        opened = await client.get(url, allow_redirects=False)
        assert opened.status == 302
        webview = urlsplit(opened.headers["Location"])
        query = parse_qs(webview.query)
        assert webview.path == "/testbank/webview/fr/reconnect"
        assert query["connection_id"] and query["reset_credentials"] == ["true"]
        step = await client.post(
            f"{harness.base_url}/testbank/webview/etape",
            data={"code": query["code"][0], "step": "credentials", "login": "c", "password": "p"},
            allow_redirects=False,
        )
        assert step.status == 303
        callback = step.headers["Location"]
        assert parse_qs(urlsplit(callback).query) == {"state": query["state"]}
        done = await client.get(callback)
        assert done.status == 200
        assert "ont été mis à jour" in html.unescape(await done.text())
    (notice,) = await harness.queued("accounts_added")
    assert (
        "ENTREPRISE TEST a mis à jour ses identifiants bancaires relatifs à l'accès du/des "
        "compte(s) suivant(s) :" in body(notice)
    )
    decision = await check(harness, connection_id)
    assert decision.error_code is None
    async with harness.database.session() as session:
        after = (await session.scalar(select(func.count()).select_from(BankTransaction))) or 0
        missed = (
            await session.scalar(
                select(func.count())
                .select_from(BankTransaction)
                .join(BankAccount, BankAccount.id == BankTransaction.account_id)
                .where(BankTransaction.first_seen_at == harness.clock.now())
            )
        ) or 0
        kinds = set(
            (
                await session.scalars(
                    select(BankEvent.kind).where(BankEvent.connection_id == connection_id)
                )
            ).all()
        )
    assert after > before and missed > 0  # the week missed is collected now
    assert {
        BankEventKind.CONNECTION_ERROR,
        BankEventKind.LINK_SENT,
        BankEventKind.ALERT_SENT,
        BankEventKind.LINK_USED,
        BankEventKind.CREDENTIALS_UPDATED,
        BankEventKind.CONNECTION_OK,
    } <= kinds
    # A new failure later is a new episode: alert again from its second check.
    # (the repaired token carries no scheduled error, so nothing more is sent here)
    assert not any(d.alert_sent for d in await nights(harness, connection_id, 2))


async def test_consent_renewal_seven_days_ahead(harness: Harness) -> None:
    connection_id = await connect(harness, None)
    harness.clock.advance(dt.timedelta(days=180 - 7) - dt.timedelta(seconds=1))
    assert await harness.alerts.check_consents() == 0
    harness.clock.advance(dt.timedelta(seconds=1))
    assert await harness.alerts.check_consents() == 1
    assert await harness.alerts.check_consents() == 0  # once per expiry date
    (mail,) = await harness.queued("secure_link")
    text = body(mail)
    assert "renouveler l'autorisation d'accès à vos comptes bancaires" in text
    assert f"/releves/maj?idConnexion={connection_id}&token=" in text
    async with harness.database.session() as session:
        link = (await session.scalars(select(SecureLink))).one()
        assert link.reason == "consent" and link.created_by == "auto"

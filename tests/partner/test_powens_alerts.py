"""Broken Powens connections, every state driven through the fake: the French message and
class, the update link only from the second failure needing action and only when enabled, the
holder's alert, transient errors silent for 3 days, and the consent renewal 7 days ahead."""

from __future__ import annotations

import datetime as dt
import html
import re
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest
from sqlalchemy import select

from releves_mailer.aggregators.powens import KNOWN_STATES
from releves_mailer.collect.errors import ERROR_CODES, UNKNOWN_ERROR, describe_error
from releves_mailer.collect.service import CollectionService
from releves_mailer.db.models import (
    BankConnection,
    BankEvent,
    BankEventKind,
    ConnectionWatch,
    Redevable,
    SecureLink,
)
from releves_mailer.partner.alerts import AlertDecision
from tests.partner.conftest import PowensHarness, attach_with_powens, body, through_powens_webview

DAY = dt.timedelta(days=1)
#: The states for which the Webview asks for every credential again.
RESET = {"wrongpass", "passwordExpired"}


async def check(h: PowensHarness, connection_id: int) -> AlertDecision:
    result = await CollectionService(
        h.database, h.clock, {h.provider.name: h.provider}, h.keyring
    ).refresh_one(connection_id)
    return await h.alerts.after_refresh(result)


async def nights(h: PowensHarness, connection_id: int, count: int) -> list[AlertDecision]:
    decisions = []
    for _ in range(count):
        h.clock.advance(DAY)
        decisions.append(await check(h, connection_id))
    return decisions


async def connected(h: PowensHarness) -> tuple[int, int]:
    """A Powens connection attached through a link, checked once: (local id, Powens id)."""
    connection_id = await attach_with_powens(h)
    assert (await check(h, connection_id)).error_code is None
    async with h.database.session() as session:
        connection = await session.get(BankConnection, connection_id)
        assert connection is not None
        return connection_id, int(connection.provider_connection_id)


async def mails_since(h: PowensHarness, before: int, kind: str) -> list[str]:
    """Bodies of the ``kind`` mails queued after the first ``before`` ones."""
    return [body(mail) for mail in (await h.queued(kind))[before:]]


def link_in(text: str) -> str:
    found = re.search(r"(http://\S+/releves/maj\?idConnexion=\d+&token=[A-Za-z0-9_-]+)", text)
    assert found is not None
    return found.group(1)


@pytest.mark.parametrize("state", [*sorted(KNOWN_STATES), "brandNewStateFromTheFuture"])
async def test_every_powens_state(powens_harness: PowensHarness, state: str) -> None:
    h = powens_harness
    connection_id, remote_id = await connected(h)
    links_before = len(await h.queued("secure_link"))  # the saisie link
    h.fake.set_state(remote_id, state, "Message de la banque")
    code = state if state in KNOWN_STATES else UNKNOWN_ERROR.code
    error = describe_error(code)
    assert error.message == (ERROR_CODES.get(state) or UNKNOWN_ERROR).message
    if error.needs_action:
        first, second, third = await nights(h, connection_id, 3)
        assert (first.error_code, first.message) == (code, error.message)
        assert first.needs_action and not first.alert_sent and first.link_sent_to is None
        assert second.alert_sent and second.link_sent_to == "redevable@client.example"
        assert not third.alert_sent  # one alert per episode
        (link_text,) = await mails_since(h, links_before, "secure_link")
        assert error.message in link_text
        (alert,) = await mails_since(h, 0, "alert")
        assert error.message in alert
        assert "redevable@client.example" in alert
        # The link opens Powens' reconnect Webview on that connection.
        async with aiohttp.ClientSession() as client:
            opened = await client.get(link_in(link_text), allow_redirects=False)
            assert opened.status == 302
        webview = urlsplit(opened.headers["Location"])
        values = dict(parse_qsl(webview.query))
        assert webview.path == "/webview/fr/reconnect"
        assert values["connection_id"] == str(remote_id)
        assert ("reset_credentials" in values) is (state in RESET)
    else:
        decisions = await nights(h, connection_id, 4)
        assert all(d.error_code == code and not d.needs_action for d in decisions)
        assert all(d.retry_after is not None for d in decisions)
        # Silent for three days, then the holder only: never a link for a transient error.
        assert [d.alert_sent for d in decisions] == [False, False, False, True]
        assert all(d.link_sent_to is None for d in decisions)
        assert await mails_since(h, links_before, "secure_link") == []
        (alert,) = await mails_since(h, 0, "alert")
        assert error.message in alert
        assert "ne demande pas d'action du redevable" in alert
    assert h.fake.user_creations == 1


async def test_holder_alert_content(powens_harness: PowensHarness) -> None:
    h = powens_harness
    connection_id, remote_id = await connected(h)
    h.fake.set_state(remote_id, "SCARequired")
    await nights(h, connection_id, 2)
    (alert,) = await h.queued("alert")
    assert alert["To"] == "expert@cabinet.example"
    assert alert["Subject"] == "Alerte Relevés de compte - 800000036 - ENTREPRISE TEST"
    text = body(alert).replace("\r\n", "\n")
    assert (
        "Une erreur est survenue lors de la connexion à la banque CONNECTEUR DE TEST pour la "
        "récupération du/des relevé(s) de compte suivant(s) de la société 800000036 - "
        "ENTREPRISE TEST configuré(s) sur le compte client BRUNOL :" in text
    )
    for label in ("COMPTE CHÈQUE", "COMPTE CHÈQUE USD", "COMPTE CARTE DÉBIT DIFFÉRÉ"):
        assert f"- {label}\n" in text
    assert "LIVRET" not in text  # not ticked in the Webview
    assert ERROR_CODES["SCARequired"].message in text
    assert (
        "Un jeton de mise à jour valide durant les 72 prochaines heures a été "
        "automatiquement généré et transmis au redevable sur l'adresse email "
        "redevable@client.example." in text
    )
    async with h.database.session() as session:
        kinds = (
            await session.scalars(
                select(BankEvent.kind).where(BankEvent.connection_id == connection_id)
            )
        ).all()
    assert BankEventKind.ALERT_SENT in kinds and BankEventKind.CONNECTION_ERROR in kinds


async def test_no_link_when_disabled_for_the_redevable(powens_harness: PowensHarness) -> None:
    h = powens_harness
    connection_id, remote_id = await connected(h)
    async with h.database.session() as session:
        redevable = await session.get(Redevable, h.redevable_id)
        assert redevable is not None
        redevable.no_auto_link = True
    links_before = len(await h.queued("secure_link"))
    h.fake.set_state(remote_id, "wrongpass")
    first, second = await nights(h, connection_id, 2)
    assert not first.alert_sent
    assert second.alert_sent and second.link_sent_to is None
    assert await mails_since(h, links_before, "secure_link") == []
    (alert,) = await mails_since(h, 0, "alert")
    assert "Aucun jeton de mise à jour n'a été transmis au redevable" in alert


async def test_transient_then_recovery_never_alerts(powens_harness: PowensHarness) -> None:
    h = powens_harness
    connection_id, remote_id = await connected(h)
    h.fake.set_state(remote_id, "websiteUnavailable")
    decisions = await nights(h, connection_id, 2)
    h.fake.set_state(remote_id, None)
    decisions += await nights(h, connection_id, 2)
    assert not any(d.alert_sent for d in decisions)
    assert decisions[-1].error_code is None
    assert await h.queued("alert") == []


async def test_consent_renewal_seven_days_ahead(powens_harness: PowensHarness) -> None:
    h = powens_harness
    connection_id, remote_id = await connected(h)
    links_before = len(await h.queued("secure_link"))
    expiry = (h.clock.now() + dt.timedelta(days=40)).replace(microsecond=0)
    h.fake.set_access_expire(remote_id, expiry)
    h.clock.advance(expiry - dt.timedelta(days=7) - h.clock.now() - dt.timedelta(seconds=1))
    assert await h.alerts.check_consents() == 0
    async with h.database.session() as session:
        watch = await session.get(ConnectionWatch, connection_id)
        assert watch is not None and watch.consent_expires_at == expiry  # read from Powens
    h.clock.advance(dt.timedelta(seconds=1))
    assert await h.alerts.check_consents() == 1
    assert await h.alerts.check_consents() == 0  # once per expiry date
    (text,) = await mails_since(h, links_before, "secure_link")
    assert "renouveler l'autorisation d'accès à vos comptes bancaires" in text
    url = link_in(text)
    assert f"/releves/maj?idConnexion={connection_id}&token=" in url
    async with h.database.session() as session:
        link = (
            await session.scalars(select(SecureLink).where(SecureLink.reason == "consent"))
        ).one()
        assert link.created_by == "auto"
    # The client renews in Powens' reconnect Webview; Powens moves the consent 180 days on.
    async with aiohttp.ClientSession() as client:
        webview, callback = await through_powens_webview(client, url)
        values = dict(parse_qsl(urlsplit(webview).query))
        assert urlsplit(webview).path == "/webview/fr/reconnect"
        assert values["connection_id"] == str(remote_id) and "reset_credentials" not in values
        done = await client.get(callback, allow_redirects=False)
        assert done.status == 200
        assert "ont été mis à jour" in html.unescape(await done.text())
    h.fake.set_access_expire(remote_id, h.clock.now().replace(microsecond=0) + 180 * DAY)
    h.clock.advance(DAY)
    assert await h.alerts.check_consents() == 0
    assert h.fake.user_creations == 1

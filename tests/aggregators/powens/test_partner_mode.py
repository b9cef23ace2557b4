"""Partner mode: one user per redevable, temporary codes, Webview URLs followed on the fake,
callbacks, account activation, forced sync and resume."""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest

from releves_mailer.aggregators.powens import (
    PowensAPIError,
    PowensProvider,
    WebviewError,
    build_webview_url,
    parse_webview_callback,
)
from releves_mailer.clock import ManualClock
from releves_mailer.collect.provider import Provider
from tests.fakes.powens_server import (
    FakeConnection,
    FakePowens,
    FakeUser,
    WebviewOutcome,
)

from .conftest import RecordedSleep, SentRequests, access_of

REDIRECT = "https://releves.example.fr/powens/retour"


def test_provider_implements_the_contract(provider: PowensProvider) -> None:
    assert isinstance(provider, Provider)
    assert (provider.name, provider.display_name) == ("powens", "Powens")


async def test_user_is_created_once(fake: FakePowens, provider: PowensProvider) -> None:
    user = await provider.ensure_user(None)
    assert fake.user_creations == 1
    assert user.user_id == str(max(fake.users)) and user.connection_id == ""
    assert fake.tokens[user.token] == int(user.user_id)
    again = await provider.ensure_user(user)
    assert again is user
    assert fake.user_creations == 1
    assert len(fake.calls("POST", "/auth/init")) == 1


async def test_user_creation_is_never_retried_after_a_5xx(
    fake: FakePowens, provider: PowensProvider, sleep: RecordedSleep
) -> None:
    fake.fail_next(1, 502, path="/auth/init")
    with pytest.raises(PowensAPIError) as caught:
        await provider.ensure_user(None)
    assert "incertaine" in caught.value.detail
    assert len(fake.calls("POST", "/auth/init")) == 1
    assert sleep.waits == []


async def test_user_creation_timeout_is_not_retried(
    fake: FakePowens, provider: PowensProvider, sleep: RecordedSleep, sent: SentRequests
) -> None:
    provider.client.timeouts = type(provider.client.timeouts)(request=0.2)
    fake.hold_calls()
    with pytest.raises(PowensAPIError, match="incertaine"):
        await provider.ensure_user(None)
    assert [path for _method, path in sent if path.endswith("/auth/init")] == ["/2.0/auth/init"]
    assert sleep.waits == []


async def test_user_creation_waits_out_a_429(
    fake: FakePowens, provider: PowensProvider, sleep: RecordedSleep
) -> None:
    fake.rate_limit_next(1, "3", path="/auth/init")
    await provider.ensure_user(None)
    assert sleep.waits == [3.0] and fake.user_creations == 1


async def test_wrong_client_secret(
    fake: FakePowens, provider: PowensProvider, session: aiohttp.ClientSession
) -> None:
    provider.client._client_secret = "wrong"
    with pytest.raises(PowensAPIError) as caught:
        await provider.ensure_user(None)
    assert caught.value.status == 400 and fake.user_creations == 0


async def test_temporary_code_and_exact_webview_url(
    fake: FakePowens, provider: PowensProvider, user: FakeUser
) -> None:
    code = await provider.temporary_code(access_of(user))
    assert code.single_use and code.expires_in == 1800
    assert dict(parse_qsl(fake.calls("GET", "/auth/token/code")[0].query)) == {
        "type": "singleAccess"
    }
    url = provider.webview_url("connect", code, "jeton d'état/42", REDIRECT)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}/" == fake.webview_base.removesuffix("webview/")
    assert parts.path == "/webview/fr/connect"
    assert parse_qsl(parts.query) == [
        ("domain", "fake-sandbox.biapi.pro"),
        ("client_id", fake.client_id),
        ("redirect_uri", REDIRECT),
        ("code", code.code),
        ("state", "jeton d'état/42"),
    ]
    assert "state=jeton%20d%27%C3%A9tat%2F42" in parts.query


def test_webview_url_for_the_real_host() -> None:
    url = build_webview_url(
        flow="reconnect",
        domain_host="acme-sandbox.biapi.pro",
        client_id="1234",
        code="c0de",
        redirect_uri=REDIRECT,
        state="s",
        connection_id="17",
        reset_credentials=True,
    )
    assert url == (
        "https://webview.powens.com/fr/reconnect?domain=acme-sandbox.biapi.pro&client_id=1234"
        "&redirect_uri=https%3A%2F%2Freleves.example.fr%2Fpowens%2Fretour&code=c0de&state=s"
        "&connection_id=17&reset_credentials=true"
    )


@pytest.mark.parametrize(
    "arguments",
    [
        {"flow": "reconnect"},  # no connection id
        {"flow": "connect", "redirect_uri": REDIRECT + "?a=1"},
        {"flow": "connect", "code": ""},
        {"flow": "connect", "lang": "xx"},
        {"flow": "connect", "reset_credentials": True},
        {"flow": "transfer"},
    ],
)
def test_webview_url_refuses_bad_requests(arguments: dict[str, object]) -> None:
    values: dict[str, object] = {
        "domain_host": "a.biapi.pro",
        "client_id": "1",
        "code": "c",
        "redirect_uri": REDIRECT,
        "state": "s",
        **arguments,
    }
    with pytest.raises(ValueError):
        build_webview_url(**values)  # type: ignore[arg-type]


async def _follow(session: aiohttp.ClientSession, url: str) -> dict[str, str]:
    async with session.get(url, allow_redirects=False) as response:
        assert response.status == 302, await response.text()
        location = response.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    return dict(parse_qsl(urlsplit(location).query))


async def test_connect_flow_then_activation(
    fake: FakePowens,
    provider: PowensProvider,
    session: aiohttp.ClientSession,
) -> None:
    fake.redirect_uris = {REDIRECT}
    user = await provider.ensure_user(None)
    fake.queue_webview(WebviewOutcome(chosen=frozenset({"Compte chèque", "Compte chèque USD"})))
    code = await provider.temporary_code(user)
    query = await _follow(session, provider.webview_url("connect", code, "st-1", REDIRECT))
    callback = parse_webview_callback(query)
    assert callback.ok and callback.state == "st-1" and callback.code is None
    (connection_id,) = callback.connection_ids
    # The callback is not trusted: the connection is re-read from the API.
    connection = await provider.get_connection(user, connection_id)
    assert connection.ok and connection.bank_name == "Connecteur de test"
    access = provider.access_for(user, connection_id)
    accounts = await provider.list_accounts(access)
    chosen = {a.label for a in accounts if not a.disabled}
    assert chosen == {"Compte chèque", "Compte chèque USD"}
    assert len(accounts) == 4
    # A single-use code is burnt.
    again = await _follow(session, provider.webview_url("connect", code, "st-2", REDIRECT))
    assert parse_webview_callback(again).error is WebviewError.SESSION_EXPIRED


async def test_reconnect_flow_repairs_the_connection(
    fake: FakePowens,
    provider: PowensProvider,
    session: aiohttp.ClientSession,
    user: FakeUser,
    connection: FakeConnection,
    clock: ManualClock,
) -> None:
    fake.set_state(connection, "SCARequired")
    clock.advance(dt.timedelta(hours=1))
    code = await provider.temporary_code(access_of(user))
    url = provider.webview_url("reconnect", code, "st-r", REDIRECT, str(connection.id))
    query = await _follow(session, url)
    assert query == {"state": "st-r"}
    assert fake.webview_visits[-1]["connection_id"] == str(connection.id)
    status = await provider.connection_status(access_of(user, connection))
    assert status.ok and status.last_sync == clock.now()


async def test_webview_error_comes_back(
    fake: FakePowens, provider: PowensProvider, session: aiohttp.ClientSession, user: FakeUser
) -> None:
    fake.queue_webview(WebviewOutcome(error="access_denied", error_description="Annulé"))
    code = await provider.temporary_code(access_of(user))
    query = await _follow(session, provider.webview_url("connect", code, "st-e", REDIRECT))
    callback = parse_webview_callback(query)
    assert callback.error is WebviewError.ACCESS_DENIED
    assert callback.error_description == "Annulé" and callback.state == "st-e"
    assert not fake.connections


def test_callback_parsing_edge_cases() -> None:
    with pytest.raises(ValueError):
        parse_webview_callback({"connection_id": "1"})
    with pytest.raises(ValueError):
        parse_webview_callback({"state": "s", "connection_id": "1; drop"})
    many = parse_webview_callback({"state": "s", "connection_id": "3", "connection_ids": "3,4"})
    assert many.connection_ids == ("3", "4")
    odd = parse_webview_callback({"state": "s", "error": "brand_new"})
    assert odd.error is WebviewError.OTHER and odd.error_code == "brand_new"
    deleted = parse_webview_callback(
        {"state": "s", "connection_id": "3", "connection_deleted": "true"}
    )
    assert deleted.connection_deleted

"""The whole partner-mode round trip against the fake Powens server, driven over HTTP.

Link mail through the relay, link opened, redirect to the Webview with the parameters of the
reference, callback attaching the three ticked accounts, the holder's notification, then the
next collection through the Powens provider. Also: one billed user per redevable whatever the
number of links, clicks or cancellations; repair through the ``reconnect`` flow.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import re
from urllib.parse import parse_qs, parse_qsl, urlsplit

import aiohttp
from sqlalchemy import func, select

from releves_mailer.aggregators.powens.partner import decode_partner_data
from releves_mailer.collect.service import CollectionService
from releves_mailer.db.models import (
    BankAccount,
    BankConnection,
    BankEvent,
    BankEventKind,
    BankTransaction,
    ConnectionState,
    Redevable,
    SecureLink,
)
from releves_mailer.db.models.statements import Statement, StatementState
from releves_mailer.partner.links import LinkKind, LinkOrigin
from releves_mailer.statements.cut import cut_due_statements
from tests.fakes.powens_server import AccountSpec, WebviewOutcome
from tests.partner.conftest import (
    POWENS_CHOSEN,
    PowensHarness,
    assert_three_accounts_attached,
    attach_with_powens,
    body,
    through_powens_webview,
)

DAY = dt.date(2026, 2, 27)


async def test_round_trip_over_http_attaches_three_accounts_and_collects(
    powens_harness: PowensHarness,
) -> None:
    h = powens_harness
    issued = await h.links.send(h.redevable_id)
    (link_mail,) = await h.relayed()
    assert link_mail["To"] == "redevable@client.example"
    found = re.search(r"(http://\S+/releves/saisie\?token=[A-Za-z0-9_-]+)", body(link_mail))
    assert found is not None and found.group(1) == issued.url
    assert h.fake.user_creations == 0  # nothing billed before the client clicks

    h.clock.advance(dt.timedelta(hours=5))
    h.fake.queue_webview(WebviewOutcome(chosen=POWENS_CHOSEN))
    async with aiohttp.ClientSession() as client:
        opened = await client.get(issued.url, allow_redirects=False)
        assert opened.status == 302
        assert opened.headers["Referrer-Policy"] == "no-referrer"
        webview = urlsplit(opened.headers["Location"])
        async with h.database.session() as session:
            link = await session.get(SecureLink, issued.link.id)
            assert link is not None and link.state_nonce and link.partner == "powens"
            state = link.state_nonce
            assert link.partner_data is not None
            stored_user = decode_partner_data(h.keyring.decrypt(link.partner_data))
        # The reference: https://webview.powens.com/{lang}/{flow}?domain=<host>&client_id=…
        # &redirect_uri=…&code=<temporary code>&state=… (the permanent token never goes out).
        assert f"{webview.scheme}://{webview.netloc}/webview/" == h.fake.webview_base
        assert webview.path == "/webview/fr/connect"
        query = parse_qsl(webview.query)
        assert [name for name, _ in query] == [
            "domain",
            "client_id",
            "redirect_uri",
            "code",
            "state",
        ]
        values = dict(query)
        assert values["domain"] == "fake-sandbox.biapi.pro"
        assert values["client_id"] == h.fake.client_id
        assert values["redirect_uri"] == f"{h.base_url}/releves/retour"
        assert values["state"] == state
        assert h.fake.user_creations == 1
        (user_id,) = h.fake.users
        user = h.fake.users[user_id]
        assert stored_user is not None and stored_user.user_id == str(user_id)
        assert user.token not in opened.headers["Location"]
        (code_call,) = h.fake.calls("GET", "/auth/token/code")
        assert dict(parse_qsl(code_call.query)) == {"type": "singleAccess"}

        visited = await client.get(opened.headers["Location"], allow_redirects=False)
        assert visited.status == 302
        callback = visited.headers["Location"]
        cb = urlsplit(callback)
        assert f"{cb.scheme}://{cb.netloc}{cb.path}" == f"{h.base_url}/releves/retour"
        (remote_id,) = h.fake.connections
        assert parse_qs(cb.query) == {"connection_id": [str(remote_id)], "state": [state]}
        done = await client.get(callback, allow_redirects=False)
        page = html.unescape(await done.text())
        assert done.status == 200, page
        for label in ("COMPTE CHÈQUE", "COMPTE CHÈQUE USD", "COMPTE CARTE DÉBIT DIFFÉRÉ"):
            assert f"{label} (CONNECTEUR DE TEST)" in page
        assert "LIVRET" not in page
        again = await client.get(callback, allow_redirects=False)  # replay: same page
        assert again.status == 200
        reused = await client.get(issued.url, allow_redirects=False)
        assert reused.status == 410
    assert h.fake.user_creations == 1

    async with h.database.session() as session:
        connection = (await session.scalars(select(BankConnection))).one()
        assert connection.provider == "powens"
        assert connection.provider_connection_id == str(remote_id)
        assert connection.provider_user_id == str(user_id)
        assert h.keyring.decrypt(connection.token_encrypted) == user.token
        assert connection.bank_name == "Connecteur de test"
    await assert_three_accounts_attached(h, issued.link.id, connection.id, "Livret A")

    # The bank's rows appear at Powens; the next collection brings them in.
    remote = {a.name: a for a in h.fake.accounts.values()}
    h.fake.add_transaction(remote["Compte chèque"], value="-42.10", date=DAY)
    h.fake.add_transaction(remote["Compte chèque"], value="1250.00", date=DAY, wording="VIR")
    h.fake.add_transaction(remote["Compte chèque USD"], value="-9.99", date=DAY)
    h.fake.add_transaction(remote["Compte carte débit différé"], value="-3.50", date=DAY)
    result = await CollectionService(
        h.database, h.clock, {h.provider.name: h.provider}, h.keyring
    ).refresh_one(connection.id)
    assert result.ok and result.inserted == 4, result
    async with h.database.session() as session:
        refreshed = await session.get(BankConnection, connection.id)
        assert refreshed is not None and refreshed.state is ConnectionState.OK
        per_account = (
            await session.execute(
                select(BankAccount.label, BankTransaction.amount).join(
                    BankTransaction, BankTransaction.account_id == BankAccount.id
                )
            )
        ).all()
    assert sorted((label, str(amount)) for label, amount in per_account) == [
        ("Compte carte débit différé", "-350"),
        ("Compte chèque", "-4210"),
        ("Compte chèque", "125000"),
        ("Compte chèque USD", "-999"),
    ]
    assert h.fake.user_creations == 1

    # The next night's collection produces the statements of the chosen accounts.
    h.clock.advance(dt.timedelta(days=1))
    await CollectionService(
        h.database, h.clock, {h.provider.name: h.provider}, h.keyring
    ).refresh_one(connection.id)
    report = await cut_due_statements(h.database, clock=h.clock)
    assert report.count("cut") >= 3, report
    async with h.database.session() as session:
        rows = await session.execute(
            select(BankAccount.label, func.sum(Statement.movement_count))
            .join(Statement, Statement.account_id == BankAccount.id)
            .where(Statement.state == StatementState.PRODUCED)
            .group_by(BankAccount.label)
        )
        counts = {label: int(total) for label, total in rows}
    assert counts == {
        "Compte chèque": 2,
        "Compte chèque USD": 1,
        "Compte carte débit différé": 1,
    }


async def test_one_user_whatever_the_links_clicks_and_cancellations(
    powens_harness: PowensHarness,
) -> None:
    h = powens_harness
    issued = await h.links.send(h.redevable_id)
    async with aiohttp.ClientSession() as client:
        # The client cancels in the Webview: the link stays valid, the user exists already.
        h.fake.queue_webview(WebviewOutcome(error="access_denied", error_description="Annulé"))
        _, callback = await through_powens_webview(client, issued.url)
        cancelled = await client.get(callback, allow_redirects=False)
        assert "Vous avez interrompu" in html.unescape(await cancelled.text())
        assert h.fake.user_creations == 1
        # Two quick clicks on the same link: still one user.
        first, second = await asyncio.gather(
            client.get(issued.url, allow_redirects=False),
            client.get(issued.url, allow_redirects=False),
        )
        assert first.status == second.status == 302
        assert h.fake.user_creations == 1
        # Then a second link, sent before the first one was used (manual resend).
        other = await h.links.send(h.redevable_id)
        h.fake.queue_webview(WebviewOutcome(chosen=POWENS_CHOSEN))
        _, callback = await through_powens_webview(client, other.url)
        assert (await client.get(callback, allow_redirects=False)).status == 200
    assert h.fake.user_creations == 1
    # A later link to add a second bank reuses the user stored on the connection.
    h.clock.advance(dt.timedelta(days=3))
    h.powens._users.clear()  # a restarted daemon: nothing in memory
    third = await h.links.send(h.redevable_id)
    h.fake.queue_webview(
        WebviewOutcome(bank_name="Autre banque", accounts=(AccountSpec("Compte pro"),))
    )
    async with aiohttp.ClientSession() as client:
        _, callback = await through_powens_webview(client, third.url)
        assert (await client.get(callback, allow_redirects=False)).status == 200
    assert h.fake.user_creations == 1
    assert len(h.fake.users) == 1
    (user_id,) = h.fake.users
    async with h.database.session() as session:
        connections = (await session.scalars(select(BankConnection))).all()
    assert sorted(c.bank_name for c in connections) == ["Autre banque", "Connecteur de test"]
    assert {c.provider_user_id for c in connections} == {str(user_id)}
    assert all(c.state is not ConnectionState.CLOSED for c in connections)


async def test_same_bank_again_supersedes_the_old_connection(
    powens_harness: PowensHarness,
) -> None:
    h = powens_harness
    accounts = (
        AccountSpec("Compte chèque", iban="FR7630001007941234567890185"),
        AccountSpec("Livret A", iban="FR7630004000031234567890143", type="savings"),
    )
    ids = []
    for _ in range(2):
        issued = await h.links.send(h.redevable_id)
        h.fake.queue_webview(WebviewOutcome(accounts=accounts, chosen=frozenset({"Compte chèque"})))
        async with aiohttp.ClientSession() as client:
            _, callback = await through_powens_webview(client, issued.url)
            assert (await client.get(callback, allow_redirects=False)).status == 200
        async with h.database.session() as session:
            link = await session.get(SecureLink, issued.link.id)
            assert link is not None and link.connection_id is not None
            ids.append(link.connection_id)
        h.clock.advance(dt.timedelta(hours=1))
    assert h.fake.user_creations == 1
    async with h.database.session() as session:
        old = await session.get(BankConnection, ids[0])
        new = await session.get(BankConnection, ids[1])
        assert old is not None and new is not None
        assert old.state is ConnectionState.CLOSED and not old.active
        assert new.state is not ConnectionState.CLOSED
        rows = (await session.scalars(select(BankAccount).order_by(BankAccount.id))).all()
    # The same two accounts, moved to the new connection; the choice is kept.
    assert [(a.label, a.connection_id, a.active) for a in rows] == [
        ("Compte chèque", ids[1], True),
        ("Livret A", ids[1], False),
    ]


async def test_repair_through_the_reconnect_flow(powens_harness: PowensHarness) -> None:
    h = powens_harness
    connection_id = await attach_with_powens(h)
    async with h.database.session() as session:
        connection = await session.get(BankConnection, connection_id)
        assert connection is not None
        remote_id = int(connection.provider_connection_id)
        connection.error_code = "wrongpass"  # as the last check left it
        redevable_id = connection.redevable_id
    h.fake.set_state(remote_id, "wrongpass")
    async with h.database.session() as session:
        redevable = await session.get(Redevable, redevable_id)
        connection = await session.get(BankConnection, connection_id)
        assert redevable is not None and connection is not None
        issued = await h.links.issue(
            session,
            redevable,
            kind=LinkKind.UPDATE,
            origin=LinkOrigin.MANUAL,
            connection=connection,
            reason="wrongpass",
        )
    h.clock.advance(dt.timedelta(hours=2))
    async with aiohttp.ClientSession() as client:
        webview, callback = await through_powens_webview(client, issued.url)
        parts = urlsplit(webview)
        assert parts.path == "/webview/fr/reconnect"
        assert [name for name, _ in parse_qsl(parts.query)] == [
            "domain",
            "client_id",
            "redirect_uri",
            "code",
            "state",
            "connection_id",
            "reset_credentials",
        ]
        values = dict(parse_qsl(parts.query))
        assert values["connection_id"] == str(remote_id)
        assert values["reset_credentials"] == "true"
        assert parse_qs(urlsplit(callback).query) == {"state": [values["state"]]}
        done = await client.get(callback, allow_redirects=False)
        assert done.status == 200
        assert "ont été mis à jour" in html.unescape(await done.text())
    assert h.fake.user_creations == 1
    assert h.fake.connections[remote_id].state is None
    async with h.database.session() as session:
        kinds = set(
            (
                await session.scalars(
                    select(BankEvent.kind).where(BankEvent.connection_id == connection_id)
                )
            ).all()
        )
    assert BankEventKind.CREDENTIALS_UPDATED in kinds
    result = await CollectionService(
        h.database, h.clock, {h.provider.name: h.provider}, h.keyring
    ).refresh_one(connection_id)
    assert result.ok

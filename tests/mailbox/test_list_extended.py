"""LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819) and CREATE-SPECIAL-USE (RFC 6154)."""

from __future__ import annotations

import aioimaplib
from imapclient import IMAPClient
from imapclient.imapclient import SENT

from releves_mailer.mailbox.imap.server import ImapServer

from .conftest import PASSWORD, RawClient, in_thread


async def _tree(client: RawClient) -> None:
    for name in ("Fruit/Apple", "Fruit/Banana", "Vegetable"):
        await client.ok(f"c CREATE {name}")
    await client.ok("c CREATE Sent (USE (\\Sent))")
    await client.ok("c CREATE Archive/2025 (USE (\\Archive))")
    for name in ("Fruit/Banana", "Vegetable", "Gone"):
        await client.ok(f"s SUBSCRIBE {name}")


def _listed(lines: list[bytes]) -> list[bytes]:
    return [line.rstrip(b"\r\n") for line in lines if line.startswith(b"* LIST")]


async def test_subscribed_selection(server: ImapServer) -> None:
    client = await RawClient.connect(server.port)
    await _tree(client)
    lines = await client.ok('l1 LIST (SUBSCRIBED) "" "*"')
    assert _listed(lines) == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" Fruit/Banana',
        b'* LIST (\\NonExistent \\HasNoChildren \\Subscribed) "/" Gone',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" Vegetable',
    ]
    await client.close()


async def test_recursivematch_gives_childinfo(server: ImapServer) -> None:
    client = await RawClient.connect(server.port)
    await _tree(client)
    lines = await client.ok('l1 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')
    assert _listed(lines) == [
        b'* LIST (\\HasChildren) "/" Fruit ("CHILDINFO" ("SUBSCRIBED"))',
        b'* LIST (\\NonExistent \\HasNoChildren \\Subscribed) "/" Gone',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" Vegetable',
    ]
    # With "*" the subscribed child matches by itself: no CHILDINFO, no unsubscribed parent.
    lines = await client.ok('l2 LIST (SUBSCRIBED RECURSIVEMATCH) "" "*"')
    assert not any(b"CHILDINFO" in line for line in lines)
    assert not any(line.endswith(b" Fruit") for line in _listed(lines))
    lines = await client.command('l3 LIST (RECURSIVEMATCH) "" "*"')
    assert lines[-1].startswith(b"l3 BAD"), lines
    lines = await client.command('l4 LIST (SUBSCRIBED FOO) "" "*"')
    assert lines[-1].startswith(b"l4 BAD"), lines
    lines = await client.command('l5 LIST "" "*" RETURN (FOO)')
    assert lines[-1].startswith(b"l5 BAD"), lines
    await client.close()


async def test_special_use_selection_and_return(server: ImapServer) -> None:
    client = await RawClient.connect(server.port)
    await _tree(client)
    lines = await client.ok('l1 LIST (SPECIAL-USE) "" "*"')
    assert _listed(lines) == [
        b'* LIST (\\HasNoChildren \\Archive) "/" Archive/2025',
        b'* LIST (\\HasNoChildren \\Sent) "/" Sent',
    ]
    lines = await client.ok('l2 LIST (SPECIAL-USE RECURSIVEMATCH) "" "%"')
    assert _listed(lines) == [
        b'* LIST (\\HasChildren) "/" Archive ("CHILDINFO" ("SPECIAL-USE"))',
        b'* LIST (\\HasNoChildren \\Sent) "/" Sent',
    ]
    lines = await client.ok('l3 LIST "" "Sent" RETURN (SPECIAL-USE)')
    assert _listed(lines) == [b'* LIST (\\HasNoChildren \\Sent) "/" Sent']
    lines = await client.command("c1 CREATE Bin (USE (\\Bogus))")
    assert lines[-1].startswith(b"c1 NO [USEATTR]"), lines
    await client.close()


async def test_several_patterns_and_return_options(server: ImapServer) -> None:
    client = await RawClient.connect(server.port)
    await _tree(client)
    lines = await client.ok(
        'l1 LIST (REMOTE) "" ("Fruit/%" "Veg*" "INBOX") '
        "RETURN (SUBSCRIBED CHILDREN STATUS (MESSAGES UIDNEXT))"
    )
    cleaned = [line.rstrip(b"\r\n") for line in lines[:-1]]
    assert cleaned == [
        b'* LIST (\\HasNoChildren) "/" INBOX',
        b"* STATUS INBOX (MESSAGES 0 UIDNEXT 1)",
        b'* LIST (\\HasNoChildren) "/" Fruit/Apple',
        b"* STATUS Fruit/Apple (MESSAGES 0 UIDNEXT 1)",
        b'* LIST (\\HasNoChildren \\Subscribed) "/" Fruit/Banana',
        b"* STATUS Fruit/Banana (MESSAGES 0 UIDNEXT 1)",
        b'* LIST (\\HasNoChildren \\Subscribed) "/" Vegetable',
        b"* STATUS Vegetable (MESSAGES 0 UIDNEXT 1)",
    ]
    # A level without a folder of its own, under "%": \Noselect in a base LIST.
    await client.ok("d DELETE Fruit")
    lines = await client.ok('l2 LIST "" "%"')
    assert b'* LIST (\\Noselect \\HasChildren) "/" Fruit' in _listed(lines)
    lines = await client.ok('l3 LIST "" "*"')
    assert not any(line.endswith(b" Fruit") for line in _listed(lines))
    await client.close()


async def test_capabilities(server: ImapServer) -> None:
    client = await RawClient.connect(server.port)
    words = (await client.ok("c CAPABILITY"))[0].split()
    assert b"LIST-EXTENDED" in words
    assert b"CREATE-SPECIAL-USE" in words
    await client.close()


async def test_imapclient_lists(server: ImapServer) -> None:
    def run() -> tuple[object, list[object], list[object]]:
        with IMAPClient("127.0.0.1", port=server.port, ssl=False) as client:
            client.login("demo", PASSWORD)
            client.create_folder("Sent Items")
            client._imap._simple_command("CREATE", "Envoyes", "(USE (\\Sent))")
            client.create_folder("Drafts/Old")
            client.subscribe_folder("Drafts/Old")
            sent = client.find_special_folder(SENT)
            typ, data = client._imap._simple_command("LIST", "(SPECIAL-USE)", '""', '"*"')
            assert typ == "OK"
            _, data = client._imap._untagged_response(typ, data, "LIST")
            special = client._proc_folder_list(data)
            subscribed = client.list_sub_folders()
            return sent, special, subscribed

    sent, special, subscribed = await in_thread(run)
    assert sent == "Envoyes"
    assert [(flags, name) for flags, _, name in special] == [
        ((b"\\HasNoChildren", b"\\Sent"), "Envoyes")
    ]  # type: ignore[misc]
    assert [name for _, _, name in subscribed] == ["Drafts/Old"]  # type: ignore[misc]


async def test_aioimaplib_list_extended(server: ImapServer) -> None:
    client = aioimaplib.IMAP4(host="127.0.0.1", port=server.port, timeout=60)
    await client.wait_hello_from_server()
    assert (await client.login("demo", PASSWORD)).result == "OK"
    for name in ("Fruit/Apple", "Fruit/Banana"):
        assert (await client.create(name)).result == "OK"
    assert (await client.subscribe("Fruit/Apple")).result == "OK"
    response = await client.list('(SUBSCRIBED RECURSIVEMATCH) ""', "%")
    await client.logout()
    assert response.result == "OK"
    assert response.lines[:-1] == [b'(\\HasChildren) "/" Fruit ("CHILDINFO" ("SUBSCRIBED"))']

"""RFC 3501 transcripts at the byte level: literals, errors, limits, sessions that share a box."""

from __future__ import annotations

from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.store import MessageStore

from .conftest import DOMAIN, PASSWORD, RawClient, put, sample_message

ADDRESS = f"demo@{DOMAIN}"


async def test_greeting_capability_and_logout(server: ImapServer) -> None:
    client = await RawClient.connect(server.port, login=False)
    assert client.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1")
    lines = await client.ok("c1 CAPABILITY")
    assert b"AUTH=PLAIN" in lines[0] and b"STARTTLS" in lines[0]
    lines = await client.ok("c2 NOOP")
    lines = await client.ok("c3 LOGOUT")
    assert lines[0].startswith(b"* BYE")
    # Then the server closes the connection, with nothing more to say.
    assert await client.until_closed() == []
    await client.close()


async def test_synchronising_and_non_synchronising_literals(server: ImapServer) -> None:
    client = await RawClient.connect(server.port, login=False)
    password = PASSWORD.encode()
    await client.send(b"l1 LOGIN {4}\r\n")
    assert (await client.line()).startswith(b"+ ")
    await client.send(b"demo {%d+}\r\n%s\r\n" % (len(password), password))
    lines = await client.until_tagged(b"l1")
    assert lines[-1].startswith(b"l1 OK")
    message = sample_message(subject="literal")
    await client.send(
        b"l2 APPEND INBOX (\\Seen $Work) {%d+}\r\n" % len(message) + message + b"\r\n"
    )
    lines = await client.until_tagged(b"l2")
    assert b"[APPENDUID " in lines[-1]
    await client.ok("l3 SELECT INBOX")
    lines = await client.ok("l4 FETCH 1 (FLAGS)")
    assert b"\\Seen" in lines[0] and b"$Work" in lines[0]
    await client.close()


async def test_malformed_commands_get_bad_and_session_goes_on(server: ImapServer) -> None:
    client = await RawClient.connect(server.port)
    for bad in [
        "x1 FROB",
        "x2 SELECT",
        'x3 SELECT "unterminated',
        "x4 FETCH 1 (FLAGS)",  # no mailbox selected
        "x5 LOGIN again please",  # wrong state
        "x6 STORE 1 FLAGS (\\Recent)",
    ]:
        lines = await client.command(bad)
        assert lines[-1].split(b" ")[1] == b"BAD", (bad, lines)
    await client.send(b"\r\n")
    assert (await client.line()).startswith(b"* BAD")
    await client.ok("x7 SELECT INBOX")
    lines = await client.command("x8 FETCH 5 FLAGS")  # beyond EXISTS
    assert lines[-1].startswith(b"x8 BAD")
    lines = await client.command("x9 FETCH 1:* (BODY[1.2.MIME)")
    assert lines[-1].startswith(b"x9 BAD")
    await client.ok("x10 NOOP")
    await client.close()


async def test_limits_line_length_and_literal_size(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = await server_factory(max_line_length=1024, max_literal_size=2048)
    client = await RawClient.connect(server.port)
    lines = await client.command(b"t1 NOOP " + b"x" * 5000)
    assert b"too long" in lines[-1]
    await client.send(b"t2 APPEND INBOX {4096}\r\n")
    reply = await client.line()
    assert reply.startswith(b"t2 NO [TOOBIG]")
    await client.ok("t3 NOOP")
    await client.close()


async def test_connections_per_login_and_throttle(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = await server_factory(max_connections_per_login=2)
    first = await RawClient.connect(server.port)
    second = await RawClient.connect(server.port)
    third = await RawClient.connect(server.port, login=False)
    lines = await third.command(f'a LOGIN demo "{PASSWORD}"')
    assert b"[LIMIT]" in lines[-1]
    await first.ok("z LOGOUT")
    # The server forgets the session before it closes the connection: once the end of the
    # stream is read, its slot is free (however long the server took to get there).
    assert await first.until_closed() == []
    await first.close()
    await third.ok(f'b LOGIN demo "{PASSWORD}"')
    attacker = await RawClient.connect(server.port, login=False)
    for index in range(server.guard.config.max_failures_per_login_and_address):
        lines = await attacker.command(f"f{index} LOGIN other wrong")
        assert b"[AUTHENTICATIONFAILED]" in lines[-1]
    lines = await attacker.command(f'g LOGIN other "{PASSWORD}"')
    assert b"[UNAVAILABLE]" in lines[-1]
    for client in (second, third, attacker):
        await client.close()


async def test_plaintext_login_refused_off_loopback_without_tls(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = await server_factory(plaintext_auth_from_loopback=False)
    client = await RawClient.connect(server.port, login=False)
    assert b"LOGINDISABLED" in client.greeting
    lines = await client.command(f'a LOGIN demo "{PASSWORD}"')
    assert b"[PRIVACYREQUIRED]" in lines[-1]
    await client.close()


async def test_authenticate_plain_with_and_without_initial_response(server: ImapServer) -> None:
    import base64

    token = base64.b64encode(f"\0demo\0{PASSWORD}".encode())
    client = await RawClient.connect(server.port, login=False)
    lines = await client.command(b"a1 AUTHENTICATE PLAIN " + token)
    assert lines[-1].startswith(b"a1 OK")
    await client.close()
    client = await RawClient.connect(server.port, login=False)
    await client.send(b"a2 AUTHENTICATE PLAIN\r\n")
    assert (await client.line()).startswith(b"+")
    await client.send(token + b"\r\n")
    assert (await client.until_tagged(b"a2"))[-1].startswith(b"a2 OK")
    await client.close()
    client = await RawClient.connect(server.port, login=False)
    await client.send(b"a3 AUTHENTICATE PLAIN\r\n")
    await client.line()
    await client.send(b"*\r\n")
    assert (await client.until_tagged(b"a3"))[-1].startswith(b"a3 BAD")
    await client.close()


async def test_expunge_seen_by_another_session(server: ImapServer, store: MessageStore) -> None:
    for index in range(4):
        await put(store, ADDRESS, sample_message(subject=f"m{index}"))
    one = await RawClient.connect(server.port)
    two = await RawClient.connect(server.port)
    await one.ok("s SELECT INBOX")
    await two.ok("s SELECT INBOX")
    await one.ok("a STORE 2,3 +FLAGS.SILENT (\\Deleted)")
    lines = await one.ok("b EXPUNGE")
    assert lines[:2] == [b"* 3 EXPUNGE\r\n", b"* 2 EXPUNGE\r\n"]
    # While a FETCH runs, expunges are held back (RFC 3501 7.4.1).
    lines = await two.ok("c FETCH 1:4 (UID)")
    assert not any(b"EXPUNGE" in line for line in lines)
    lines = await two.ok("d NOOP")
    assert sum(b"EXPUNGE" in line for line in lines) == 2
    lines = await two.ok("e FETCH 1:* (UID)")
    assert [line for line in lines if b"FETCH" in line] == [
        b"* 1 FETCH (UID 1)\r\n",
        b"* 2 FETCH (UID 4)\r\n",
    ]
    await one.close()
    await two.close()


async def test_rename_inbox_moves_messages_and_keeps_an_empty_inbox(
    server: ImapServer, store: MessageStore
) -> None:
    await put(store, ADDRESS, sample_message())
    client = await RawClient.connect(server.port)
    await client.ok("r1 RENAME INBOX Old/Inbox")
    lines = await client.ok("r2 STATUS INBOX (MESSAGES)")
    assert b"(MESSAGES 0)" in lines[0]
    lines = await client.ok('r3 STATUS "Old/Inbox" (MESSAGES)')
    assert b"(MESSAGES 1)" in lines[0]
    lines = await client.ok('r4 LIST "" "*"')
    names = b"".join(lines)
    assert b'"Old/Inbox"' in names or b" Old/Inbox" in names
    assert b"\\HasChildren" in names
    lines = await client.command("r5 DELETE INBOX")
    assert lines[-1].startswith(b"r5 NO")
    await client.close()


async def test_users_see_only_their_own_boxes(server: ImapServer, store: MessageStore) -> None:
    await put(store, f"other@{DOMAIN}", sample_message(), folder="Secret")
    await put(store, f"releves.demo@{DOMAIN}", sample_message(subject="statement"))
    client = await RawClient.connect(server.port)
    lines = await client.ok('l LIST "" "*"')
    assert b"Secret" not in b"".join(lines)
    lines = await client.command("s SELECT Secret")
    assert lines[-1].startswith(b"s NO")
    dedicated = await RawClient.connect(server.port, login=False)
    await dedicated.ok(f'a LOGIN releves.demo@{DOMAIN} "{PASSWORD}"')
    lines = await dedicated.ok("b SELECT INBOX")
    assert b"* 1 EXISTS\r\n" in lines
    await client.close()
    await dedicated.close()


async def test_condstore_modseq_and_unchangedsince(server: ImapServer, store: MessageStore) -> None:
    await put(store, ADDRESS, sample_message())
    await put(store, ADDRESS, sample_message())
    client = await RawClient.connect(server.port)
    lines = await client.ok("c1 SELECT INBOX (CONDSTORE)")
    highest = next(line for line in lines if b"HIGHESTMODSEQ" in line)
    value = int(highest.split(b"HIGHESTMODSEQ ")[1].split(b"]")[0])
    lines = await client.ok(f"c2 STORE 1 (UNCHANGEDSINCE {value}) +FLAGS (\\Flagged)")
    assert b"MODSEQ (" in lines[0]
    lines = await client.ok(f"c3 STORE 1 (UNCHANGEDSINCE {value}) +FLAGS (\\Seen)")
    assert b"[MODIFIED 1]" in lines[-1]
    lines = await client.ok(f"c4 FETCH 1:* (FLAGS) (CHANGEDSINCE {value})")
    assert len([line for line in lines if b"FETCH" in line]) == 1
    lines = await client.ok(f"c5 SEARCH MODSEQ {value + 1}")
    assert lines[0].startswith(b"* SEARCH 1 (MODSEQ ")
    await client.close()


async def test_id_namespace_enable_unselect_special_use(server: ImapServer) -> None:
    client = await RawClient.connect(server.port)
    lines = await client.ok('i1 ID ("name" "test")')
    assert lines[0].startswith(b"* ID (")
    lines = await client.ok("i2 NAMESPACE")
    assert lines[0] == b'* NAMESPACE (("" "/")) NIL NIL\r\n'
    lines = await client.ok("i3 ENABLE CONDSTORE")
    assert lines[0] == b"* ENABLED CONDSTORE\r\n"
    await client.ok("i4 CREATE Sent (USE (\\Sent))")
    lines = await client.ok('i5 LIST "" "%"')
    assert any(b"\\Sent" in line and b"Sent" in line for line in lines)
    await client.ok("i6 SELECT Sent")
    await client.ok("i7 UNSELECT")
    lines = await client.command("i8 FETCH 1 FLAGS")
    assert lines[-1].startswith(b"i8 BAD")
    await client.ok("i9 SUBSCRIBE Sent")
    lines = await client.ok('i10 LSUB "" "*"')
    assert lines[0] == b'* LSUB () "/" Sent\r\n'
    await client.ok("i11 UNSUBSCRIBE Sent")
    await client.close()


async def test_stop_says_bye_to_every_session(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = await server_factory()
    client = await RawClient.connect(server.port)
    await client.ok("s SELECT INBOX")
    await server.stop()
    assert (await client.line()).startswith(b"* BYE")
    await client.close()

"""Issue 13 point 3 (IMAP): before login, 8 KiB lines and literals and a 60 s idle timeout."""

from __future__ import annotations

import asyncio
import time

import pytest

from releves_mailer.config import ImapSection
from releves_mailer.mailbox.imap.connection import PREAUTH_ID_MAX_LINE
from releves_mailer.mailbox.imap.server import ImapServer
from tests.mailbox.conftest import (  # noqa: F401  (fixtures)
    PASSWORD,
    RawClient,
    ca,
    server_factory,
    server_ssl,
    store,
)

pytestmark = pytest.mark.once


async def login_with_literal(port: int, user: bytes, rest: bytes) -> list[bytes]:
    """``a LOGIN`` with the user name as a synchronising literal; the answer's lines."""
    client = await RawClient.connect(port, login=False)
    try:
        await client.send(b"a LOGIN {%d}\r\n" % len(user))
        assert (await client.line()).startswith(b"+ ")
        await client.send(user + rest + b"\r\n")
        return await client.until_tagged(b"a")
    finally:
        await client.close()


def test_defaults_are_small_before_login() -> None:
    section = ImapSection()
    assert section.preauth_max_line_length == 8192
    assert section.preauth_max_literal_size == 8192
    assert section.preauth_idle_timeout_seconds == 60
    assert section.idle_timeout_seconds == 1800


async def test_synchronising_literal_too_large_gets_bye_and_no_continuation(
    server_factory,  # noqa: F811
) -> None:
    server: ImapServer = await server_factory()
    client = await RawClient.connect(server.port, login=False)
    await client.send(b"a LOGIN {60000000}\r\n")
    lines = await client.until_closed()
    assert lines == [b"* BYE Literal size too large\r\n"]
    await client.close()


async def test_non_synchronising_literals_too_large_are_cut_off(server_factory) -> None:  # noqa: F811
    """Ten `a LOGIN {60000000+}` connections: each is closed after its first line."""
    server: ImapServer = await server_factory()
    clients = [await RawClient.connect(server.port, login=False) for _ in range(10)]
    try:
        for client in clients:
            await client.send(b"a LOGIN {60000000+}\r\n" + b"x" * 65536)
        for client in clients:
            lines = await client.until_closed()
            assert lines == [b"* BYE Literal size too large\r\n"]
    finally:
        for client in clients:
            await client.close()


async def test_literal_just_over_the_limit_is_refused_and_under_it_accepted(
    server_factory,  # noqa: F811
) -> None:
    server: ImapServer = await server_factory(preauth_max_literal_size=4096)
    client = await RawClient.connect(server.port, login=False)
    await client.send(b"a LOGIN {4097}\r\n")
    assert await client.until_closed() == [b"* BYE Literal size too large\r\n"]
    await client.close()

    lines = await login_with_literal(server.port, b"u" * 4096, b" wrong")
    assert lines[-1].startswith(b"a NO [AUTHENTICATIONFAILED]"), lines


async def test_login_with_small_literals_still_works(server_factory) -> None:  # noqa: F811
    server: ImapServer = await server_factory()
    password = b" {%d+}\r\n%s" % (len(PASSWORD), PASSWORD.encode())
    lines = await login_with_literal(server.port, b"demo", password)
    assert lines[-1].startswith(b"a OK"), lines


async def test_long_line_before_login_gets_bye(server_factory) -> None:  # noqa: F811
    server: ImapServer = await server_factory()
    client = await RawClient.connect(server.port, login=False)
    await client.send(b"a LOGIN demo " + b"x" * 9000 + b"\r\n")
    assert await client.until_closed() == [b"* BYE Command line too long\r\n"]
    await client.close()

    # A line with no end: refused once the buffer is full, without reading the rest.
    client = await RawClient.connect(server.port, login=False)
    client.writer.write(b"a LOGIN " + b"y" * 200_000)
    assert await client.until_closed() == [b"* BYE Command line too long\r\n"]
    await client.close()


async def test_long_sasl_response_before_login_gets_bye(server_factory) -> None:  # noqa: F811
    server: ImapServer = await server_factory()
    client = await RawClient.connect(server.port, login=False)
    await client.send(b"a AUTHENTICATE PLAIN\r\n")
    assert (await client.line()).startswith(b"+")
    await client.send(b"A" * 9000 + b"\r\n")
    assert await client.until_closed() == [b"* BYE Command line too long\r\n"]
    await client.close()


async def test_long_line_after_login_is_bad_and_session_goes_on(server_factory) -> None:  # noqa: F811
    server: ImapServer = await server_factory()
    client = await RawClient.connect(server.port)
    lines = await client.command(b"b LIST " + b'"" "' + b"x" * 9000 + b'"')
    assert lines[-1].startswith(b"b OK"), lines[-1][:80]
    await client.ok("c NOOP")
    await client.close()


async def test_idle_timeout_before_login(server_factory) -> None:  # noqa: F811
    server: ImapServer = await server_factory(preauth_idle_timeout_seconds=1)
    # Timed from before the connection: the server's timer cannot start earlier, whereas
    # the greeting may be read long after it started on a loaded machine.
    started = time.monotonic()
    client = await RawClient.connect(server.port, login=False)
    lines = await client.until_closed()
    assert lines == [b"* BYE Autologout; idle for too long\r\n"]
    # It waited the timeout out (a lower bound holds on any machine, a loaded one too).
    assert time.monotonic() - started >= 0.9
    await client.close()

    # A login literal announced and never sent: the same timeout. The announcement goes
    # before the greeting is read, and 3 s leave room for it to be read on a loaded CI.
    server = await server_factory(preauth_idle_timeout_seconds=3)
    client = await RawClient.connect(server.port, login=False, first=b"a LOGIN {4}\r\n")
    assert (await client.line()).startswith(b"+ ")
    assert await client.until_closed() == [b"* BYE Autologout; idle for too long\r\n"]
    await client.close()


async def test_logged_in_session_keeps_the_long_timeout(server_factory) -> None:  # noqa: F811
    # 3 s: the LOGIN, sent with the connection, must be read within it even on a loaded CI.
    server: ImapServer = await server_factory(preauth_idle_timeout_seconds=3)
    # RawClient.connect sends its LOGIN before reading the greeting: it is received at once.
    client = await RawClient.connect(server.port)
    # Silent for more than twice the pre-login timeout: the session is still there.
    await asyncio.sleep(6.5)
    await client.ok("b NOOP")
    await client.close()


def largest_lawful_id() -> bytes:
    """RFC 2971's largest ID: 30 pairs of a 30-octet field and a 1024-octet value."""
    pairs = b" ".join(b'"%s" "%s"' % (b"f%029d" % n, b"v" * 1024) for n in range(30))
    return b"a ID (" + pairs + b")"


async def test_long_id_before_login_is_answered_and_other_lines_still_get_bye(
    server_factory,  # noqa: F811
) -> None:
    """Before login an ID line may reach 32 KiB (RFC 2971's maxima); nothing else may."""
    server: ImapServer = await server_factory()
    line = largest_lawful_id()
    assert 31_000 < len(line) < PREAUTH_ID_MAX_LINE
    client = await RawClient.connect(server.port, login=False)
    lines = await client.command(line)
    assert lines[0].startswith(b"* ID ("), lines
    assert lines[-1].startswith(b"a OK"), lines
    # The session goes on, with the ordinary limit for every other command.
    await client.send(b"b LOGIN demo " + b"x" * 9000 + b"\r\n")
    assert await client.until_closed() == [b"* BYE Command line too long\r\n"]
    await client.close()

    # Past 32 KiB, an ID line is refused like any other.
    client = await RawClient.connect(server.port, login=False)
    await client.send(b'a ID ("name" "' + b"n" * PREAUTH_ID_MAX_LINE + b'")\r\n')
    assert await client.until_closed() == [b"* BYE Command line too long\r\n"]
    await client.close()

    # A literal's continuation line that looks like an ID command gets no larger limit.
    client = await RawClient.connect(server.port, login=False)
    await client.send(b"a LOGIN {0}\r\n")
    assert (await client.line()).startswith(b"+ ")
    await client.send(b"x ID " + b"y" * 9000 + b"\r\n")
    assert await client.until_closed() == [b"* BYE Command line too long\r\n"]
    await client.close()

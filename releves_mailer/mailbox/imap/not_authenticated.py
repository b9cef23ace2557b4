"""IMAP commands of any state and before login: CAPABILITY, NOOP, LOGOUT, ID, STARTTLS, LOGIN,
AUTHENTICATE (RFC 3501 sections 6.1 and 6.2, RFC 2971, RFC 4959)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from releves_mailer.mailbox.imap.connection import CommandContext, CommandError, Disconnect
from releves_mailer.mailbox.imap.parser import Parser
from releves_mailer.mailbox.imap.state import State
from releves_mailer.mailbox.sasl import SaslCancelled, SaslError, decode_response, parse_plain
from releves_mailer.portfolio.logins import LoginThrottled

if TYPE_CHECKING:
    from releves_mailer.mailbox.imap.session import Handler, ImapSession

__all__ = ["ANY_STATE", "NOT_AUTHENTICATED"]


async def cmd_capability(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    parser.end()
    session.send(b"* CAPABILITY " + " ".join(session.capabilities()).encode())
    session.ok(context, "Capability completed")


async def cmd_noop(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    parser.end()
    await session.sync_view(allow_expunge=True)
    session.ok(context, "NOOP completed")


async def cmd_logout(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    parser.end()
    session.send(b"* BYE Logging out")
    session.ok(context, "Logout completed")
    session.state = State.LOGOUT
    session.closing = True


async def cmd_id(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    parser.sp()
    if not parser.accept(b"NIL"):
        parser.list_start()
        while not parser.list_end():
            parser.maybe_sp()
            parser.string()
            parser.sp()
            if not parser.accept(b"NIL"):
                parser.string()
    parser.end()
    session.send(b'* ID ("name" "releves-mailer" "vendor" "releves-mailer")')
    session.ok(context, "ID completed")


async def cmd_starttls(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    parser.end()
    ssl_context = session.server.ssl_context
    if ssl_context is None or session.tls:
        raise CommandError("BAD", "STARTTLS not available")
    session.ok(context, "Begin TLS negotiation now")
    await session.flush()
    # Anything the client pipelined after STARTTLS is plaintext injection: drop it.
    buffered = getattr(session.reader, "_buffer", None)
    if isinstance(buffered, bytearray):
        buffered.clear()
    try:
        await asyncio.wait_for(session.writer.start_tls(ssl_context), 30)
    except (OSError, TimeoutError) as exc:
        raise Disconnect() from exc
    session.tls = True


async def cmd_login(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    parser.sp()
    user = parser.astring()
    parser.sp()
    password = parser.astring()
    parser.end()
    await _login(
        session, context, user.decode("utf-8", "replace"), password.decode("utf-8", "replace")
    )


async def cmd_authenticate(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    parser.sp()
    mechanism = parser.atom().upper()
    initial: bytes | None = None
    if parser.maybe_sp():
        initial = parser.token() or parser.string()
    parser.end()
    if mechanism != "PLAIN":
        raise CommandError("NO", "Unsupported authentication mechanism")
    if not session.plaintext_allowed():
        raise CommandError("NO", "[PRIVACYREQUIRED] Plaintext authentication disallowed")
    if initial is None:
        session.send(b"+ ")
        await session.flush()
        initial = (await session.readline(session.limits())).strip()
    try:
        credentials = parse_plain(decode_response(initial))
    except SaslCancelled:
        raise CommandError("BAD", "Authentication cancelled") from None
    except SaslError as error:
        raise CommandError("NO", f"[AUTHENTICATIONFAILED] {error}") from None
    await _login(session, context, credentials.username, credentials.password)


async def _login(session: ImapSession, context: CommandContext, user: str, password: str) -> None:
    if not session.plaintext_allowed():
        raise CommandError("NO", "[PRIVACYREQUIRED] Plaintext authentication disallowed")
    user = user.strip()
    authenticator = session.server.authenticator
    try:
        address = await session.server.guard.attempt(
            session.peer_host, user, lambda: authenticator.authenticate(user, password)
        )
    except LoginThrottled:
        raise CommandError("NO", "[UNAVAILABLE] Too many failed logins, try again later") from None
    if address is None:
        raise CommandError("NO", "[AUTHENTICATIONFAILED] Authentication failed")
    address = address.lower()
    # Read after the password check: a change in between ends the session at the next check.
    stamp = (await authenticator.credential_stamps([address])).get(address)
    if stamp is None:  # deactivated meanwhile
        raise CommandError("NO", "[AUTHENTICATIONFAILED] Authentication failed")
    if not session.server.register_login(session, address):
        raise CommandError("NO", "[LIMIT] Too many connections for this user")
    session.credential_stamp = stamp
    await session.open_mailbox(address)
    session.ok(context, "Logged in", "CAPABILITY " + " ".join(session.capabilities()))


#: Commands allowed in every state.
ANY_STATE: dict[str, Handler] = {
    "CAPABILITY": cmd_capability,
    "NOOP": cmd_noop,
    "LOGOUT": cmd_logout,
    "ID": cmd_id,
}
#: Commands allowed before login only.
NOT_AUTHENTICATED: dict[str, Handler] = {
    "STARTTLS": cmd_starttls,
    "AUTHENTICATE": cmd_authenticate,
    "LOGIN": cmd_login,
}

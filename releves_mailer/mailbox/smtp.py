"""Inbound SMTP (aiosmtpd, in the daemon's loop): local boxes only, never an open relay.

Mail for an address of the portal's domain that names an existing box is delivered into that
box's INBOX; anything else gets 550. Clients on the loopback may deliver without
authentication (the daemon's own tools, swaks); any other client must authenticate first,
and plaintext AUTH is only offered after STARTTLS.
"""

from __future__ import annotations

import asyncio
import binascii
import datetime as dt
import ipaddress
import logging
import ssl
from base64 import b64decode
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from email.utils import format_datetime
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session

from releves_mailer.clock import Clock
from releves_mailer.config import SmtpSection
from releves_mailer.interfaces import Authenticator
from releves_mailer.listeners import ConnectionLimiter, Listener

__all__ = ["InboundHandler", "SmtpServer"]

_log = logging.getLogger(__name__)
# aiosmtpd logs at DEBUG an AUTH answer it cannot decode (a password a misconfigured client
# sent raw, not in base64) and every command line at INFO: its own logger passes warnings.
logging.getLogger("mail.log").setLevel(logging.WARNING)

#: Delivers one message to several local addresses, all or none.
DeliverFunction = Callable[[Sequence[str], bytes], Awaitable[None]]


def _is_loopback(peer: Any) -> bool:
    host = peer[0] if isinstance(peer, tuple) and peer else ""
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


class InboundHandler:
    """aiosmtpd hooks: check recipients, authenticate, hand accepted mail to ``deliver``."""

    def __init__(
        self,
        authenticator: Authenticator,
        deliver: DeliverFunction,
        clock: Clock,
        hostname: str,
    ) -> None:
        self._authenticator = authenticator
        self._deliver = deliver
        self._clock = clock
        self._hostname = hostname

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not session.authenticated and not _is_loopback(session.peer):
            return "530 5.7.0 Authentication required"
        if not await self._authenticator.is_local_address(address):
            return "550 5.7.1 Relaying denied: only local mailboxes are served here"
        envelope.rcpt_tos.append(address.lower())
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        peer = session.peer[0] if isinstance(session.peer, tuple) else "unknown"
        received = (
            f"Received: from {session.host_name or 'unknown'} ([{peer}])\r\n"
            f"\tby {self._hostname} (releves-mailer); "
            f"{format_datetime(self._clock.now().astimezone(dt.UTC))}\r\n"
        ).encode("ascii", "replace")
        return_path = f"Return-Path: <{envelope.mail_from or ''}>\r\n".encode("ascii", "replace")
        try:
            await self._deliver(envelope.rcpt_tos, return_path + received + content)
        except Exception:
            _log.exception("delivery of an inbound message failed")
            return "451 4.3.0 Temporary failure, please retry later"
        _log.info(
            "delivered a message of %d bytes to %d box(es)", len(content), len(envelope.rcpt_tos)
        )
        return "250 2.0.0 Message accepted for delivery"

    async def _check(self, server: SMTP, login: bytes, password: bytes) -> AuthResult:
        address = await self._authenticator.authenticate(
            login.decode("utf-8", "replace"), password.decode("utf-8", "replace")
        )
        if address is None:
            await asyncio.sleep(1.0)  # slows down password guessing
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=address)

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        if len(args) == 1:
            answer = await server.challenge_auth("")
            if answer is MISSING:
                return AuthResult(success=False)
            assert isinstance(answer, bytes)
        else:
            try:
                answer = b64decode(args[1].encode(), validate=True)
            except (binascii.Error, ValueError):
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        parts = answer.split(b"\x00")
        if len(parts) != 3:
            await server.push("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        return await self._check(server, parts[1], parts[2])

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        if len(args) == 1:
            login = await server.challenge_auth(SMTP.AuthLoginUsernameChallenge)
        else:
            try:
                login = b64decode(args[1].encode(), validate=True)
            except (binascii.Error, ValueError):
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        if login is MISSING:
            return AuthResult(success=False)
        password = await server.challenge_auth(SMTP.AuthLoginPasswordChallenge)
        if password is MISSING:
            return AuthResult(success=False)
        assert isinstance(login, bytes) and isinstance(password, bytes)
        return await self._check(server, login, password)


def _never(*_: Any) -> AuthResult:
    # aiosmtpd wants a fallback authenticator; the handler's auth_* hooks do the real work.
    return AuthResult(success=False)


class SmtpServer:
    """The SMTP listener, bound inside the running event loop (no thread)."""

    def __init__(
        self,
        config: SmtpSection,
        handler: InboundHandler,
        ssl_context: ssl.SSLContext | None,
        hostname: str,
    ) -> None:
        self.config = config
        self.handler = handler
        self.ssl_context = ssl_context
        self.hostname = hostname
        self.port: int | None = None
        self.limiter = ConnectionLimiter(
            "SMTP", config.max_connections, config.max_connections_per_address
        )
        self._listener: Listener | None = None

    def _protocol(self) -> SMTP:
        return SMTP(
            self.handler,
            hostname=self.hostname,
            ident="releves-mailer ESMTP",
            data_size_limit=self.config.max_message_size,
            enable_SMTPUTF8=True,
            tls_context=self.ssl_context,
            auth_require_tls=True,
            authenticator=_never,
            loop=asyncio.get_running_loop(),
        )

    async def start(self, stack: AsyncExitStack | None = None) -> None:
        listener = Listener(
            self.limiter, self._protocol, refusal=b"421 4.7.0 Too many connections\r\n"
        )
        await listener.start(self.config.listen, self.config.port)
        self._listener = listener
        self.port = listener.port
        _log.info("SMTP listening on %s:%d", self.config.listen, self.port)
        if stack is not None:
            stack.push_async_callback(self.stop)

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.close()
            self._listener = None

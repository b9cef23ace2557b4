"""Inbound SMTP (aiosmtpd, in the daemon's loop): mail between the boxes of one account family.

Nobody may forge a statement through it:

- a client must authenticate (AUTH only after STARTTLS) unless its address is in
  ``smtp.trusted_networks`` (empty by default: the loopback is trusted no more);
- the dedicated boxes ``releves.<login>@`` are refused as recipients, whoever sends: they
  hold only what the daemon itself wrote (statements are stored directly, not over SMTP);
- an authenticated sender writes only to the boxes of its own account family (a primary
  and its secondaries), with its own address as envelope sender and in ``From:``/``Sender:``;
- an EDI deposit address ``edi.<login>@`` (when the daemon serves them) takes mail only from
  an authenticated sender of the account's family, and files the attachments as deposits;
- each box holds at most ``smtp.mailbox_quota`` bytes (552 beyond), each message at most
  ``smtp.max_message_size`` bytes (552), an envelope at most 100 recipients.

Password guessing over AUTH is limited by the login guard shared with IMAP and the portal.
A session past AUTH sends no more mail once its password changed or its account was
deactivated: each MAIL re-reads the credentials and a change ends the session (421).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.utils import format_datetime, getaddresses, make_msgid
from typing import Any, Protocol

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session

from releves_mailer.clock import Clock
from releves_mailer.config import SmtpSection
from releves_mailer.listeners import ConnectionLimiter, Listener
from releves_mailer.mailbox.sasl import SaslError, decode_response, parse_plain
from releves_mailer.mailbox.sink import MailDelivery, MessageSink
from releves_mailer.portfolio.logins import Authenticator, LoginGuard, LoginThrottled

__all__ = ["DepositInbox", "InboundHandler", "SmtpServer", "sink_deliverer"]

_log = logging.getLogger(__name__)
# aiosmtpd logs at DEBUG an AUTH answer it cannot decode (a password a misconfigured client
# sent raw, not in base64) and every command line at INFO: its own logger passes warnings.
logging.getLogger("mail.log").setLevel(logging.WARNING)

#: Delivers one message to several local addresses, all or none.
DeliverFunction = Callable[[Sequence[str], bytes], Awaitable[None]]
#: Bytes held by the box of an address (all its folders).
UsageFunction = Callable[[str], Awaitable[int]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_RECIPIENTS = 100


class DepositInbox(Protocol):
    """Addresses that file their mail's attachments instead of storing it (EDI deposits)."""

    async def family_of(self, address: str) -> int | None:
        """The account family ``address`` files for, or ``None`` when it is not such one."""
        ...

    async def file(self, address: str, raw: bytes) -> object:
        """File the message (answers the sender's account itself when an attachment is bad)."""
        ...


def sink_deliverer(sink: MessageSink, domain: str) -> DeliverFunction:
    """The ``deliver`` of :class:`InboundHandler` storing into ``sink``."""

    async def deliver(addresses: Sequence[str], raw: bytes) -> None:
        # A fresh idempotency key per accepted message: a mail accepted twice (a client
        # sending it again) is stored twice, as any SMTP server does.
        key = make_msgid("smtp", domain=domain)
        await sink.deliver_many([MailDelivery(address, raw, key) for address in addresses])

    return deliver


@dataclass(frozen=True, slots=True)
class _Login:
    """What AUTH leaves on the session: who, and the stamp of the credentials used."""

    address: str
    stamp: bytes


def _peer_host(session: Session) -> str:
    peer: Any = session.peer  # typed as str by aiosmtpd, a (host, port) tuple in fact
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


class InboundHandler:
    """aiosmtpd hooks: who may send, to which box, as whom; hands accepted mail to ``deliver``.

    Args:
        authenticator: checks AUTH credentials and says which boxes exist, in which family.
        deliver: stores one message in several boxes.
        clock: time of the ``Received:`` header.
        hostname: our name in the ``Received:`` header.
        guard: the login guard shared with IMAP and the portal.
        usage: bytes a box holds, for the quota.
        config: ``[smtp]`` (trusted networks, quota).
        deposits: the EDI deposit addresses (``edi.<login>@``), reached by an authenticated
            sender of the same family only.
    """

    def __init__(
        self,
        authenticator: Authenticator,
        deliver: DeliverFunction,
        clock: Clock,
        hostname: str,
        *,
        guard: LoginGuard,
        usage: UsageFunction,
        config: SmtpSection,
        deposits: DepositInbox | None = None,
    ) -> None:
        self._authenticator = authenticator
        self._deposits = deposits
        self._deliver = deliver
        self._clock = clock
        self._hostname = hostname
        self._guard = guard
        self._usage = usage
        self._trusted: tuple[Network, ...] = tuple(config.trusted_networks)
        self._quota = config.mailbox_quota

    def _is_trusted(self, session: Session) -> bool:
        try:
            ip = ipaddress.ip_address(_peer_host(session).split("%")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self._trusted)

    @staticmethod
    def _sender(session: Session) -> str | None:
        """The authenticated user's own address, or ``None`` for an unauthenticated client."""
        data: Any = session.auth_data  # what _check put in its AuthResult
        return data.address if session.authenticated and isinstance(data, _Login) else None

    async def _credentials_changed(self, session: Session) -> bool:
        """Whether the password of the session's login changed, or its account was
        deactivated, since its AUTH."""
        data: Any = session.auth_data
        if not session.authenticated or not isinstance(data, _Login):
            return False
        stamps = await self._authenticator.credential_stamps([data.address])
        return stamps.get(data.address) != data.stamp

    def _anonymous(self, session: Session) -> bool:
        """Neither authenticated nor from a trusted network: may not send at all."""
        return self._sender(session) is None and not self._is_trusted(session)

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self._anonymous(session):
            return "530 5.7.0 Authentication required"
        if await self._credentials_changed(session):
            # The reply goes out first: the close waits for the write buffer to drain.
            if server.transport is not None:
                asyncio.get_running_loop().call_soon(server.transport.close)
            return "421 4.7.0 Credentials changed or account deactivated"
        sender = self._sender(session)
        if sender is not None and address.lower() != sender:
            return "553 5.7.1 Sender address is not the address you authenticated as"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self._anonymous(session):
            return "530 5.7.0 Authentication required"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        box = await self._authenticator.local_box(address)
        if box is None and self._deposits is not None:
            return await self._deposit_rcpt(session, envelope, address)
        if box is None:
            return "550 5.7.1 Relaying denied: only local mailboxes are served here"
        if box.dedicated:
            return "550 5.7.1 This mailbox receives only the portal's own statements"
        sender = self._sender(session)
        if sender is not None:
            own = await self._authenticator.local_box(sender)
            if own is None or own.family_id != box.family_id:
                return "550 5.7.1 You may only write to the mailboxes of your own account"
        if await self._usage(box.address) >= self._quota:
            return "552 5.2.2 Mailbox full"
        envelope.rcpt_tos.append(box.address)
        return "250 2.1.5 Recipient OK"

    async def _deposit_rcpt(self, session: Session, envelope: Envelope, address: str) -> str:
        assert self._deposits is not None
        family = await self._deposits.family_of(address)
        if family is None:
            return "550 5.7.1 Relaying denied: only local mailboxes are served here"
        sender = self._sender(session)
        own = None if sender is None else await self._authenticator.local_box(sender)
        if own is None or own.family_id != family:
            return "550 5.7.1 Only an authenticated sender of the account may file deposits"
        self._deposit_targets(envelope).append(address.lower())
        envelope.rcpt_tos.append(address.lower())
        return "250 2.1.5 Recipient OK"

    @staticmethod
    def _deposit_targets(envelope: Envelope) -> list[str]:
        """The deposit addresses among ``envelope.rcpt_tos`` (kept on the envelope)."""
        targets: list[str] = envelope.__dict__.setdefault("deposit_targets", [])
        return targets

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        sender = self._sender(session)
        if sender is not None and not _headers_name_only(content, sender):
            return "550 5.7.1 From: and Sender: must be the address you authenticated as"
        deposits = self._deposit_targets(envelope)
        boxes = [address for address in envelope.rcpt_tos if address not in deposits]
        for address in boxes:
            if await self._usage(address) + len(content) > self._quota:
                return f"552 5.2.2 Mailbox full: the message does not fit in {address}"
        for target in deposits:
            assert self._deposits is not None
            try:
                await self._deposits.file(target, content)
            except Exception:
                _log.exception("filing of a mailed deposit failed")
                return "451 4.3.0 Temporary failure, please retry later"
        if not boxes:
            return "250 2.0.0 Message accepted for filing"
        received = (
            f"Received: from {session.host_name or 'unknown'} ([{_peer_host(session)}])\r\n"
            f"\tby {self._hostname} (releves-mailer); "
            f"{format_datetime(self._clock.now().astimezone(dt.UTC))}\r\n"
        ).encode("ascii", "replace")
        return_path = f"Return-Path: <{envelope.mail_from or ''}>\r\n".encode("ascii", "replace")
        try:
            await self._deliver(boxes, return_path + received + content)
        except Exception:
            _log.exception("delivery of an inbound message failed")
            return "451 4.3.0 Temporary failure, please retry later"
        _log.info("delivered a message of %d bytes to %d box(es)", len(content), len(boxes))
        return "250 2.0.0 Message accepted for delivery"

    async def _check(self, server: SMTP, username: str, password: str) -> AuthResult:
        assert server.session is not None
        try:
            address = await self._guard.attempt(
                _peer_host(server.session),
                username,
                lambda: self._authenticator.authenticate(username, password),
            )
        except LoginThrottled:
            return AuthResult(
                success=False,
                handled=False,
                message="454 4.7.0 Too many failed logins, try again later",
            )
        if address is None:
            return AuthResult(success=False, handled=False)  # aiosmtpd answers 535 5.7.8
        address = address.lower()
        # Read after the password check: a change in between shows at the next MAIL.
        stamp = (await self._authenticator.credential_stamps([address])).get(address)
        if stamp is None:  # deactivated meanwhile
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=_Login(address, stamp))

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        try:
            if len(args) == 1:
                answer = await server.challenge_auth("")  # decodes the base64 answer
                if answer is MISSING:
                    return AuthResult(success=False, handled=True)
                assert isinstance(answer, bytes)
            else:
                answer = decode_response(args[1].encode("ascii", "replace"))
            credentials = parse_plain(answer)
        except SaslError as error:
            await server.push(f"501 5.5.2 {error}")
            return AuthResult(success=False, handled=True)
        return await self._check(server, credentials.username, credentials.password)

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        if len(args) == 1:
            login = await server.challenge_auth(SMTP.AuthLoginUsernameChallenge)
        else:
            try:
                login = decode_response(args[1].encode("ascii", "replace"))
            except SaslError as error:
                await server.push(f"501 5.5.2 {error}")
                return AuthResult(success=False, handled=True)
        if login is MISSING:
            return AuthResult(success=False, handled=True)
        password = await server.challenge_auth(SMTP.AuthLoginPasswordChallenge)
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        assert isinstance(login, bytes) and isinstance(password, bytes)
        return await self._check(
            server, login.decode("utf-8", "replace"), password.decode("utf-8", "replace")
        )


def _headers_name_only(content: bytes, sender: str) -> bool:
    """Whether every address of ``From:`` and ``Sender:`` is ``sender`` (and From has one)."""
    headers = BytesHeaderParser().parsebytes(content)
    found = {
        address.lower()
        for name in ("From", "Sender")
        for _, address in getaddresses([str(value) for value in headers.get_all(name, [])])
    }
    return bool(headers.get_all("From")) and found == {sender}


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

    @property
    def serving(self) -> bool:
        """Listening and accepting (for ``/health``)."""
        return self._listener is not None and self._listener.serving

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.close()
            self._listener = None

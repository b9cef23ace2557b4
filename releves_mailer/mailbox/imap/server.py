"""IMAP listeners (plain with STARTTLS, and implicit TLS) inside the daemon's event loop."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections import defaultdict
from contextlib import AsyncExitStack

from releves_mailer.clock import Clock
from releves_mailer.config import ImapSection
from releves_mailer.listeners import ConnectionLimiter, Listener
from releves_mailer.mailbox.contracts import MailStore
from releves_mailer.mailbox.imap.session import ImapSession
from releves_mailer.mailbox.imap.sort import SortKeyCache
from releves_mailer.mailbox.imap.view import ViewSeeds
from releves_mailer.portfolio.logins import Authenticator, LoginGuard

__all__ = ["ImapServer"]

_log = logging.getLogger(__name__)


class ImapServer:
    """The IMAP service: a plain listener (STARTTLS) and an IMAPS listener.

    Args:
        config: the ``[imap]`` section; port 0 binds a free port (see ``port``/``tls_port``).
        store: the message store.
        authenticator: checks credentials, gives the canonical address.
        ssl_context: server TLS context; ``None`` disables STARTTLS and the IMAPS port.
        clock: time source.
        guard: the login guard shared with SMTP AUTH and the portal (limits and delays).
        poll_interval: seconds between checks for changes made by other processes while a
            client idles.
    """

    def __init__(
        self,
        config: ImapSection,
        store: MailStore,
        authenticator: Authenticator,
        ssl_context: ssl.SSLContext | None,
        clock: Clock,
        *,
        guard: LoginGuard,
        poll_interval: float = 2.0,
    ) -> None:
        self.config = config
        self.store = store
        self.authenticator = authenticator
        self.ssl_context = ssl_context
        self.clock = clock
        self.poll_interval = poll_interval
        self.guard = guard
        self.port: int | None = None
        self.tls_port: int | None = None
        self.limiter = ConnectionLimiter(
            "IMAP", config.max_connections, config.max_connections_per_address
        )
        self._listeners: list[Listener] = []
        self._sessions: set[ImapSession] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._per_login: dict[str, set[ImapSession]] = defaultdict(set)
        self._credentials_task: asyncio.Task[None] | None = None
        #: SORT keys of the messages already sorted, shared by every session.
        self.sort_keys = SortKeyCache()
        self.view_seeds = ViewSeeds()

    @staticmethod
    def is_loopback(host: str) -> bool:
        try:
            return ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            return False

    def register_login(self, session: ImapSession, address: str) -> bool:
        sessions = self._per_login[address]
        if len(sessions) >= self.config.max_connections_per_login:
            return False
        sessions.add(session)
        return True

    def forget(self, session: ImapSession) -> None:
        self._sessions.discard(session)
        if session.user is not None:
            sessions = self._per_login.get(session.user)
            if sessions is not None:
                sessions.discard(session)
                if not sessions:
                    del self._per_login[session.user]

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, tls: bool
    ) -> None:
        session = ImapSession(self, reader, writer, tls=tls)
        self._sessions.add(session)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await session.run()
        except Exception:
            _log.exception("IMAP session crashed")
        finally:
            self.forget(session)
            if task is not None:
                self._tasks.discard(task)

    async def start(self, stack: AsyncExitStack | None = None) -> None:
        """Bind the listeners; with ``stack``, :meth:`stop` runs when it unwinds."""
        limit = self.config.max_line_length + 1024

        def streams(tls: bool) -> asyncio.StreamReaderProtocol:
            # What asyncio.start_server builds for each connection.
            async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await self._serve(reader, writer, tls=tls)

            return asyncio.StreamReaderProtocol(asyncio.StreamReader(limit=limit), serve)

        plain = Listener(
            self.limiter, lambda: streams(False), refusal=b"* BYE Too many connections\r\n"
        )
        self._listeners.append(plain)
        await plain.start(self.config.listen, self.config.port)
        self.port = plain.port
        _log.info("IMAP listening on %s", plain.where())
        if self.ssl_context is not None:
            secure = Listener(
                self.limiter,
                lambda: streams(True),
                ssl_context=self.ssl_context,
                ssl_handshake_timeout=30,
            )
            self._listeners.append(secure)
            await secure.start(self.config.listen, self.config.tls_port)
            self.tls_port = secure.port
            _log.info("IMAPS listening on %s", secure.where())
        self._credentials_task = asyncio.create_task(self._check_credentials_forever())
        if stack is not None:
            stack.push_async_callback(self.stop)

    @property
    def serving(self) -> bool:
        """Every listener (IMAP, IMAPS) bound and accepting (for ``/health``)."""
        return bool(self._listeners) and all(listener.serving for listener in self._listeners)

    async def check_credentials(self) -> int:
        """End the sessions whose password changed or whose account was deactivated since
        they logged in (the change may come from any process); how many were ended."""
        addresses = list(self._per_login)
        if not addresses:
            return 0
        stamps = await self.authenticator.credential_stamps(addresses)
        ending = [
            session
            for address in addresses
            for session in self._per_login.get(address, ())
            if session.credential_stamp != stamps.get(address) and not session.closing
        ]
        # At once: a client that does not read its BYE holds its own shutdown only.
        await asyncio.gather(
            *(s.shutdown(b"Credentials changed or account deactivated") for s in ending)
        )
        if ending:
            _log.info("IMAP: %d session(s) ended, credentials changed", len(ending))
        return len(ending)

    async def _check_credentials_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.credentials_check_seconds)
            try:
                await self.check_credentials()
            except Exception:  # a database hiccup: the sessions stay, the next check retries
                _log.exception("IMAP: could not check the sessions' credentials")

    async def stop(self) -> None:
        """Stop listening, say BYE to every session and wait for them to end."""
        if self._credentials_task is not None:
            self._credentials_task.cancel()
            self._credentials_task = None
        for listener in self._listeners:
            await listener.close()
        self._listeners.clear()
        for session in list(self._sessions):
            await session.shutdown()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=5)
            for task in pending:
                task.cancel()

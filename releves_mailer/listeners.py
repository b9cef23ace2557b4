"""Accepting TCP connections under caps: per service, per client address, and descriptors.

At the package root: the IMAP, SMTP and HTTP servers (``mailbox/`` and ``web/``) share it.

Every listener of the daemon (IMAP, IMAPS, SMTP, HTTP) accepts through :class:`Listener`
instead of ``loop.create_server``, so that one place decides who may take a descriptor:

* a service holds at most ``max_connections`` connections, and one client address at most
  ``max_connections_per_address`` of them (an idle flood from one host cannot starve the
  others);
* whatever the caps, a connection is refused when the process is short of descriptors: a
  new socket's number is the lowest free descriptor, so a number within
  :func:`descriptor_headroom` of ``RLIMIT_NOFILE`` proves that many are open, and what is
  left is kept for the database, the message files and the log;
* a refused client gets a short protocol answer (``* BYE``, ``421``, ``503``) and is closed,
  a moment later (so that it reads the answer rather than a reset) unless descriptors run
  short: then every refused socket still open is closed at once, before a new client is
  turned away for want of descriptors;
* when ``accept()`` itself fails for lack of descriptors or memory (``EMFILE``, ``ENFILE``,
  ``ENOBUFS``, ``ENOMEM``), the listener pauses a moment and logs one line a minute,
  instead of asyncio's traceback at every attempt.

A connection counts until its socket is closed, whoever closes it (the protocol, a TLS
layer put on top later, the server stopping): the limiter keeps the accepted socket and
forgets it once its descriptor is gone, so no protocol needs to report back.

:func:`reserve_ports` serves the one caller that must name a port before its server binds
it (the HTTP port chosen for ``--http-port 0``, which the portal's links carry).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "ConnectionLimiter",
    "Listener",
    "RateLimitedLog",
    "close_lingering_refusals",
    "descriptor_headroom",
    "open_file_limit",
]

_log = logging.getLogger(__name__)

#: ``accept()`` errors that mean "no descriptor or memory left now": wait, then retry.
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: How long a listener stops accepting after running out of descriptors.
EXHAUSTED_PAUSE = 0.5
#: Refused sockets are kept open this long after their refusal (so that the client reads it
#: instead of a reset), at most :data:`MAX_LINGERING` at a time in the process (so refusals
#: cost little).
REFUSAL_LINGER = 1.0
MAX_LINGERING = 32
#: The refused sockets kept open, each with the timer that closes it. Process-wide, like the
#: descriptors they hold.
_lingering: dict[socket.socket, asyncio.TimerHandle] = {}
#: Seconds between two log lines about the same trouble of one listener.
LOG_EVERY = 60.0

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


def open_file_limit() -> int | None:
    """The process's soft ``RLIMIT_NOFILE``, or ``None`` when unlimited or unknown."""
    try:
        import resource
    except ImportError:  # not a Unix: no such limit to respect
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def descriptor_headroom(limit: int) -> int:
    """Descriptors kept free of client connections: an eighth of the limit, at least 64."""
    return max(64, limit // 8)


class RateLimitedLog:
    """Logs one warning per :data:`LOG_EVERY` seconds and counts the ones it held back.

    Times come from the event loop's monotonic clock, not the business clock: this only
    paces log lines, and must keep pacing when tests freeze the business clock.
    """

    def __init__(self, logger: logging.Logger, every: float = LOG_EVERY) -> None:
        self.logger = logger
        self.every = every
        self._last: float | None = None
        self._held = 0

    def warning(self, message: str, *args: object) -> None:
        now = asyncio.get_running_loop().time()
        if self._last is not None and now - self._last < self.every:
            self._held += 1
            return
        if self._held:
            message += " (%d more since the last report)"
            args = (*args, self._held)
        self.logger.warning(message, *args)
        self._last = now
        self._held = 0


@dataclass
class ConnectionLimiter:
    """Counts the open connections of one service, in total and per client address."""

    service: str
    max_connections: int
    max_per_address: int
    #: Soft ``RLIMIT_NOFILE`` (``None``: unlimited); read once, at creation.
    file_limit: int | None = field(default_factory=open_file_limit)
    #: Connections admitted and refused since creation (read by the metrics).
    admitted: int = field(default=0, init=False)
    refused: int = field(default=0, init=False)
    _open: dict[socket.socket, str] = field(default_factory=dict, init=False, repr=False)
    _per_address: Counter[str] = field(default_factory=Counter, init=False, repr=False)

    @property
    def count(self) -> int:
        self._forget_closed()
        return len(self._open)

    def per_address(self) -> Counter[str]:
        """Open connections by client address."""
        self._forget_closed()
        return Counter(self._per_address)

    def _forget_closed(self) -> None:
        for sock in [sock for sock in self._open if sock.fileno() == -1]:
            address = self._open.pop(sock)
            self._per_address[address] -= 1
            if self._per_address[address] <= 0:
                del self._per_address[address]

    def _short_of_descriptors(self, sock: socket.socket) -> bool:
        limit = self.file_limit
        if limit is None:
            return False
        ceiling = limit - descriptor_headroom(limit)
        if sock.fileno() < ceiling:
            return False
        # Refusals still lingering are a courtesy: a client to serve comes first.
        return not (close_lingering_refusals() and _lowest_free(sock) < ceiling)

    def _full(self, address: str) -> bool:
        return (
            len(self._open) >= self.max_connections
            or self._per_address[address] >= self.max_per_address
        )

    def admit(self, sock: socket.socket, address: str) -> str | None:
        """Count ``sock`` from ``address`` in, or say (in English, for the log) why not."""
        reason = self._refusal(sock, address)
        if reason is not None:
            self.refused += 1
            return reason
        self._open[sock] = address
        self._per_address[address] += 1
        self.admitted += 1
        return None

    def _refusal(self, sock: socket.socket, address: str) -> str | None:
        if self._short_of_descriptors(sock):
            return "the process is short of file descriptors"
        if self._full(address):
            # Counts are only refreshed when they matter: a cap looks reached.
            self._forget_closed()
            if len(self._open) >= self.max_connections:
                return f"{self.max_connections} connections open"
            if self._per_address[address] >= self.max_per_address:
                return f"{self.max_per_address} connections open from {address}"
        return None


class Listener:
    """Accepts on the sockets bound for ``host:port`` and hands admitted ones to a protocol.

    Args:
        limiter: the service's caps (shared by its listeners, e.g. IMAP and IMAPS).
        protocol_factory: builds the protocol of one connection (as for ``create_server``).
        refusal: bytes sent to a refused client before closing (empty: just close).
        ssl_context: wrap admitted connections in TLS (implicit TLS listeners).
    """

    def __init__(
        self,
        limiter: ConnectionLimiter,
        protocol_factory: ProtocolFactory,
        *,
        refusal: bytes = b"",
        ssl_context: ssl.SSLContext | None = None,
        ssl_handshake_timeout: float | None = None,
        backlog: int = 100,
    ) -> None:
        self.limiter = limiter
        self.protocol_factory = protocol_factory
        self.refusal = refusal
        self.ssl_context = ssl_context
        self.ssl_handshake_timeout = ssl_handshake_timeout
        self.backlog = backlog
        self.sockets: list[socket.socket] = []
        self._accepting: set[asyncio.Task[None]] = set()
        self._handshakes: set[asyncio.Task[None]] = set()
        self._exhausted_log = RateLimitedLog(_log)
        self._refused_log = RateLimitedLog(_log)

    @property
    def port(self) -> int:
        return int(self.sockets[0].getsockname()[1])

    @property
    def serving(self) -> bool:
        """Bound and accepting: every socket open and its accept loop still running."""
        return (
            bool(self.sockets)
            and all(sock.fileno() != -1 for sock in self.sockets)
            and len(self._accepting) == len(self.sockets)
            and not any(task.done() for task in self._accepting)
        )

    def where(self) -> str:
        """The bound addresses, for the log: ``127.0.0.1:1143, [::1]:1143``."""
        names = []
        for sock in self.sockets:
            host, port = sock.getsockname()[:2]
            names.append(f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}")
        return ", ".join(names)

    async def start(self, host: str, port: int) -> None:
        """Bind every address ``host`` resolves to (port 0: the first one picks the port)."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        try:
            for family, kind, proto, _name, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                self.sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    # Like asyncio: the IPv6 socket must not also take the IPv4 addresses.
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if port == 0 and len(self.sockets) > 1:
                    address = (address[0], self.port, *address[2:])
                try:
                    sock.bind(address)
                except OSError as error:
                    # asyncio's wording: the address tells the command line which server.
                    raise OSError(
                        error.errno,
                        f"error while attempting to bind on address {address[:2]!r}: "
                        f"{(error.strerror or '').lower()}",
                    ) from None
                sock.listen(self.backlog)
                sock.setblocking(False)
        except BaseException:
            for sock in self.sockets:
                sock.close()
            self.sockets.clear()
            raise
        for sock in self.sockets:
            task = asyncio.create_task(self._accept_loop(sock), name=f"accept {self.where()}")
            self._accepting.add(task)

    async def close(self) -> None:
        """Stop accepting (connections already handed over are the protocol's to end)."""
        tasks = self._accepting | self._handshakes
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._accepting.clear()
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()

    async def _accept_loop(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(listening)
            except OSError as error:
                if error.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EINTR):
                    continue  # the client gave up before we took it: nothing to say
                if error.errno in _EXHAUSTED:
                    self._exhausted_log.warning(
                        "%s: cannot accept connections (%s): pausing for %.1f s",
                        self.limiter.service,
                        errno.errorcode.get(error.errno or 0, str(error.errno)),
                        EXHAUSTED_PAUSE,
                    )
                else:
                    self._exhausted_log.warning(
                        "%s: accept() failed: %s", self.limiter.service, error
                    )
                await asyncio.sleep(EXHAUSTED_PAUSE)
                continue
            address = str(peer[0]) if isinstance(peer, tuple) and peer else "local"
            reason = self.limiter.admit(conn, address)
            if reason is not None:
                self._refused_log.warning(
                    "%s: refused a connection from %s: %s", self.limiter.service, address, reason
                )
                self._refuse(conn)
                continue
            self._hand_over(conn)

    def _hand_over(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()

        async def connect() -> None:
            try:
                await loop.connect_accepted_socket(
                    self.protocol_factory,
                    conn,
                    ssl=self.ssl_context,
                    ssl_handshake_timeout=self.ssl_handshake_timeout,
                )
            except (OSError, ssl.SSLError, TimeoutError) as error:
                _log.debug("%s: connection not set up: %s", self.limiter.service, error)
                conn.close()
            finally:
                self._handshakes.discard(task)

        task = asyncio.create_task(connect())
        self._handshakes.add(task)

    def _refuse(self, conn: socket.socket) -> None:
        """Send the short refusal (never blocking) and close, soon or at once."""
        with contextlib.suppress(OSError):
            conn.setblocking(False)
            if self.refusal and self.ssl_context is None:
                conn.send(self.refusal)
            conn.shutdown(socket.SHUT_WR)
        if len(_lingering) >= MAX_LINGERING:
            conn.close()
            return

        def close() -> None:
            _lingering.pop(conn, None)
            conn.close()

        _lingering[conn] = asyncio.get_running_loop().call_later(REFUSAL_LINGER, close)


def close_lingering_refusals() -> int:
    """Close every refused socket still lingering; how many there were."""
    count = len(_lingering)
    for conn, timer in _lingering.items():
        timer.cancel()
        conn.close()
    _lingering.clear()
    return count


def _lowest_free(sock: socket.socket) -> int:
    """The lowest free descriptor number (what the kernel gives the next one): as many
    descriptors are open below it."""
    probe = os.dup(sock.fileno())
    os.close(probe)
    return probe


def reserve_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free ports of ``host``, held for a server that will bind them.

    A port merely probed and released can be handed by the kernel to any other socket before
    the server binds it ("Address already in use", seen on loaded machines). So each port is
    left in TIME_WAIT, its side of a local connection closed first: the kernel gives it to
    no port-0 bind or outgoing connection for a minute, while a listener that binds it with
    SO_REUSEADDR (:class:`Listener`, asyncio's, aiosmtpd's, Dovecot's) gets it at once.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # A wildcard address listens on the loopback too, and loopback is where we connect.
    target = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
    listeners: list[socket.socket] = []
    try:
        for _ in range(count):
            listening = socket.socket(family, socket.SOCK_STREAM)
            listeners.append(listening)
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listening.bind((host, 0))
            listening.listen(1)
            port = int(listening.getsockname()[1])
            with socket.create_connection((target, port)):
                accepted, _ = listening.accept()
                # The side that closes first keeps the TIME_WAIT: the accepted one, on our port.
                accepted.close()
        return [int(listening.getsockname()[1]) for listening in listeners]
    finally:
        for listening in listeners:
            listening.close()


def reserve_port(host: str = "127.0.0.1") -> int:
    """One free port of ``host``, held for the server that will bind it (:func:`reserve_ports`)."""
    return reserve_ports(1, host)[0]

"""systemd's notify protocol: readiness, status, watchdog pings and stopping, over the
datagram socket named by ``$NOTIFY_SOCKET``.

The protocol is a few ``KEY=value`` lines per datagram (``sd_notify(3)``); without
``$NOTIFY_SOCKET`` (not started by systemd) every call does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["Notifier", "watchdog_interval"]

_log = logging.getLogger(__name__)


class Notifier:
    """Sends notify datagrams to ``address`` (a path, or ``@name`` for an abstract socket)."""

    def __init__(self, address: str | None) -> None:
        self.address: str | None = None
        self._socket: socket.socket | None = None
        if address and address[0] in "/@":
            # Abstract names start with a NUL byte on the wire; systemd spells it '@'.
            self.address = "\0" + address[1:] if address.startswith("@") else address
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        elif address:
            _log.warning("NOTIFY_SOCKET ignored: not a path or abstract socket name")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        return cls((os.environ if environ is None else environ).get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def notify(self, **fields: str | int) -> None:
        """Send ``KEY=value`` lines (``notify(READY=1, STATUS="prêt")``); never raises."""
        if self._socket is None or self.address is None:
            return
        message = "\n".join(
            f"{key}={str(value).replace(chr(10), ' ')}" for key, value in fields.items()
        )
        try:
            self._socket.sendto(message.encode(), self.address)
        except OSError as error:
            # systemd gone or the socket full: the service itself must go on.
            _log.warning("systemd notification failed: %s", error.strerror or error)

    async def ping_watchdog(self, interval: float, stop: asyncio.Event) -> None:
        """Send ``WATCHDOG=1`` every ``interval`` seconds from this event loop until ``stop``.

        Pinging from the loop itself is the point: a loop stalled longer than the watchdog
        timeout stops the pings, and systemd kills and restarts the daemon.
        """
        while not stop.is_set():
            self.notify(WATCHDOG=1)
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                continue

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between pings (half of ``$WATCHDOG_USEC``), or None when no watchdog is set.

    ``$WATCHDOG_PID``, when present, must be this process: the variables were meant for
    another one otherwise (``sd_watchdog_enabled(3)``).
    """
    environ = os.environ if environ is None else environ
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2_000_000

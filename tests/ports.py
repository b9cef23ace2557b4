"""Free local ports for the harnesses that must name a port before a server binds it.

Most servers of the tests bind port 0 and report the port they got. Some cannot: a server
whose own configuration holds its port (a Dovecot, a daemon started as a process, a portal
whose public URL the fake Powens must know first). A port merely probed and released can
be handed by the kernel to any other socket of the loaded test machine before the server
binds it (seen: "Address already in use" in a PostgreSQL pass). So each port given here is
left in TIME_WAIT, its side of a connection closed first: the kernel hands it to no other
port-0 bind or outgoing connection for a minute, while a server that binds it with
SO_REUSEADDR (ours, asyncio's, aiosmtpd's, Dovecot's) gets it at once.
"""

from __future__ import annotations

import socket

__all__ = ["free_port", "free_ports"]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports of ``host`` that nothing listens on, held in TIME_WAIT."""
    listeners: list[socket.socket] = []
    try:
        for _ in range(count):
            listening = socket.socket()
            listeners.append(listening)
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listening.bind((host, 0))
            listening.listen(1)
            with socket.create_connection(listening.getsockname()[:2]):
                accepted, _ = listening.accept()
                # The side that closes first keeps the TIME_WAIT: the accepted one, on our port.
                accepted.close()
        return [int(listening.getsockname()[1]) for listening in listeners]
    finally:
        for listening in listeners:
            listening.close()


def free_port(host: str = "127.0.0.1") -> int:
    """One port of ``host`` that nothing listens on, held in TIME_WAIT (see the module)."""
    return free_ports(1, host)[0]

"""The harnesses' free ports are held against other binds, and free for our servers."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest

from tests.ports import free_port, free_ports


def test_ports_are_distinct_and_nothing_listens_on_them() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_a_port_is_held_against_a_plain_bind() -> None:
    """What keeps a port-0 bind elsewhere from being given it: it is still in use."""
    port = free_port()
    with socket.socket() as other, pytest.raises(OSError) as caught:
        other.bind(("127.0.0.1", port))
    assert caught.value.errno == errno.EADDRINUSE


async def test_a_server_binds_it_at_once() -> None:
    port = free_port()
    server = await asyncio.get_running_loop().create_server(asyncio.Protocol, "127.0.0.1", port)
    try:
        assert server.sockets[0].getsockname()[1] == port
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()

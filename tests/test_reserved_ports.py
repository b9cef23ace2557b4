"""Reserved ports are held against other binds, and free for the server they are for."""

from __future__ import annotations

import asyncio
import errno
import socket
from pathlib import Path

import pytest

from releves_mailer.config import load_config
from releves_mailer.daemon.main import ListenOverrides
from releves_mailer.listeners import reserve_port, reserve_ports
from tests.datadirs import initialised_data_dir


def test_ports_are_distinct_and_nothing_listens_on_them() -> None:
    ports = reserve_ports(5)
    assert len(set(ports)) == 5
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=60).close()


def test_a_port_is_held_against_a_plain_bind() -> None:
    """What keeps a port-0 bind elsewhere from being given it: it is still in use."""
    port = reserve_port()
    with socket.socket() as other, pytest.raises(OSError) as caught:
        other.bind(("127.0.0.1", port))
    assert caught.value.errno == errno.EADDRINUSE


async def test_a_server_binds_it_at_once() -> None:
    port = reserve_port()
    server = await asyncio.get_running_loop().create_server(asyncio.Protocol, "127.0.0.1", port)
    try:
        assert server.sockets[0].getsockname()[1] == port
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("host", "family"), [("::1", socket.AF_INET6), ("0.0.0.0", socket.AF_INET)]
)
def test_ipv6_and_wildcard_hosts_are_held_too(host: str, family: socket.AddressFamily) -> None:
    port = reserve_port(host)
    with socket.socket(family) as other, pytest.raises(OSError) as caught:
        other.bind((host, port))
    assert caught.value.errno == errno.EADDRINUSE


async def test_the_daemons_chosen_http_port_is_held_until_it_binds(tmp_path: Path) -> None:
    """``--http-port 0`` must name the port before binding it (the portal's links carry it)."""
    config = await initialised_data_dir(tmp_path, "releves.example")
    chosen = ListenOverrides("127.0.0.1", http_port=0).apply(load_config(config.source)).http
    assert chosen.port != 0
    assert chosen.public_url == f"http://127.0.0.1:{chosen.port}"
    with socket.socket() as other, pytest.raises(OSError) as caught:
        other.bind(("127.0.0.1", chosen.port))
    assert caught.value.errno == errno.EADDRINUSE

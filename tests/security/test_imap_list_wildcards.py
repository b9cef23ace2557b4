"""Issue 13 point 1: LIST wildcards must not freeze the event loop (no backtracking)."""

from __future__ import annotations

import asyncio

import pytest

from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.imap.wildcard import ListPattern
from tests.mailbox.conftest import (  # noqa: F401  (fixtures)
    RawClient,
    ca,
    server_factory,
    server_ssl,
    store,
)

pytestmark = pytest.mark.once

LONG = "a" * 300


async def probe_until_done(other: RawClient, task: asyncio.Task[list[bytes]]) -> int:
    """NOOPs on ``other``, one after the other, while ``task`` runs; returns how many were
    answered. The server shares this test's event loop: were the LIST computed in one go
    (a backtracking match of these patterns would run for years), no NOOP would ever be
    answered and the probe's patience (two minutes, a hang guard, not a speed bound) ends
    the test."""
    answered = 0
    while not task.done() or answered == 0:
        await asyncio.sleep(0.02)
        tag = f"n{answered}".encode()
        await other.send(tag + b" NOOP\r\n")
        reply = await asyncio.wait_for(other.until_tagged(tag), 120)
        assert reply[-1].startswith(tag + b" OK"), reply
        answered += 1
    return answered


async def test_list_attack_answers_and_other_clients_are_served(server_factory) -> None:  # noqa: F811
    server: ImapServer = await server_factory()
    attacker = await RawClient.connect(server.port)
    other = await RawClient.connect(server.port)
    try:
        await attacker.ok(f"c1 CREATE {LONG}")
        await attacker.ok("c2 CREATE a/aaaaaaab")
        # The regex took 19.7 s for four stars over 300 "a"; seven would take centuries.
        await attacker.send(b'l1 LIST "" "*a*a*a*a*a*a*a*b"\r\n')
        listing = asyncio.create_task(attacker.until_tagged(b"l1"))
        await probe_until_done(other, listing)
        listed = await asyncio.wait_for(listing, 120)
        assert listed[-1].startswith(b"l1 OK"), listed
        # "a/aaaaaaab" is the one folder the pattern names: the long one does not end in b.
        assert [line for line in listed if line.startswith(b"* LIST")] == [
            b'* LIST (\\HasNoChildren) "/" a/aaaaaaab\r\n'
        ]
        # The same shape that does match the long name.
        listed = await attacker.ok('l2 LIST "" "*a*a*a*a*a"')
        names = {line.rsplit(b" ", 1)[1].strip() for line in listed if line.startswith(b"* LIST")}
        assert names == {LONG.encode()}
        listed = await attacker.ok('l3 LIST "" "%"')
        names = {line.rsplit(b" ", 1)[1].strip() for line in listed if line.startswith(b"* LIST")}
        assert names == {b"INBOX", LONG.encode(), b"a"}
        assert any(b"\\HasChildren" in line and line.endswith(b" a\r\n") for line in listed)
    finally:
        await attacker.close()
        await other.close()


async def test_many_long_patterns_stay_responsive(server_factory) -> None:  # noqa: F811
    """A LIST of a thousand backtracking patterns over many folders, and a NOOP alongside."""
    server: ImapServer = await server_factory()
    attacker = await RawClient.connect(server.port)
    other = await RawClient.connect(server.port)
    try:
        for index in range(20):
            await attacker.ok(f"c{index} CREATE {'a' * (200 + index)}")
        patterns = " ".join(f'"*a*a*a*a*a*a*b{index}"' for index in range(1000))
        await attacker.send(f'l1 LIST "" ({patterns})\r\n'.encode())
        listing = asyncio.create_task(attacker.until_tagged(b"l1"))
        await probe_until_done(other, listing)
        listed = await asyncio.wait_for(listing, 60)
        assert listed[-1].startswith(b"l1 OK") and len(listed) == 1, listed[-3:]
    finally:
        await attacker.close()
        await other.close()


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("*", "a/b/c", True),
        ("%", "a/b", False),
        ("%", "a", True),
        ("a/%", "a/b", True),
        ("a/%", "a/b/c", False),
        ("a/*", "a/b/c", True),
        ("a%c", "abbc", True),
        ("a%c", "ab/c", False),
        ("a*c", "ab/c", True),
        ("%*", "x/y", True),
        ("*%", "x/y", True),
        ("%%", "x/y", False),
        ("inbox", "INBOX", True),
        ("InBox/%", "INBOX/x", True),
        ("inboxes", "INBOXES", False),
        ("Archive", "archive", False),
        ("", "", True),
        ("a", "", False),
        ("*a*a*a*a*b", LONG, False),
        ("*a*a*a*a*a", LONG, True),
    ],
)
def test_pattern_semantics(pattern: str, name: str, expected: bool) -> None:
    assert ListPattern(pattern).matches(name) is expected


async def test_matching_is_linear() -> None:
    """A pattern of 3,000 wildcards against 900 characters: the automaton answers (in
    milliseconds); a backtracking matcher would not answer before the end of the universe,
    so the minute of patience is a hang guard, not a speed bound."""
    pattern = ListPattern("*a" * 3000 + "b")
    assert not await asyncio.wait_for(asyncio.to_thread(pattern.matches, "a" * 900), 60)

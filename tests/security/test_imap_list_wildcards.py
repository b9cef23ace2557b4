"""Issue 13 point 1: LIST wildcards must not freeze the event loop (no backtracking)."""

from __future__ import annotations

import asyncio
import time

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

LONG = "a" * 300


async def probe_until_done(other: RawClient, task: asyncio.Task[list[bytes]]) -> int:
    """NOOPs on ``other``, one after the other, while ``task`` runs: each round (a short
    pause, a NOOP, its answer) must take less than 5 s of wall time. The server shares this
    test's event loop, so a frozen loop would hold back the probe's own timers too: the
    rounds are measured by the clock. Returns how many NOOPs were answered."""
    answered = 0
    while not task.done() or answered == 0:
        started = time.monotonic()
        await asyncio.sleep(0.02)
        tag = f"n{answered}".encode()
        await other.send(tag + b" NOOP\r\n")
        reply = await asyncio.wait_for(other.until_tagged(tag), 120)
        waited = time.monotonic() - started
        assert reply[-1].startswith(tag + b" OK"), reply
        assert waited < 5, f"the event loop stalled {waited:.1f} s"
        answered += 1
    return answered


async def test_list_attack_answers_and_other_clients_are_served(server_factory) -> None:  # noqa: F811
    server: ImapServer = await server_factory()
    attacker = await RawClient.connect(server.port)
    other = await RawClient.connect(server.port)
    try:
        await attacker.ok(f"c1 CREATE {LONG}")
        await attacker.ok("c2 CREATE a/aaab")
        # Took 19.7 s with the regex: `.*a.*a.*a.*a.*b` backtracks over 300 "a".
        await attacker.send(b'l1 LIST "" "*a*a*a*a*b"\r\n')
        listing = asyncio.create_task(attacker.until_tagged(b"l1"))
        await probe_until_done(other, listing)
        listed = await asyncio.wait_for(listing, 120)
        assert listed[-1].startswith(b"l1 OK"), listed
        # "a/aaab" is the one folder the pattern names: the long one does not end in b.
        assert [line for line in listed if line.startswith(b"* LIST")] == [
            b'* LIST (\\HasNoChildren) "/" a/aaab\r\n'
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


def test_matching_is_linear() -> None:
    """A pattern of 6,000 wildcards against 900 characters: milliseconds, not ages."""
    started = time.process_time()
    assert not ListPattern("*a" * 3000 + "b").matches("a" * 900)
    # Generous: the regex needed hours; the automaton a few milliseconds.
    assert time.process_time() - started < 2

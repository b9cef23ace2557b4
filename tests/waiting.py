"""Waiting in tests for what must happen: polled, with a hang guard of a minute, never timed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

#: Seconds a test waits for what must come: a hang guard on a loaded CI machine, not a
#: measure of speed.
WAIT = 60.0


async def polls(
    what: str | Callable[[], str], *, every: float = 0.1, limit: float = WAIT
) -> AsyncIterator[None]:
    """One turn per look at a condition, ``every`` seconds apart; the caller breaks out (or
    returns) once it holds. Past ``limit`` seconds the test fails with ``what`` (a text, or
    a function that tells what was seen instead)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        yield
        if loop.time() >= deadline:
            raise AssertionError(what if isinstance(what, str) else what())
        await asyncio.sleep(every)

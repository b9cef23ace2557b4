"""Waiting for the first of several asyncio events, or a timeout (the daemon's loops).

At the package root: the daemon's loops and the outbox (``notify/``) wait the same way.
"""

from __future__ import annotations

import asyncio

__all__ = ["wait_any"]


async def wait_any(*events: asyncio.Event, seconds: float) -> None:
    """Return when any of ``events`` is set, or after ``seconds``."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()

"""Garbage collector thresholds of a long-running server process.

The daemon holds many long-lived objects (mailbox message lists, sort keys, cached dates and
sizes). With CPython's default thresholds (700, 10, 10) a command that builds ten thousand
small objects (a SORT result, the FETCH of a big box) sets off several collections, and the
oldest generation, scanned whole, was half of the CPU time of a ``UID SORT (DATE)`` over
10,000 messages (bench/imap_bench.py). The young generation is allowed to grow to
``YOUNG_THRESHOLD`` objects before a collection; reference counting still frees everything
that is not in a cycle at once, so memory only waits longer for cyclic garbage.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "tune_garbage_collector"]

YOUNG_THRESHOLD = 20_000


def tune_garbage_collector() -> None:
    """Raise the young generation's threshold (idempotent; the other two are kept)."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)

"""The daemon's garbage collector thresholds: the young generation raised, the rest kept."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from releves_mailer.daemon.gc_tuning import YOUNG_THRESHOLD, tune_garbage_collector


@pytest.fixture
def restored_thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield before
    gc.set_threshold(*before)


def test_young_threshold_raised_and_older_ones_kept(
    restored_thresholds: tuple[int, int, int],
) -> None:
    tune_garbage_collector()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)
    tune_garbage_collector()  # twice changes nothing
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)
    assert gc.isenabled()

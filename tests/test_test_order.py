"""The test order of ``tests/conftest.py``: every test once, the long ones at the head of each
worker's share of the list (pytest-xdist's worksteal cuts it into contiguous shares)."""

from __future__ import annotations

from typing import cast

import pytest

from tests.conftest import long_tests_first


class FakeItem:
    def __init__(self, name: str, slow: bool, module: str = "") -> None:
        self.name = name
        self.slow = slow
        self.nodeid = f"tests/test_{module or name}.py::{name}"

    def get_closest_marker(self, name: str) -> object | None:
        return object() if name == "slow" and self.slow else None

    def __repr__(self) -> str:
        return self.name


def items(count: int, slow: set[int]) -> list[pytest.Item]:
    return cast(list[pytest.Item], [FakeItem(f"t{i}", i in slow) for i in range(count)])


@pytest.mark.parametrize("workers", [1, 2, 3, 4])
def test_every_test_once_and_each_share_starts_with_its_long_tests(workers: int) -> None:
    given = items(101, {5, 40, 41, 42, 90, 99})
    ordered = long_tests_first(given, workers)
    assert sorted(map(repr, ordered)) == sorted(map(repr, given))
    long = [item for item in ordered if cast(FakeItem, item).slow]
    # The shares as worksteal cuts them: each idle worker takes len(rest) // workers left.
    rest, shares = list(ordered), []
    for worker in range(workers):
        count = len(rest) // (workers - worker)
        shares.append(rest[:count])
        rest = rest[count:]
    for share in shares:
        heads = [cast(FakeItem, item).slow for item in share]
        # The long tests of a share come before any other test of it.
        assert heads == sorted(heads, reverse=True)
    counts = [sum(cast(FakeItem, item).slow for item in share) for share in shares]
    assert sum(counts) == len(long) == 6
    assert max(counts) - min(counts) <= 1


def test_the_long_tests_of_one_file_stay_together() -> None:
    given = cast(
        list[pytest.Item],
        [FakeItem(f"t{i}", i in {2, 3, 4, 10}, "a" if i in {2, 3, 4} else "") for i in range(40)],
    )
    ordered = [repr(item) for item in long_tests_first(given, 2)]
    start = ordered.index("t2")
    assert ordered[start : start + 3] == ["t2", "t3", "t4"]
    assert ordered.index("t10") >= 20  # the other file went to the second share


def test_the_other_tests_keep_their_order() -> None:
    given = items(30, {3, 17})
    ordered = long_tests_first(given, 2)
    others = [repr(item) for item in ordered if not cast(FakeItem, item).slow]
    assert others == [f"t{i}" for i in range(30) if i not in {3, 17}]

"""Every enum value users can read has its French word, and no two values share one."""

from __future__ import annotations

import pytest

from releves_mailer.db.models import StatementState
from releves_mailer.vocabulary import FRENCH, french


@pytest.mark.parametrize("kind", list(FRENCH), ids=lambda kind: kind.__name__)
def test_every_value_has_its_own_french_word(kind: type) -> None:
    words = FRENCH[kind]
    assert set(words) == set(kind)
    assert len(set(words.values())) == len(words)


def test_french_word() -> None:
    assert french(StatementState.PRODUCED) == "succès"
    assert StatementState.PRODUCED.value == "produced"

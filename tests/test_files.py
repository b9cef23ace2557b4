"""Files are written whole or not at all."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from releves_mailer.files import write_atomically


def test_replaces_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "statement.txt"
    path.write_bytes(b"old content, longer than the new one")
    write_atomically(path, b"new")
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["statement.txt"]


def test_private_mode_from_creation(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    write_atomically(path, b"secret", mode=0o600, sync_directory=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_failed_write_keeps_the_old_file_and_no_leftover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "progress.json"
    path.write_bytes(b"before")

    def broken_fsync(_descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        write_atomically(path, b"after")
    assert path.read_bytes() == b"before"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["progress.json"]

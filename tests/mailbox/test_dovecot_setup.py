"""The Dovecot setup the daemon reads back from the folder ``dovecot-config`` wrote: the same
addresses and ports, and a clear error naming the file and the field when it is damaged."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from releves_mailer.errors import UserError
from releves_mailer.mailbox.dovecot.setup import (
    SETUP_FILE,
    DovecotPorts,
    load_dovecot_setup,
    write_dovecot_config,
)

URL = "postgresql+asyncpg://releves@127.0.0.1:5432/releves"


def written(tmp_path: Path) -> Path:
    (tmp_path / "cert.pem").write_text("certificate")
    (tmp_path / "key.pem").write_text("key")
    folder = tmp_path / "dovecot"
    write_dovecot_config(
        folder,
        database_url=URL,
        domain="releves.localhost",
        certificate=tmp_path / "cert.pem",
        key=tmp_path / "key.pem",
        listen="127.0.0.1",
        ports=DovecotPorts(10143, 10993, 10024),
    )
    return folder


def test_the_setup_reads_back_as_written(tmp_path: Path) -> None:
    folder = written(tmp_path)
    setup = load_dovecot_setup(folder)
    assert setup.folder == folder.resolve()
    assert setup.ports == DovecotPorts(10143, 10993, 10024)
    assert setup.domain == "releves.localhost"
    assert setup.certificate == (tmp_path / "cert.pem").resolve()
    assert len(setup.master_password()) >= 32


def test_a_missing_setup_names_the_command_to_run(tmp_path: Path) -> None:
    with pytest.raises(UserError) as raised:
        load_dovecot_setup(tmp_path / "nowhere")
    assert SETUP_FILE in raised.value.message
    assert "dovecot-config" in raised.value.message


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda d: d.pop("ports"), "'ports'"),
        (lambda d: d["ports"].update(lmtp="vingt-quatre"), "valeur invalide"),
    ],
)
def test_a_damaged_setup_names_the_file_and_the_field(
    tmp_path: Path, damage: Callable[[dict[str, Any]], object], named: str
) -> None:
    folder = written(tmp_path)
    description = json.loads((folder / SETUP_FILE).read_text())
    damage(description)
    (folder / SETUP_FILE).write_text(json.dumps(description))
    with pytest.raises(UserError) as raised:
        load_dovecot_setup(folder)
    assert str(folder / SETUP_FILE) in raised.value.message
    assert named in raised.value.message


def test_a_setup_that_is_not_json_is_named(tmp_path: Path) -> None:
    folder = written(tmp_path)
    (folder / SETUP_FILE).write_text("{ pas du json")
    with pytest.raises(UserError) as raised:
        load_dovecot_setup(folder)
    assert "illisible" in raised.value.message

"""``releves-mailer edi import`` and ``edi discover`` as real processes on a fresh data dir."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from tests.edi.interchanges import Decl, company, interchange
from tests.test_cli import add_cabinet, assert_one_line_error, run


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cli-edi") / "data"
    run(directory, "init", str(directory))
    add_cabinet(directory)
    return directory


def test_import_then_discover(data_dir: Path, tmp_path: Path) -> None:
    today = dt.date.today()
    first, second = company(1), company(2, with_nic=True)
    good = tmp_path / "depot.edi"
    good.write_bytes(
        interchange(
            [
                Decl(siren=first[0], name="ALPHA", procedure="TDFC", deposited_on=today),
                Decl(siren=second[0], nic=second[1], name="BETA", deposited_on=today),
            ]
        )
    )
    bad = tmp_path / "faux.edi"
    bad.write_bytes(good.read_bytes().replace(b"UN:TDFC'", b"UN:NOPE'"))

    result = run(
        data_dir,
        "edi",
        "import",
        str(good),
        str(bad),
        "--account",
        "cabinet",
        "--json",
        check=False,
    )
    assert_one_line_error(result, "1 fichier(s) refusé(s) sur 2")
    rows = json.loads(result.stdout)
    assert rows[0]["enregistre"] is True and rows[0]["declarations"] == 2
    assert rows[1]["enregistre"] is False
    assert rows[1]["erreur"].startswith(f"{bad} : segment n° 2 : téléprocédure inconnue")

    again = run(data_dir, "edi", "import", str(good), "--account", "cabinet")
    assert "déjà enregistré, 2 déclaration(s)" in again.stdout

    dry = json.loads(run(data_dir, "redevables", "discover-edi", "--dry-run", "--json").stdout)
    assert dry["essai"] is True and len(dry["crees"]) == 2

    report = json.loads(run(data_dir, "edi", "discover", "--account", "cabinet", "--json").stdout)
    assert {row["siren"] for row in report["crees"]} == {first[0], second[0]}
    assert {row["siret"] for row in report["crees"]} == {None, second[0] + second[1]}
    assert report["deja_presents"] == [] and report["refuses"] == []
    assert report["depots_depuis"] < today.isoformat()

    listed = json.loads(run(data_dir, "redevables", "list", "--json").stdout)
    names = {row["siren"]: row for row in listed}
    assert names[first[0]]["raison_sociale"] == "ALPHA"
    assert names[first[0]]["periodicite"] == "MENSUELLE" and names[first[0]]["jour"] == 0

    text = run(data_dir, "edi", "discover").stdout
    assert "0 redevable(s) créé(s)" in text

"""``releves-mailer cfonb check`` and ``cfonb show``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cfonb_expected import GOLDEN
from click.testing import CliRunner

from releves_mailer.cli.cfonb import cfonb

RUN = [sys.executable, "-c", "from releves_mailer.cli.cfonb import cfonb; cfonb()"]


def test_check_conforming_files() -> None:
    files = [str(GOLDEN / n) for n in ("eur_basic.cfonb", "xpf.cfonb", "multi.cfonb")]
    result = CliRunner().invoke(cfonb, ["check", *files])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "multi.cfonb : conforme (3 relevés, 4 mouvements)" in result.stderr


def test_check_lists_each_deviation_with_its_place() -> None:
    path = GOLDEN / "bank_variants.cfonb"
    result = CliRunner().invoke(cfonb, ["check", str(GOLDEN / "eur_basic.cfonb"), str(path)])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 7
    assert lines[1] == f"{path}:2:21: zone réservée 21-21 non vide : 'E'"
    assert lines[3] == f"{path}:2:105: l'enregistrement fait 104 caractères au lieu de 120"
    assert "non conforme, 7 écarts" in result.stderr


def test_check_one_bad_field_in_a_movement_is_one_error(tmp_path: Path) -> None:
    """An invalid 04 followed by its 05 records: one error, not one per record."""
    lines = (GOLDEN / "eur_basic.cfonb").read_text(encoding="ascii").split("\n")
    assert [line[:2] for line in lines[1:4]] == ["04", "05", "05"]
    lines[1] = lines[1][:34] + "310224" + lines[1][40:]  # 31/02/24: no such day
    path = tmp_path / "bad.cfonb"
    path.write_text("\n".join(lines), encoding="ascii")
    result = CliRunner().invoke(cfonb, ["check", str(path)])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{path}:2:35: date de comptabilisation '310224' invalide (JJMMAA attendu)"
    ]
    assert "non conforme, 1 écart (1 relevé, 1 mouvement lus)" in result.stderr


def test_check_unreadable_file_is_one_french_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cfonb, ["check", str(tmp_path / "absent.cfonb")])
    assert result.exit_code == 1
    assert result.output.strip().endswith("absent.cfonb : fichier introuvable")
    assert "Traceback" not in result.output
    result = CliRunner().invoke(cfonb, ["check", str(tmp_path)])
    assert result.exit_code == 1 and "répertoire" in result.output


def test_check_latin1_file_reports_accents(tmp_path: Path) -> None:
    text = (GOLDEN / "eur_basic.cfonb").read_text(encoding="ascii")
    path = tmp_path / "lcl.cfonb"
    path.write_bytes(text.replace("PRLV SEPA EDF", "PRÉL SEPA EDF").encode("latin-1"))
    result = CliRunner().invoke(cfonb, ["check", str(path)])
    assert result.exit_code == 1
    assert result.stdout == f"{path}:2:51: caractère non ASCII 'É'\n"


def test_show_text() -> None:
    result = CliRunner().invoke(cfonb, ["show", str(GOLDEN / "long_labels.cfonb")])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Compte 10278 06076 00020156101 (EUR) — du 30/04/2024 au 31/05/2024" in out
    assert "Ancien solde au 30/04/2024 : -250,00 EUR" in out
    assert "REMBOURSEMENT NOTE DE FRAIS DE MARS 2024 MISSION LYON" in out
    assert "-1234567,89 EUR" in out
    assert "RUM (mandat) : URSSAF-2023-XYZ RCUR" in out
    assert "Nouveau solde au 31/05/2024 : -1235179,99 EUR (3 mouvements)" in out


def test_show_json_of_a_bank_file() -> None:
    result = CliRunner().invoke(cfonb, ["show", "--json", str(GOLDEN / "bank_variants.cfonb")])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    (statement,) = document["releves"]
    assert statement["compte"] == {
        "code_banque": "30006",
        "code_guichet": "00001",
        "numero_compte": "12345678901",
        "devise": "EUR",
    }
    assert statement["ancien_solde"] == {
        "unites_mineures": 123456,
        "decimales": 2,
        "valeur": "1234.56",
    }
    assert statement["nouveau_solde"]["valeur"] == "1018527.41"
    first = statement["mouvements"][0]
    assert first["montant"]["valeur"] == "-19.04"
    assert first["libelle"] == "Prlv Sepa Edf"
    assert first["complements"][1] == {
        "qualifiant": "RUM",
        "signification": "mandat",
        "donnees": "RUM123" + " " * 29 + "RCUR",
    }
    assert len(document["ecarts"]) == 7


def test_show_json_zero_decimals() -> None:
    result = CliRunner().invoke(cfonb, ["show", "--json", str(GOLDEN / "xpf.cfonb")])
    document = json.loads(result.stdout)
    assert document["releves"][0]["nouveau_solde"] == {
        "unites_mineures": 74494,
        "decimales": 0,
        "valeur": "74494",
    }


def test_show_unreadable_parts_exit_non_zero() -> None:
    result = CliRunner().invoke(cfonb, ["show", str(GOLDEN / "invalid.cfonb")])
    assert result.exit_code == 1
    assert "4 écarts empêchent de lire une partie du fichier" in result.stderr
    assert "CB BOULANGERIE" in result.stdout


def test_real_exit_codes_through_a_subprocess() -> None:
    bad = subprocess.run(
        [*RUN, "check", str(GOLDEN / "invalid.cfonb")], capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert f"{GOLDEN / 'invalid.cfonb'}:2:91: montant '0000000000045Z' invalide" in bad.stdout
    good = subprocess.run(
        [*RUN, "check", str(GOLDEN / "kwd.cfonb")], capture_output=True, text=True
    )
    assert good.returncode == 0, good.stderr
    assert "Traceback" not in bad.stderr + good.stderr

"""The command line as a new user drives it: real processes on a fresh data directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from releves_mailer.resources import example_import_path
from tests.factories import make_nic, make_siren


def run(
    data_dir: Path, *args: str, check: bool = True, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELEVES_MAILER")}
    env["RELEVES_MAILER_CONFIG"] = str(data_dir / "releves-mailer.toml")
    result = subprocess.run(
        [sys.executable, "-m", "releves_mailer", *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=120,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert "Error" not in result.stderr and lines  # French, without click's prefix
    for word in words:
        assert word in result.stderr


def add_cabinet(directory: Path) -> None:
    """The subscribed account ``cabinet`` in the data directory, through the command."""
    password = directory.parent / "password"
    password.write_text("un mot de passe solide\n")
    run(
        directory,
        "accounts",
        "add",
        "cabinet",
        "--siret",
        make_siren(1) + make_nic(make_siren(1)),
        "--name",
        "Cabinet Martin",
        "--email",
        "chef@cabinet.example",
        "--password-file",
        str(password),
        "--accept-cgau",
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cli") / "data"
    result = run(directory, "init", str(directory))
    assert "Dossier de données prêt" in result.stdout
    for name in (
        "releves-mailer.toml",
        "keys/secrets.key",
        "tls/cert.pem",
        "tls/key.pem",
        "signing/portal-cert.pem",
        "signing/portal-key.pem",
        "releves.sqlite3",
    ):
        assert (directory / name).is_file(), name
    assert oct((directory / "keys/secrets.key").stat().st_mode & 0o777) == "0o600"
    add_cabinet(directory)
    run(
        directory,
        "accounts",
        "add",
        "agence",
        "--siret",
        make_siren(2) + make_nic(make_siren(2)),
        "--name",
        "Agence",
        "--email",
        "agence@cabinet.example",
        "--parent",
        "cabinet",
        "--reception",
        "dedicated",
        "--password-file",
        str(directory.parent / "password"),
    )
    return directory


def test_new_user_flow(data_dir: Path) -> None:
    run(data_dir, "check-config")
    imported = run(
        data_dir, "redevables", "import", str(example_import_path()), "--account", "cabinet"
    )
    assert "6 redevable(s) ont été créé(s)" in imported.stdout
    listed = json.loads(
        run(data_dir, "redevables", "list", "--account", "cabinet", "--json").stdout
    )
    assert len(listed) == 6
    assert {r["periodicite"] for r in listed} == {
        "HEBDOMADAIRE",
        "MENSUELLE",
        "JOURNALIERE",
        "TRIMESTRIELLE",
        "SEMESTRIELLE",
        "ANNUELLE",
    }
    accounts = json.loads(run(data_dir, "accounts", "list", "--json").stdout)
    by_login = {a["login"]: a for a in accounts}
    assert by_login["agence"]["compte_principal"] == "cabinet"
    assert by_login["cabinet"]["abonne"] is True
    assert by_login["cabinet"]["cgau_acceptees_le"] is not None
    assert by_login["agence"]["reception"] == "dédiée"

    siren = make_siren(300)
    run(
        data_dir,
        "redevables",
        "add",
        "--account",
        "agence",
        "--siren",
        siren,
        "--name",
        "Nouvelle",
        "--periodicity",
        "hebdomadaire",
        "--day",
        "6",
        "--include-pending",
    )
    duplicate = run(
        data_dir,
        "redevables",
        "add",
        "--account",
        "cabinet",
        "--siren",
        siren,
        "--name",
        "Doublon",
        "--periodicity",
        "JOURNALIERE",
        check=False,
    )
    assert_one_line_error(duplicate, "même SIRET")
    run(
        data_dir,
        "redevables",
        "edit",
        siren,
        "--account",
        "agence",
        "--periodicity",
        "ANNUELLE",
        "--month",
        "2",
        "--day",
        "31",
    )
    shown = json.loads(
        run(data_dir, "redevables", "show", siren, "--account", "agence", "--json").stdout
    )
    assert shown["calendrier"] == "Annuelle, le 31 février"
    assert shown["avec_operations_en_attente"] is True and shown["sans_mail_si_vide"] is False
    run(data_dir, "redevables", "deactivate", siren, "--account", "agence")
    mixed = json.loads(
        run(
            data_dir,
            "redevables",
            "list",
            "--account",
            "cabinet",
            "--secondaries",
            "--inactive",
            "--json",
        ).stdout
    )
    assert {(r["compte"], r["actif"]) for r in mixed if r["siren"] == siren} == {("agence", False)}


def test_import_errors_report_lines_and_change_nothing(data_dir: Path, tmp_path: Path) -> None:
    before = run(data_dir, "redevables", "list", "--account", "agence", "--json").stdout
    bad = tmp_path / "bad.csv"
    bad.write_text(
        f"{make_siren(400)};;OK;;;MENSUELLE;;1;0\n123;;KO;;;MENSUELLE;;1;0\n", encoding="utf-8"
    )
    result = run(data_dir, "redevables", "import", str(bad), "--account", "agence", check=False)
    assert_one_line_error(result, "rien n'a été importé")
    assert f"{bad}: ligne 2, champ « SIREN » (valeur « 123 »)" in result.stderr
    assert run(data_dir, "redevables", "list", "--account", "agence", "--json").stdout == before


def test_errors_are_one_french_line(data_dir: Path, tmp_path: Path) -> None:
    assert_one_line_error(run(data_dir, "accounts", "show", "personne", check=False), "introuvable")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "releves-mailer.toml").write_text("[imap]\nport = 'x'\n")
    result = run(broken, "accounts", "list", check=False)
    assert_one_line_error(result, "imap.port", "nombre entier", str(broken))
    assert_one_line_error(run(data_dir, "init", str(data_dir), check=False), "existe déjà")
    empty = tmp_path / "empty-password"
    empty.write_text("")
    assert_one_line_error(
        run(data_dir, "accounts", "passwd", "cabinet", "--password-file", str(empty), check=False),
        "vide",
    )


def test_password_never_on_command_line_and_prompted(data_dir: Path) -> None:
    result = run(
        data_dir,
        "accounts",
        "passwd",
        "cabinet",
        stdin="un premier essai\nune faute de frappe\nencore un mot de passe\n"
        "encore un mot de passe\n",
    )
    assert "changé" in result.stdout
    # A mismatch is said in French and asked again; the prompts go to stderr.
    assert result.stderr.count("Les deux mots de passe diffèrent, recommencez.") == 1
    assert result.stderr.count("Confirmez le mot de passe") == 2
    assert "Error" not in result.stderr and "Repeat" not in result.stderr
    for secret in ("un premier essai", "une faute de frappe", "encore un mot de passe"):
        assert secret not in result.stdout + result.stderr

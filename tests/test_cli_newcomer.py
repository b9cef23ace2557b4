"""What a newcomer trips over on the command line: French errors, ``--account`` on the lists,
a port already taken, dates. Real processes."""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from releves_mailer.cli.errors import os_error_message
from releves_mailer.db import Database
from releves_mailer.db.models import BankAccount, PortalAccount, Redevable, Statement
from releves_mailer.services import demo
from releves_mailer.services.demo import SECONDARY_LOGIN
from tests.datadirs import initialised_data_dir

#: English words click or the system would print.
ENGLISH = ("Error", "Invalid value", "Is a directory", "No such", "Usage:", "Try ", "Traceback")


def run(config_file: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELEVES_MAILER")}
    if config_file is not None:
        env["RELEVES_MAILER_CONFIG"] = str(config_file)
    return subprocess.run(
        [sys.executable, "-m", "releves_mailer", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def assert_french_refusal(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0, result.stdout
    for english in ENGLISH:
        assert english not in result.stderr, result.stderr
    lines = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and not re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO ", line)
    ]
    assert 1 <= len(lines) <= 2, result.stderr  # the message, and where the help is
    for word in words:
        assert word in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("redevables", "import", "{tmp}", "--account", "x"), ("FILE", "est un dossier")),
        (("cfonb", "show", "{tmp}/absent.cfonb"), ("absent.cfonb : fichier introuvable",)),
        (("accounts", "passwd", "x", "--password-file", "{tmp}"), ("--password-file", "dossier")),
        (("statements", "list", "--frm", "2026-01-01"), ("option inconnue : --frm", "--from")),
        (("serve", "--http-port", "abc"), ("--http-port", "« abc » n'est pas un nombre entier")),
        (("serve", "--http-port", "70000"), ("--http-port", "hors des limites")),
        (("redevables", "list", "--state", "bof"), ("« bof »", "succes, erreur, aucune")),
        (("redevables", "add", "--siren"), ("l'option --siren attend une valeur",)),
        (("redevables", "add", "--name", "X"), ("option --siren obligatoire",)),
        (("relevés",), ("commande inconnue : relevés",)),
        (("banks", "list", "en-trop"), ("argument(s) en trop : en-trop",)),
    ],
)
def test_usage_errors_are_french(
    tmp_path: Path, args: tuple[str, ...], words: tuple[str, ...]
) -> None:
    result = run(None, *(arg.format(tmp=tmp_path) for arg in args))
    assert_french_refusal(result, *words)
    if len(result.stderr.strip().splitlines()) == 2:
        assert result.stderr.strip().splitlines()[1].startswith("Aide : ")


def test_system_errors_name_the_file_in_french() -> None:
    error = OSError(errno.EISDIR, "Is a directory", "/srv/releves")
    assert os_error_message(error) == "/srv/releves : c'est un dossier, pas un fichier"
    denied = OSError(errno.EACCES, "Permission denied", "/srv/x.zip")
    assert os_error_message(denied) == "/srv/x.zip : accès refusé (droits insuffisants)"


async def test_a_taken_port_names_the_server_and_its_option(tmp_path: Path) -> None:
    config = await initialised_data_dir(tmp_path / "data")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = ["--imap-port", "0", "--imaps-port", "0", "--smtp-port", "0"]
        result = run(config.source, "serve", *ports, "--http-port", str(port))
    assert_french_refusal(
        result, f"le port {port} du serveur HTTP (portail) est déjà utilisé", "--http-port"
    )
    assert result.returncode == 1


@pytest.mark.slow
async def test_list_commands_take_account_and_dates_read_jj_mm_aaaa(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The demo's accounts and periodicities, over 15 nights instead of 90: enough
    # statements of each account for the lists (the whole history is test_demo's).
    monkeypatch.setattr(demo, "HISTORY_DAYS", 15)
    built = await demo.build_demo_data(tmp_path / "demo", "mot de passe de la demo")
    config_file = built.config.source
    database = Database(built.config.database_url)
    try:
        async with database.session() as session:
            secondary = await session.scalar(
                select(PortalAccount.id).where(PortalAccount.login == SECONDARY_LOGIN)
            )
            own = set(
                await session.scalars(
                    select(BankAccount.id)
                    .join(Redevable, Redevable.id == BankAccount.redevable_id)
                    .where(Redevable.account_id == secondary)
                )
            )
            all_accounts = set(await session.scalars(select(BankAccount.id)))
            own_statements = set(
                await session.scalars(
                    select(Statement.id)
                    .join(Redevable, Redevable.id == Statement.redevable_id)
                    .where(Redevable.account_id == secondary)
                )
            )
    finally:
        await database.dispose()
    assert own and own < all_accounts and own_statements

    listed = run(config_file, "banks", "list", "--account", SECONDARY_LOGIN, "--json")
    assert listed.returncode == 0, listed.stderr
    assert {row["id"] for row in json.loads(listed.stdout)} == own
    family = run(config_file, "banks", "list", "--account", "demo", "--secondaries", "--json")
    assert {row["id"] for row in json.loads(family.stdout)} == all_accounts
    statements = run(config_file, "statements", "list", "--account", SECONDARY_LOGIN, "--json")
    assert statements.returncode == 0, statements.stderr
    assert {row["id"] for row in json.loads(statements.stdout)} == own_statements
    unknown = run(config_file, "banks", "list", "--account", "personne")
    assert_french_refusal(unknown, "personne", "introuvable")

    # Dates as users read them (JJ/MM/AAAA), and a period that ends before it starts.
    text = run(
        config_file, "statements", "list", "--account", SECONDARY_LOGIN, "--from", "01/01/2000"
    )
    assert text.returncode == 0, text.stderr
    periods = re.findall(r"\s(\S+) au (\S+)\s", text.stdout)
    assert len(periods) == len(own_statements)
    assert all(re.fullmatch(r"\d\d/\d\d/\d{4}", day) for pair in periods for day in pair)
    backwards = run(config_file, "statements", "list", "--from", "20/03/2026", "--to", "03/03/2026")
    assert_french_refusal(backwards, "--to 03/03/2026 est antérieur à --from 20/03/2026")
    # Bank account types in French.
    shown = run(config_file, "banks", "show", str(min(own)), "--json")
    assert json.loads(shown.stdout)["type"] == "Compte courant"

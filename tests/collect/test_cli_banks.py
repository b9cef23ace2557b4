"""``releves-mailer banks`` through click's CliRunner against a real data directory."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from releves_mailer.cli import MainGroup, main
from releves_mailer.cli.banks import banks
from releves_mailer.clock import SystemClock
from releves_mailer.config import load_config
from releves_mailer.db import Database
from releves_mailer.db.migrate import upgrade
from releves_mailer.db.models import BankConnection, PortalAccount, Redevable
from releves_mailer.signing.certificates import write_signing_pair
from releves_mailer.signing.secrets import generate_key_file

from .conftest import make_portfolio

root = MainGroup(
    name="releves-mailer",
    params=list(main.params),
    callback=main.callback,
    commands={"banks": banks},
)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    (tmp_path / "releves-mailer.toml").write_text(
        '[portal]\ndata_dir = "."\n\n[secrets]\nkey_file = "keys/secrets.key"\n\n'
        "[aggregator.testbank]\nseed = 3\n",
        encoding="utf-8",
    )
    generate_key_file(tmp_path / "keys" / "secrets.key")
    config = load_config(tmp_path / "releves-mailer.toml", environ={})
    # Alert mails of a failed first refresh are signed like every mail of the portal.
    write_signing_pair(
        f"portail@{config.portal.domain}",
        config.portal.name,
        config.path(config.signing.key),
        config.path(config.signing.certificate),
        SystemClock().now(),
    )

    async def prepare() -> None:
        database = Database(config.database_url)
        try:
            await upgrade(database)
            await make_portfolio(database, SystemClock().now())
            # A second portal account holding the same SIREN: ambiguous without --account.
            async with database.session() as session:
                now = SystemClock().now()
                other = PortalAccount(
                    login="autre",
                    company_name="AUTRE CABINET",
                    siret="40483304800022",
                    email="autre@example.org",
                    password_hash="x",
                    created_at=now,
                    updated_at=now,
                )
                session.add(other)
                await session.flush()
                session.add(
                    Redevable(
                        account_id=other.id,
                        family_id=other.id,
                        siren="404833048",
                        company_name="TEST PRM2 BIS",
                        periodicity="MENSUELLE",
                        created_at=now,
                        updated_at=now,
                    )
                )
        finally:
            await database.dispose()

    asyncio.run(prepare())
    return tmp_path


def run(data_dir: Path, *args: str) -> Result:
    config = str(data_dir / "releves-mailer.toml")
    return CliRunner().invoke(root, ["--config", config, "banks", *args], catch_exceptions=False)


def stored_tokens(data_dir: Path) -> list[bytes]:
    async def read() -> list[bytes]:
        database = Database(f"sqlite+aiosqlite:///{data_dir / 'releves.sqlite3'}")
        try:
            async with database.session() as session:
                return list((await session.scalars(select(BankConnection.token_encrypted))).all())
        finally:
            await database.dispose()

    return asyncio.run(read())


def test_connect_list_show_transactions_deactivate(data_dir: Path) -> None:
    result = run(data_dir, "connect", "732829320", "--provider", "testbank")
    assert result.exit_code == 0, result.output
    assert "Connexion 1 créée pour 732829320" in result.output
    assert "compte(s) bancaire(s)" in result.output
    tokens = stored_tokens(data_dir)
    assert len(tokens) == 1 and b"732829320" not in tokens[0] and b"tb1." not in tokens[0]

    listed = json.loads(run(data_dir, "list", "--json").output)
    assert listed and all(row["siren"] == "732829320" for row in listed)
    assert all(row["etat_connexion"] == "active" for row in listed)
    assert all(row["iban"].startswith("FR76") for row in listed)
    first = listed[0]["id"]
    assert "Compte chèque" in run(data_dir, "list").output

    shown = json.loads(run(data_dir, "show", str(first), "--json").output)
    assert shown["iban"] == listed[0]["iban"]
    assert isinstance(shown["solde_banque"], int)
    kinds = [event["type"] for event in shown["evenements"]]
    assert kinds[:3] == ["connexion créée", "connexion réussie", "compte ajouté"]
    text = run(data_dir, "show", str(first)).output
    assert "Connexion bancaire active" in text and listed[0]["iban"] in text

    rows = json.loads(run(data_dir, "transactions", str(first), "--json").output)
    assert rows
    assert {row["etat"] for row in rows} <= {
        "en attente",
        "comptabilisée",
        "supprimée",
        "remplacée",
    }
    assert all(isinstance(row["montant"], int) and row["releve"] is None for row in rows)
    assert "comptabilisée" in run(data_dir, "transactions", str(first)).output

    assert "désactivé" in run(data_dir, "deactivate", str(first)).output
    assert all(row["id"] != first for row in json.loads(run(data_dir, "list", "--json").output))
    everything = json.loads(run(data_dir, "list", "--all", "--json").output)
    assert any(row["id"] == first and not row["actif"] for row in everything)
    assert "réactivé" in run(data_dir, "reactivate", str(first)).output


def test_connect_with_scheduled_errors_and_reconnection(data_dir: Path) -> None:
    result = run(data_dir, "connect", "732829320", "--error", "wrongpass@2000-01-01..2999-12-31")
    assert result.exit_code == 3, result.output  # stored, but the bank refused: exit status 3
    assert "Connexion en erreur (wrongpass)" in result.output
    assert "L'authentification au site de la banque a échoué." in result.output
    # Reconnecting (same seed) replaces the broken connection.
    again = run(data_dir, "connect", "732829320", "--seed", "3")
    assert again.exit_code == 0, again.output
    assert "Connexion 2 créée" in again.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["connect", "404833048"], "plusieurs redevables ont le SIREN 404833048"),
        (["connect", "999999999"], "aucun redevable de SIREN 999999999"),
        (["connect", "732829320", "--provider", "powens"], "n'accepte pas de connexion directe"),
        (["connect", "732829320", "--error", "nope@2026-01-01"], "« nope@2026-01-01 »"),
        (["connect", "732829320", "--error", "bug@2026-02-30"], "date invalide « 2026-02-30 »"),
        (["show", "42"], "compte bancaire 42 introuvable"),
        (["deactivate", "42"], "compte bancaire 42 introuvable"),
        (["transactions", "42"], "compte bancaire 42 introuvable"),
    ],
)
def test_refusals_are_one_french_line(data_dir: Path, args: list[str], message: str) -> None:
    result = run(data_dir, *args)
    assert result.exit_code != 0
    assert message in result.output


def test_ambiguous_siren_is_resolved_by_login(data_dir: Path) -> None:
    result = run(data_dir, "connect", "404833048", "--account", "autre")
    assert result.exit_code == 0, result.output
    assert "TEST PRM2 BIS" in result.output


def test_deactivate_and_reactivate_on_a_simulated_timeline(data_dir: Path) -> None:
    """``--at`` dates the switch (Paris time) as ``connect --at`` does: the dates the next
    refresh starts from are the simulated ones."""
    connected = run(data_dir, "connect", "732829320", "--at", "2026-03-02T09:00")
    assert connected.exit_code == 0, connected.output
    first = json.loads(run(data_dir, "list", "--json").output)[0]["id"]

    off = run(data_dir, "deactivate", str(first), "--at", "2026-03-10T09:30")
    assert off.exit_code == 0, off.output
    assert "désactivé le 10/03/2026 09:30." in off.output
    on = run(data_dir, "reactivate", str(first), "--at", "2026-03-20T18:00")
    assert "réactivé le 20/03/2026 18:00." in on.output
    shown = json.loads(run(data_dir, "show", str(first), "--json").output)
    assert shown["actif"] is True and shown["date_desactivation"] is None
    assert shown["date_activation"].startswith("2026-03-20T17:00")  # UTC
    switches = [
        (event["type"], event["date"][:16])
        for event in shown["evenements"]
        if event["type"] in ("compte désactivé", "compte réactivé")
    ]
    assert switches == [
        ("compte désactivé", "2026-03-10T08:30"),
        ("compte réactivé", "2026-03-20T17:00"),
    ]

    bad = run(data_dir, "deactivate", str(first), "--at", "10/03/2026")
    assert bad.exit_code != 0
    assert "date et heure invalides « 10/03/2026 »" in bad.output

"""Annexe 1 field 9 = 1 on the command line: ``redevables add``, ``import`` and ``edit`` mail
the secure "saisie" link to field 5's address; ``--dry-run`` and ``--no-auto-link`` do not.

A real data directory (config, signing pair, SQLite); the queued mails are then handed to an
outside relay (aiosmtpd) by the outbox the daemon runs, as configured.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from releves_mailer.cli import MainGroup, main
from releves_mailer.cli.portfolio import redevables
from releves_mailer.clock import ManualClock, SystemClock
from releves_mailer.config import Config
from releves_mailer.db import Database
from releves_mailer.db.migrate import upgrade
from releves_mailer.listeners import reserve_port
from releves_mailer.notify.outbox import Outbox
from releves_mailer.portfolio.accounts import AccountInput, create_account
from tests.factories import PASSWORD, make_nic, make_siren
from tests.notify.test_outbox import Relay
from tests.partner.conftest import START, cli_data_dir, plain_text, remote_entry_mails

ROOT = MainGroup(
    name="releves-mailer",
    params=list(main.params),
    callback=main.callback,
    commands={"redevables": redevables},
)


@dataclass
class Home:
    """A data directory with one portal account, ``cabinet``."""

    path: Path
    config: Config
    relay_port: int

    def run(self, *args: str, ok: bool = True) -> Result:
        result = CliRunner().invoke(
            ROOT, ["--config", str(self.path / "releves-mailer.toml"), "redevables", *args]
        )
        if ok:
            assert result.exit_code == 0, result.output
        return result

    def queued(self) -> list[str]:
        """Recipients of the queued link mails, each checked against its link row."""

        async def read() -> list[str]:
            database = Database(self.config.database_url)
            try:
                async with database.session() as session:
                    return [row.recipient for row, _ in await remote_entry_mails(session)]
            finally:
                await database.dispose()

        return asyncio.run(read())


@pytest.fixture
def home(tmp_path: Path) -> Home:
    relay_port = reserve_port()
    config = cli_data_dir(
        tmp_path, f'[relay]\nhost = "127.0.0.1"\nport = {relay_port}\nstarttls = false\n'
    )

    async def prepare() -> None:
        database = Database(config.database_url)
        await upgrade(database)
        async with database.session() as session:
            siren = make_siren(1)
            await create_account(
                session,
                ManualClock(START),
                AccountInput(
                    login="cabinet",
                    company_name="CABINET MARTIN",
                    siret=siren + make_nic(siren),
                    email="chef@cabinet.example",
                ),
                PASSWORD,
            )
        await database.dispose()

    asyncio.run(prepare())
    return Home(tmp_path, config, relay_port)


def add_args(index: int, *options: str) -> list[str]:
    return [
        "add",
        "--siren",
        make_siren(index),
        "--name",
        f"CLIENT {index}",
        "--email",
        f"client{index}@client.example",
        "--periodicity",
        "MENSUELLE",
        "--day",
        "0",
        *options,
    ]


def test_add_mails_the_link_through_the_relay(home: Home) -> None:
    added = home.run(*add_args(600, "--remote-entry"))
    assert "Lien sécurisé transmis à client600@client.example" in added.output
    assert home.queued() == ["client600@client.example"]

    async def send() -> list[bytes]:
        relay = Relay(home.relay_port)
        await relay.start()
        database = Database(home.config.database_url)
        try:
            outbox = Outbox(
                database,
                SystemClock(),  # the command queued the mail at the wall-clock time
                home.config.relay,
                domain=home.config.portal.domain,
                data_dir=home.config.data_dir,
                timeout=60,
            )
            report = await outbox.send_due()
            assert report.sent == 1
            assert [envelope.rcpt_tos for envelope in relay.received] == [
                ["client600@client.example"]
            ]
            return [bytes(envelope.content) for envelope in relay.received]  # type: ignore[arg-type]
        finally:
            await database.dispose()
            await relay.stop()

    (raw,) = asyncio.run(send())
    message = message_from_bytes(raw, policy=policy.default)
    assert message.get_content_type() == "multipart/signed"  # signed by the portal
    text = plain_text(raw)
    assert "CABINET MARTIN vous demande de saisir vos identifiants bancaires" in text
    assert "valide seulement durant les 72 prochaines heures" in text


def test_add_sends_nothing_with_the_flag_or_direct_entry(home: Home) -> None:
    flagged = home.run(*add_args(601, "--remote-entry", "--no-auto-link", "--json"))
    assert json.loads(flagged.output)["lien_envoye_a"] is None
    direct = home.run(*add_args(602, "--json"))
    assert json.loads(direct.output)["lien_envoye_a"] is None
    assert home.queued() == []


def test_edit_switching_field_9_on_mails_the_link_once(home: Home) -> None:
    home.run(*add_args(603))
    switched = home.run("edit", make_siren(603), "--remote-entry")
    assert "Lien sécurisé transmis à client603@client.example" in switched.output
    home.run("edit", make_siren(603), "--remote-entry", "--day", "5")
    assert home.queued() == ["client603@client.example"]


def annexe1(path: Path, *lines: tuple[int, str]) -> str:
    rows = []
    for index, remote in lines:
        siren = make_siren(index)
        rows.append(
            f"{siren};{make_nic(siren)};CLIENT {index};;client{index}@client.example;"
            f"TRIMESTRIELLE;1;15;{remote}"
        )
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return str(path)


def test_import_mails_one_link_per_field_9_line(home: Home, tmp_path: Path) -> None:
    file = annexe1(tmp_path / "a.csv", (610, "1"), (611, "0"), (612, "1"))
    dry = home.run("import", file, "--dry-run")
    assert "3 redevable(s) seraient créé(s)" in dry.output and "lien" not in dry.output
    assert home.queued() == []

    done = home.run("import", file)
    assert "2 lien(s) sécurisé(s) de saisie" in done.output
    expected = ["client610@client.example", "client612@client.example"]
    assert home.queued() == expected

    # Without --update, a SIRET already on the account is refused; the command line names
    # its own remedy (the import service names no option).
    refused = home.run("import", file, ok=False)
    assert "déjà présent sur le compte" in refused.output
    assert "(option --update pour le modifier)" in refused.output
    again = json.loads(home.run("import", file, "--update", "--json").output)
    assert (again["mis_a_jour"], again["liens_envoyes"]) == (3, 0)
    switched = annexe1(tmp_path / "b.csv", (611, "1"))
    report = json.loads(home.run("import", switched, "--update", "--json").output)
    assert report["liens_envoyes"] == 1
    assert home.queued() == [*expected, "client611@client.example"]


def test_import_with_the_flag_sends_nothing(home: Home, tmp_path: Path) -> None:
    file = annexe1(tmp_path / "a.csv", (620, "1"), (621, "1"))
    done = json.loads(home.run("import", file, "--no-auto-link", "--json").output)
    assert (done["crees"], done["liens_envoyes"]) == (2, 0)
    shown = json.loads(home.run("show", make_siren(620), "--json").output)
    assert shown["sans_lien_auto"] is True and shown["saisie_deportee"] is True
    assert home.queued() == []

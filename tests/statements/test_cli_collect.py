"""``collect``, ``simulate`` and ``statements list|download|audit`` as real processes."""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import func, select

from releves_mailer.clock import ManualClock
from releves_mailer.collect.connections import build_test_bank
from releves_mailer.db import Database
from releves_mailer.db.models import BankAccount, Periodicity, Statement, StatementFile
from releves_mailer.signing.secrets import KeyRing
from tests.commands import run_command as run
from tests.commands import run_command_async
from tests.datadirs import initialised_data_dir
from tests.factories import add_portfolio, make_siren

from .scenario import Spec, build_portfolio, paris_night

P = Periodicity
SPECS = (
    Spec(P.JOURNALIERE, include_pending=True),
    Spec(P.HEBDOMADAIRE, day=3),
    Spec(P.MENSUELLE, day=10),
)


@pytest.mark.slow
async def test_collect_simulate_list_download_audit(tmp_path: Path) -> None:
    config = await initialised_data_dir(tmp_path / "data")
    clock = ManualClock(paris_night(dt.date(2026, 3, 1)))
    keyring = KeyRing.from_file(config.path(config.secrets.key_file))
    database = Database(config.database_url)
    try:
        await build_portfolio(database, clock, keyring, build_test_bank(config, clock), SPECS)
    finally:
        await database.dispose()

    # collect: every connection refreshed now; nothing due yet (accounts just discovered).
    done = run(config, "collect", "--at", "2026-03-02T12:00")
    assert done.returncode == 0, done.stderr
    assert "3 connexion(s) actualisée(s) (0 en erreur), 0 relevé(s) produit(s)" in done.stdout
    database = Database(config.database_url)
    try:
        async with database.session() as session:
            accounts = await session.scalar(select(func.count()).select_from(BankAccount))
        assert accounts and accounts >= 3
    finally:
        await database.dispose()

    # simulate: the nights from 03/03 to 20/03; again: nothing more (every step done).
    args = ("simulate", "--from", "2026-03-03", "--to", "2026-03-20", "--step-minutes", "180")
    done = run(config, *args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("18 nuit(s) simulée(s)")
    assert "(0 déjà faits)" in done.stdout
    again = run(config, *args)
    assert again.returncode == 0, again.stderr
    assert "0 relevé(s) produit(s), 0 passage(s) (54 déjà faits)" in again.stdout
    bad = run(config, "simulate", "--from", "2026-03-20", "--to", "2026-03-03")
    assert bad.returncode != 0
    assert "--to 03/03/2026 est antérieur à --from 20/03/2026" in bad.stderr

    # list: JSON rows, newest first, all produced.
    listed = run(config, "statements", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    database = Database(config.database_url)
    try:
        async with database.session() as session:
            count = await session.scalar(select(func.count()).select_from(Statement))
            contents = {
                (statement_id, kind): content
                for statement_id, kind, content in await session.execute(
                    select(StatementFile.statement_id, StatementFile.kind, StatementFile.content)
                )
            }
    finally:
        await database.dispose()
    assert len(rows) == count and count > 18
    assert {row["etat"] for row in rows} == {"succès"}
    created = [dt.datetime.fromisoformat(row["cree_le"]) for row in rows]
    assert created == sorted(created, reverse=True)
    weekly = [row for row in rows if dt.date.fromisoformat(row["echeance"]).isoweekday() == 2]
    assert weekly  # day 3 = Tuesday
    text_listing = run(config, "statements", "list", "--state", "succes")
    assert text_listing.returncode == 0
    assert text_listing.stdout.startswith(f"{count} relevé(s) trouvé(s)")
    none = run(config, "statements", "list", "--state", "echec", "--json")
    assert json.loads(none.stdout) == []

    # download --zip: the stored bytes, named after the IBAN and the period (as in the mails).
    chosen = [row["id"] for row in rows[:3]]
    archive_path = tmp_path / "releves.zip"
    done = run(config, "statements", "download", *map(str, chosen), "--zip", str(archive_path))
    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(io.BytesIO(archive_path.read_bytes())) as archive:
        names = archive.namelist()
        cfonb_names = [name for name in names if name.endswith(".cfonb")]
        assert len(cfonb_names) == 3
        for statement_id in chosen:
            row = next(r for r in rows if r["id"] == statement_id)
            start = dt.date.fromisoformat(row["periode_debut"])
            end = dt.date.fromisoformat(row["periode_fin"])
            name = f"Releve_{row['iban']}_{start:%Y%m%d}-{end:%Y%m%d}.cfonb"
            assert archive.read(name) == contents[(statement_id, "cfonb")]
    missing = run(config, "statements", "download", "999999", "--zip", str(tmp_path / "x.zip"))
    assert missing.returncode != 0 and "introuvable" in missing.stderr

    # audit: clean, then a tampered balance is found (exit status 1).
    done = run(config, "statements", "audit")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith(f"0 anomalie(s) sur {accounts} compte(s)")
    database = Database(config.database_url)
    try:
        async with database.session() as session:
            target = await session.scalar(
                select(Statement).where(Statement.sequence == 3).order_by(Statement.id).limit(1)
            )
            assert target is not None
            target.opening_balance = (target.opening_balance or 0) + 100
    finally:
        await database.dispose()
    done = run(config, "statements", "audit", "--json")
    assert done.returncode == 1
    codes = {problem["code"] for problem in json.loads(done.stdout)}
    assert "chaine_soldes" in codes


@pytest.mark.slow
async def test_manual_examples_from_the_command_line(tmp_path: Path) -> None:
    """The manual's two first-statement examples replayed with ``banks connect --at``,
    ``simulate`` and ``statements list --json``."""
    config = await initialised_data_dir(tmp_path / "data")
    monthly, quarterly = make_siren(501), make_siren(502)
    specs = (
        Spec(P.MENSUELLE, day=5, siren=monthly),
        Spec(P.TRIMESTRIELLE, month=1, day=1, siren=quarterly),
    )
    database = Database(config.database_url)
    try:
        await add_portfolio(database, paris_night(dt.date(2026, 8, 1)), specs)
    finally:
        await database.dispose()

    for siren in (monthly, quarterly):
        done = await run_command_async(
            config, "banks", "connect", siren, "--provider", "testbank",
            "--at", "2026-09-05T10:00",
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "le 05/09/2026 10:00" in done.stdout
    done = await run_command_async(config, "simulate", "--from", "2026-09-05", "--to", "2026-10-02")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(0 en erreur)" in done.stdout

    listed = await run_command_async(config, "statements", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    firsts = {(row["siren"], row["iban"]): row for row in rows if row["numero"] == 1}
    assert {siren for siren, _iban in firsts} == {monthly, quarterly}
    expected = {monthly: "2026-09-05", quarterly: "2026-10-01"}
    for (siren, _iban), row in firsts.items():
        # "periode_debut" is the last day before the window: movements from 06/08.
        assert (row["periode_debut"], row["periode_fin"]) == ("2026-08-05", expected[siren])
        assert row["etat"] == "succès"
        assert row["mouvements"] > 0
    audited = await run_command_async(config, "statements", "audit")
    assert audited.returncode == 0, audited.stdout + audited.stderr

"""``collect``, ``simulate``, ``statements``: run the collection, list and fetch statements.

Every command works on the data directory of ``--config`` and is safe while the daemon runs:
each refresh and each statement is one database transaction, and a statement is unique per
(account, due date).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from releves_mailer.cli.common import (
    AppContext,
    account_filter,
    async_command,
    echo_json,
    exit_on_failed_refresh,
    find_redevable,
    format_money,
    listed_accounts,
    open_collection,
    open_services,
    parse_datetime,
)
from releves_mailer.clock import PARIS, Clock, ManualClock, SystemClock
from releves_mailer.collect.errors import describe_error
from releves_mailer.collect.scheduler import RefreshPlan
from releves_mailer.collect.service import RunReport
from releves_mailer.collect.simulate import simulation_steps
from releves_mailer.config import Config
from releves_mailer.errors import UserError
from releves_mailer.files import write_atomically
from releves_mailer.services.statements import StatementFilter, StatementState, StatementView
from releves_mailer.statements.exports import ExportFile, zip_files
from releves_mailer.vocabulary import french

__all__ = ["collect", "simulate", "statements"]

_STATE_OPTIONS = {"en-cours": StatementState.WAITING, "succes": StatementState.PRODUCED}
_STATE_OPTIONS["echec"] = StatementState.FAILED
_STATE_OPTIONS["succès"] = StatementState.PRODUCED
_STATE_OPTIONS["échec"] = StatementState.FAILED


def _parse_date(value: str, option: str) -> dt.date:
    """A date option: JJ/MM/AAAA, as everywhere users read dates, or AAAA-MM-JJ."""
    text = value.strip()
    try:
        return dt.datetime.strptime(text, "%d/%m/%Y").date()
    except ValueError:
        pass
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise UserError(
            f"{option} : date invalide « {value} » (attendu JJ/MM/AAAA ou AAAA-MM-JJ)"
        ) from None


def _summary(report: RunReport) -> str:
    cut = report.statements.count("cut")
    waiting = report.statements.count("waiting")
    failed = report.statements.count("failed")
    return (
        f"{report.refresh_count} connexion(s) actualisée(s) "
        f"({report.failed_refreshes} en erreur), {cut} relevé(s) produit(s), {waiting} en "
        f"attente, {failed} en échec"
    )


async def _redevable_id(config: Config, siren: str | None) -> int | None:
    if siren is None:
        return None
    async with open_services(config) as services:
        return (await find_redevable(services, siren, None)).id


@click.command()
@click.option("--redevable", "siren", help="SIREN (ou SIRET) du seul redevable à traiter.")
@click.option("--at", "at", help="Date et heure de référence (AAAA-MM-JJTHH:MM, heure de Paris).")
@async_command
async def collect(app: AppContext, siren: str | None, at: str | None) -> None:
    """Actualise les connexions bancaires maintenant et produit les relevés dus.

    Code de sortie 3 si une actualisation a échoué (liens et alertes partent comme depuis le
    démon).
    """
    config = app.config
    clock: Clock = SystemClock() if at is None else ManualClock(parse_datetime(at))
    redevable_id = await _redevable_id(config, siren)
    async with open_collection(config, clock) as collection:
        report = await collection.collector.round(force_refresh=True, redevable_id=redevable_id)
    click.echo(_summary(report))
    for connection_id, error in sorted(report.refresh_errors.items()):
        click.echo(f"connexion {connection_id} : {error}", err=True)
    for result in report.refreshed:
        if not result.ok:
            message = describe_error(result.error_code or "bug").message
            click.echo(
                f"connexion {result.connection_id} : {result.error_code} ({message})", err=True
            )
    exit_on_failed_refresh(report)


@click.command()
@click.option("--from", "first", required=True, help="Première nuit simulée (JJ/MM/AAAA).")
@click.option("--to", "last", required=True, help="Dernière nuit simulée (JJ/MM/AAAA).")
@click.option(
    "--step-minutes",
    default=60,
    show_default=True,
    type=click.IntRange(5, 360),
    help="Intervalle entre deux passages de l'ordonnanceur dans la fenêtre de nuit.",
)
@async_command
async def simulate(app: AppContext, first: str, last: str, step_minutes: int) -> None:
    """Fait tourner l'ordonnanceur du démon sur des nuits simulées (horloge simulée).

    Reprend là où une simulation interrompue s'est arrêtée (mêmes dates). Code de sortie 3
    si une actualisation a échoué.
    """
    config = app.config
    start = _parse_date(first, "--from")
    end = _parse_date(last, "--to")
    if end < start:
        raise UserError(
            f"--to {end:%d/%m/%Y} est antérieur à --from {start:%d/%m/%Y} : "
            "la période doit finir après son début"
        )
    plan = RefreshPlan.from_config(config.collection)
    first_step = next(iter(simulation_steps(start, start, plan, step_minutes)))[1]
    clock = ManualClock(first_step)
    nights = (end - start).days + 1
    async with open_collection(config, clock) as collection:
        with tqdm(
            total=nights, unit="nuit", file=sys.stderr, desc="simulation", leave=False
        ) as bar:
            report = await collection.collector.simulate(
                start,
                end,
                step_minutes=step_minutes,
                progress_file=config.data_dir / "simulation.json",
                on_night=lambda _night: bar.update(1),
            )
    click.echo(
        f"{nights} nuit(s) simulée(s) : {report.refreshes} actualisation(s) "
        f"({report.refresh_errors} en erreur), {report.statements} relevé(s) produit(s), "
        f"{report.steps} passage(s) ({report.skipped_steps} déjà faits)"
    )
    exit_on_failed_refresh(report.refresh_errors)


@click.group()
def statements() -> None:
    """Relevés produits : liste, téléchargement, contrôle."""


def _row(statement: StatementView) -> dict[str, Any]:
    return {
        "id": statement.id,
        "siren": statement.siren,
        "nic": statement.nic,
        "raison_sociale": statement.company,
        "iban": statement.iban,
        "numero": statement.sequence,
        "echeance": statement.due_date,
        "periode_debut": statement.period_start,
        "periode_fin": statement.period_end,
        "cree_le": statement.created_at.astimezone(PARIS).isoformat(),
        "etat": french(statement.state),
        "motif": statement.reason,
        "mouvements": statement.movement_count,
        "supprimees": statement.deleted_count,
        "devise": statement.currency,
        "solde_ouverture": statement.opening_balance,
        "solde_cloture": statement.closing_balance,
        "solde_banque": statement.bank_balance,
        "ecart_solde": statement.balance_mismatch,
    }


@statements.command("list")
@click.option("--siret", help="SIREN ou SIRET du redevable.")
@click.option("--iban", help="IBAN du compte.")
@click.option("--from", "first", help="Reçus à partir du (JJ/MM/AAAA).")
@click.option("--to", "last", help="Reçus jusqu'au (JJ/MM/AAAA).")
@click.option(
    "--state",
    type=click.Choice(sorted(_STATE_OPTIONS), case_sensitive=False),
    help="État de la collecte.",
)
@account_filter
@click.option("--json", "as_json", is_flag=True, help="Sortie JSON.")
@async_command
async def list_statements(
    app: AppContext,
    siret: str | None,
    iban: str | None,
    first: str | None,
    last: str | None,
    state: str | None,
    account_login: str | None,
    include_secondaries: bool,
    as_json: bool,
) -> None:
    """Liste les relevés (du plus récent au plus ancien)."""
    start = _parse_date(first, "--from") if first else None
    end = _parse_date(last, "--to") if last else None
    if start is not None and end is not None and end < start:
        raise UserError(
            f"--to {end:%d/%m/%Y} est antérieur à --from {start:%d/%m/%Y} : "
            "la période doit finir après son début"
        )
    async with open_services(app.config) as services:
        criteria = StatementFilter(
            siret=siret,
            iban=iban,
            first=start,
            last=end,
            state=_STATE_OPTIONS[state.lower()] if state else None,
            account_ids=await listed_accounts(services, account_login, include_secondaries),
        )
        rows = [_row(statement) for statement in await services.statements.listing(criteria)]
    if as_json:
        echo_json(rows)
        return
    click.echo(f"{len(rows)} relevé(s) trouvé(s)")
    for row in rows:
        period = f"{row['periode_debut']:%d/%m/%Y} au {row['periode_fin']:%d/%m/%Y}"
        flag = " ÉCART DE SOLDE" if row["ecart_solde"] else ""
        click.echo(
            f"{row['id']:>6}  {row['siren']} {row['nic']:<5} {row['raison_sociale'][:30]:<30} "
            f"{row['iban'] or '-':<27} {period}  {row['etat']:<8} "
            f"{row['mouvements']:>4} mvt  {row['supprimees']:>2} suppr.  "
            f"{format_money(row['solde_cloture'], row['devise'])}{flag}"
            + (f"  ({row['motif']})" if row["motif"] else "")
        )


@statements.command("download")
@click.argument("ids", nargs=-1, required=True, type=int)
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path, file_okay=False),
    help="Dossier où écrire les fichiers (créé au besoin).",
)
@click.option(
    "--zip",
    "zip_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Archive zip à écrire.",
)
@async_command
async def download(
    app: AppContext, ids: tuple[int, ...], out: Path | None, zip_path: Path | None
) -> None:
    """Écrit les fichiers CFONB (et CSV des suppressions) des relevés ID (dossier ou zip)."""
    if (out is None) == (zip_path is None):
        raise UserError("indiquez soit --out DOSSIER, soit --zip FICHIER")
    async with open_services(app.config) as services:
        for statement_id in ids:
            statement = await services.statements.get(statement_id)
            if statement is None:
                raise UserError(f"relevé {statement_id} introuvable")
            if statement.state is not StatementState.PRODUCED:
                raise UserError(f"relevé {statement_id} non produit ({french(statement.state)})")
        files = await services.statements.files(ids)
    click.echo(await asyncio.to_thread(_write_files, files, out, zip_path))


def _write_files(files: list[ExportFile], out: Path | None, zip_path: Path | None) -> str:
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for item in files:
            write_atomically(out / item.name, item.content)
        return f"{len(files)} fichier(s) écrit(s) dans {out}"
    assert zip_path is not None
    write_atomically(zip_path, zip_files(files))
    return f"{len(files)} fichier(s) dans {zip_path}"


@statements.command("audit")
@click.option("--json", "as_json", is_flag=True, help="Sortie JSON.")
@async_command
async def audit_statements(app: AppContext, as_json: bool) -> None:
    """Contrôle les relevés : chaîne des soldes, périodes, fichiers, transactions."""
    async with open_services(app.config) as services:
        problems = await services.statements.audit()
        accounts = await services.banks.count()
    if as_json:
        echo_json(
            [
                {
                    "code": problem.code,
                    "message": problem.message,
                    "compte": problem.account_id,
                    "releve": problem.statement_id,
                }
                for problem in problems
            ]
        )
    else:
        for problem in problems:
            click.echo(str(problem))
        click.echo(f"{len(problems)} anomalie(s) sur {accounts} compte(s)")
    if problems:
        raise SystemExit(1)

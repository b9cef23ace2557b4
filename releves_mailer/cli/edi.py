"""Commands on EDI deposits: file deposit files, discover redevables from them (``edi``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from releves_mailer.cli.common import AppContext, async_command, echo_json, open_services
from releves_mailer.cli.portfolio import redevables, resolve_account
from releves_mailer.edi.read import MAX_FILE_SIZE
from releves_mailer.errors import UserError
from releves_mailer.services.edi import (
    MAX_FILES,
    Discovery,
    EdiService,
    Found,
    discovery_settings,
)

__all__ = ["discovery_json", "edi"]


@click.group()
def edi() -> None:
    """Dépôts EDI (téléprocédures DGFiP) et création des redevables qu'ils désignent."""


def _found_json(found: Found) -> dict[str, Any]:
    row: dict[str, Any] = {
        "siren": found.siren,
        "siret": found.siren + found.nic if found.nic else None,
        "raison_sociale": found.name,
        "teleprocedure": found.procedure,
        "date_depot": found.deposited_on,
    }
    if found.redevable_id is not None:
        row["redevable_id"] = found.redevable_id
    if found.reason:
        row["motif"] = found.reason
    return row


def discovery_json(report: Discovery) -> dict[str, Any]:
    return {
        "date_analyse": report.analysed_at,
        "depots_depuis": report.window_start,
        "essai": report.dry_run,
        "declarations_lues": report.declarations,
        "crees": [_found_json(f) for f in report.created],
        "deja_presents": [_found_json(f) for f in report.present],
        "refuses": [_found_json(f) for f in report.refused],
    }


def _read(path: Path) -> bytes:
    size = path.stat().st_size
    if size > MAX_FILE_SIZE:
        raise UserError(
            f"{path} : fichier trop volumineux ({size} octets, {MAX_FILE_SIZE} au plus)"
        )
    return path.read_bytes()


@edi.command(name="import")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True)
)
@click.option("--account", "account_login", help="Compte portail (login).")
@click.option("--json", "as_json", is_flag=True, help="Sortie JSON.")
@async_command
async def edi_import(
    app: AppContext, files: tuple[Path, ...], account_login: str | None, as_json: bool
) -> None:
    """Enregistre des fichiers de dépôts EDI (échanges EDIFACT INFENT) sur un compte.

    Un même fichier n'est gardé qu'une fois ; un fichier illisible est refusé en entier,
    avec le numéro du segment en cause et le motif.
    """
    if len(files) > MAX_FILES:
        raise UserError(f"trop de fichiers ({len(files)}, {MAX_FILES} au plus par commande)")
    contents = [(str(path), await asyncio.to_thread(_read, path)) for path in files]
    async with open_services(app.config) as services:
        account = await resolve_account(services, account_login)
        service = EdiService(services.database, services.clock, discovery_settings(app.config))
        results = await service.file_deposits(account.id, contents, source="command")
    refused = [r for r in results if not r.ok]
    if as_json:
        echo_json(
            [
                {
                    "fichier": r.file_name,
                    "enregistre": r.ok,
                    "nouveau": r.new,
                    "declarations": r.declarations,
                    "erreur": r.error or None,
                }
                for r in results
            ]
        )
    else:
        for r in results:
            if r.ok:
                state = "enregistré" if r.new else "déjà enregistré"
                click.echo(f"{r.file_name} : {state}, {r.declarations} déclaration(s).")
            else:
                click.echo(r.error, err=True)
    if refused:
        raise UserError(f"{len(refused)} fichier(s) refusé(s) sur {len(results)}")


async def _discover(
    app: AppContext, account_login: str | None, dry_run: bool, as_json: bool
) -> None:
    async with open_services(app.config) as services:
        account = await resolve_account(services, account_login)
        service = EdiService(services.database, services.clock, discovery_settings(app.config))
        report = await service.discover(account.id, dry_run=dry_run)
    if as_json:
        echo_json(discovery_json(report))
        return
    for found in report.refused:
        click.echo(f"{found.siren}{found.nic} {found.name} : refusé, {found.reason}", err=True)
    verb = "seraient créés" if dry_run else "créé(s)"
    click.echo(
        f"Dépôts depuis le {report.window_start:%d/%m/%Y} : {report.declarations} "
        f"déclaration(s) ; {len(report.created)} redevable(s) {verb}, "
        f"{len(report.present)} déjà présent(s), {len(report.refused)} refusé(s)."
    )


_ACCOUNT = click.option("--account", "account_login", help="Compte portail (login).")
_DRY_RUN = click.option("--dry-run", is_flag=True, help="Analyse sans rien créer ni enregistrer.")
_JSON = click.option("--json", "as_json", is_flag=True, help="Sortie JSON.")


@edi.command(name="discover")
@_ACCOUNT
@_DRY_RUN
@_JSON
@async_command
async def edi_discover(
    app: AppContext, account_login: str | None, dry_run: bool, as_json: bool
) -> None:
    """Crée un redevable pour chaque entreprise des dépôts EDI qui n'en est pas encore un.

    La première analyse porte sur les dépôts des 18 derniers mois ; les suivantes partent
    de la date de l'analyse précédente.
    """
    await _discover(app, account_login, dry_run, as_json)


@redevables.command(name="discover-edi")
@_ACCOUNT
@_DRY_RUN
@_JSON
@async_command
async def redevables_discover_edi(
    app: AppContext, account_login: str | None, dry_run: bool, as_json: bool
) -> None:
    """Remonte les redevables des dépôts EDI (comme « edi discover »)."""
    await _discover(app, account_login, dry_run, as_json)

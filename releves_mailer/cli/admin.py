"""Commands that set up and check an installation: ``init``, ``check-config``, ``db upgrade``."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import click

from releves_mailer.cli.common import AppContext, async_command
from releves_mailer.clock import SystemClock
from releves_mailer.config import CONFIG_FILE_NAME, Config, ConfigError
from releves_mailer.daemon.bootstrap import initialise_data_dir
from releves_mailer.daemon.system_install import SERVICE_USER, initialise_system
from releves_mailer.errors import UserError
from releves_mailer.services.wiring import current_schema, head_revisions, upgrade_schema

__all__ = ["check_config", "db", "init"]


@click.command()
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False), required=False)
@click.option(
    "--domain",
    default="releves.localhost",
    show_default=True,
    help="Domaine des boîtes aux lettres internes.",
)
@click.option(
    "--system",
    is_flag=True,
    help="Installation de service : /etc/releves-mailer/releves-mailer.toml et "
    "/var/lib/releves-mailer, les chemins de deploy/releves-mailer.service.",
)
@click.option(
    "--root",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("/"),
    show_default=True,
    help="Avec --system : racine sous laquelle créer etc/ et var/lib/.",
)
@click.option(
    "--user",
    default=SERVICE_USER,
    show_default=True,
    help="Avec --system lancé en root : utilisateur du service, propriétaire des données.",
)
def init(directory: Path | None, domain: str, system: bool, root: Path, user: str) -> None:
    """Crée un dossier de données prêt à l'emploi (configuration, clés, base)."""
    if system == (directory is not None):
        raise UserError("indiquez soit un DOSSIER, soit --system (pas les deux)")
    if directory is None:
        _init_system(root, domain, user)
        return
    config_path = directory / CONFIG_FILE_NAME
    asyncio.run(initialise_data_dir(directory, domain, SystemClock()))
    click.echo(f"Dossier de données prêt : {directory.resolve()}")
    click.echo(f"Configuration : {config_path.resolve()}")
    click.echo("Étapes suivantes :")
    click.echo(f"  export RELEVES_MAILER_CONFIG={config_path.resolve()}")
    click.echo("  releves-mailer accounts add LOGIN --siret SIRET --name NOM --email EMAIL")
    click.echo("  releves-mailer redevables import FICHIER --account LOGIN")


def _init_system(root: Path, domain: str, user: str) -> None:
    installed = asyncio.run(initialise_system(root.resolve(), domain, SystemClock(), user))
    layout = installed.layout
    click.echo(f"Configuration : {layout.config_path}")
    click.echo(f"Secrets (variables d'environnement) : {layout.environment_file}")
    click.echo(f"Dossier de données : {layout.data_dir}")
    if installed.owner is not None:
        click.echo(f"Données confiées à l'utilisateur {installed.owner}.")
    elif os.geteuid() == 0:
        click.echo(
            f"Attention : l'utilisateur {user} n'existe pas. Créez-le "
            "(systemd-sysusers deploy/releves-mailer.sysusers), puis :\n"
            f"  chown -R {user}: {layout.data_dir}\n"
            f"  chgrp {user} {layout.config_dir} {layout.config_path} && "
            f"chmod g+rx {layout.config_dir} && chmod g+r {layout.config_path}",
            err=True,
        )
    click.echo("Étapes suivantes :")
    click.echo("  cp deploy/releves-mailer.service /etc/systemd/system/")
    click.echo("  systemctl daemon-reload && systemctl enable --now releves-mailer")
    click.echo(f"  releves-mailer --config {layout.config_path} accounts add LOGIN ...")


def _file_problems(config: Config) -> list[str]:
    problems = []
    for key, path in (
        ("secrets.key_file", config.secrets.key_file),
        ("tls.certificate", config.tls.certificate),
        ("tls.key", config.tls.key),
        ("signing.certificate", config.signing.certificate),
        ("signing.key", config.signing.key),
    ):
        resolved = config.path(path)
        if not resolved.is_file():
            problems.append(f"clé « {key} » : fichier introuvable {resolved}")
    if config.templates.custom_dir and not config.path(config.templates.custom_dir).is_dir():
        problems.append(
            f"clé « templates.custom_dir » : dossier introuvable "
            f"{config.path(config.templates.custom_dir)}"
        )
    return problems


@click.command(name="check-config")
@async_command
async def check_config(app: AppContext) -> None:
    """Valide le fichier de configuration, les fichiers qu'il désigne et la base."""
    config = app.config
    problems = _file_problems(config)
    try:
        if await current_schema(config) != head_revisions():
            problems.append("la base n'est pas à jour : lancez « releves-mailer db upgrade »")
    except Exception as error:  # any driver error means "unreachable"
        problems.append(f"base de données injoignable ({type(error).__name__}: {error})")
    if problems:
        for problem in problems:
            click.echo(f"{config.source} : {problem}", err=True)
        raise ConfigError(f"{len(problems)} problème(s) trouvé(s)", file=config.source)
    click.echo(f"Configuration valide : {config.source}")


@click.group()
def db() -> None:
    """Base de données."""


@db.command(name="upgrade")
@async_command
async def db_upgrade(app: AppContext) -> None:
    """Applique les migrations du schéma (sans perte de données)."""
    before, after = await upgrade_schema(app.config)
    if before == after:
        click.echo(f"Base déjà à jour (révision {', '.join(sorted(after))}).")
    else:
        click.echo(f"Base mise à jour : révision {', '.join(sorted(after))}.")

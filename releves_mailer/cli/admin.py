"""Commands that set up and check an installation: ``init``, ``check-config``, ``db upgrade``,
``db copy``, ``dovecot-config``."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import click

from releves_mailer.cli.common import AppContext, async_command
from releves_mailer.clock import SystemClock
from releves_mailer.config import CONFIG_FILE_NAME, Config, ConfigError
from releves_mailer.daemon.bootstrap import initialise_data_dir
from releves_mailer.daemon.system_install import SERVICE_USER, initialise_system
from releves_mailer.errors import UserError
from releves_mailer.services.wiring import (
    copy_database_to,
    current_schema,
    head_revisions,
    upgrade_schema,
    write_dovecot_setup,
)

__all__ = ["check_config", "db", "dovecot_config", "init"]


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


@db.command(name="copy")
@click.option(
    "--to",
    "url",
    required=True,
    help="Base cible, neuve et vide : postgresql://utilisateur@hôte:port/base.",
)
@click.option("--json", "as_json", is_flag=True, help="Rapport en JSON.")
@async_command
async def db_copy(app: AppContext, url: str, as_json: bool) -> None:
    """Copie toute la base vers une autre (SQLite vers PostgreSQL), lignes comptées.

    Arrêtez le démon avant : ce qu'il écrirait pendant la copie resterait dans l'ancienne
    base. La configuration n'est pas modifiée : mettez ensuite l'adresse de la cible dans
    [database] url."""

    def shown(table: str, rows: int) -> None:
        if not as_json:
            click.echo(f"  {table} : {rows} ligne(s)")

    copied = await copy_database_to(app.config, url, shown)
    total = sum(count.rows for count in copied)
    if as_json:
        report = {
            "tables": [{"table": count.table, "lignes": count.rows} for count in copied],
            "lignes": total,
        }
        click.echo(json.dumps(report, ensure_ascii=False))
        return
    click.echo(f"Copie terminée : {len(copied)} tables, {total} ligne(s), comptes vérifiés.")
    click.echo("Mettez maintenant cette adresse dans [database] url de la configuration.")


@click.command(name="dovecot-config")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--listen", default="127.0.0.1", show_default=True, help="Adresse d'écoute.")
@click.option("--imap-port", type=click.IntRange(1, 65535), default=143, show_default=True)
@click.option("--imaps-port", type=click.IntRange(1, 65535), default=993, show_default=True)
@click.option("--lmtp-port", type=click.IntRange(1, 65535), default=24, show_default=True)
@click.option("--internal-user", help="Utilisateur des processus de Dovecot.")
@click.option("--mail-user", help="Utilisateur propriétaire du courrier.")
@async_command
async def dovecot_config(
    app: AppContext,
    directory: Path,
    listen: str,
    imap_port: int,
    imaps_port: int,
    lmtp_port: int,
    internal_user: str | None,
    mail_user: str | None,
) -> None:
    """Écrit la configuration d'un Dovecot 2.3 qui tient les boîtes de l'installation."""
    config = app.config
    setup = write_dovecot_setup(
        config,
        directory,
        listen=listen,
        ports=(imap_port, imaps_port, lmtp_port),
        internal_user=internal_user,
        mail_user=mail_user,
    )
    click.echo(f"Configuration de Dovecot écrite dans {setup.folder}")
    click.echo(f"Démarrage : dovecot -c {setup.folder / 'dovecot.conf'}")

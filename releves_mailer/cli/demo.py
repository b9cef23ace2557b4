"""The ``demo`` command: a ready demo installation with 90 days of statements, then serve.

The installation is built once in its data directory: a portal account, a secondary,
redevables on the test bank, then the last 90 days simulated so that the boxes already hold
statements. Account ``demo`` receives its statements in its dedicated box
``releves.demo@<domain>``; its secondary account ``demo-agence`` receives its own in its
default box ``demo-agence@<domain>``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from tqdm import tqdm

from releves_mailer.cli.serve import listen_options, log_format_option, run_daemon, with_log_format
from releves_mailer.clock import SystemClock
from releves_mailer.config import CONFIG_FILE_NAME, Config, load_config
from releves_mailer.daemon.lock import DataDirLock
from releves_mailer.daemon.main import Daemon, ListenOverrides
from releves_mailer.files import make_private_dir
from releves_mailer.logs import configure_logging, secrets_of
from releves_mailer.portfolio.boxes import box_address
from releves_mailer.services.demo import (
    DEMO_LOGIN,
    HISTORY_DAYS,
    LOGIN_NOTE_NAME,
    SECONDARY_LOGIN,
    build_demo_data,
    demo_password,
)
from releves_mailer.services.wiring import upgrade_schema

__all__ = ["demo"]


async def build_demo(data_dir: Path, password: str) -> Config:
    """Create the demo data directory and fill its boxes with 90 simulated days."""
    with tqdm(
        total=HISTORY_DAYS,
        desc="Simulation des 90 derniers jours",
        unit="nuit",
        leave=False,
        disable=None,
    ) as progress:
        built = await build_demo_data(data_dir, password, lambda _night: progress.update(1))
    click.echo(f"{built.statements} relevés produits, {built.delivered} déposés dans les boîtes.")
    return built.config


def connection_help(daemon: Daemon, password_hint: str) -> str:
    config = daemon.config
    domain = config.portal.domain
    dedicated = box_address(DEMO_LOGIN, domain, dedicated=True)
    own = box_address(DEMO_LOGIN, domain)
    secondary = box_address(SECONDARY_LOGIN, domain)
    host = config.imap.listen
    ports = daemon.ports
    portal = f"{config.http.public_url.rstrip('/')}/portail/"
    return f"""
Démo releves-mailer prête.

  Portail web    {portal}
                 identifiant « {DEMO_LOGIN} » (compte principal) ou « {SECONDARY_LOGIN} »
                 (compte secondaire), mot de passe : {password_hint}

Connectez aussi n'importe quel client de messagerie :

  Serveur IMAP   {host}  port {ports["imap"]} (STARTTLS)  ou  port {ports["imaps"]} (SSL/TLS)
  Serveur SMTP   {host}  port {ports["smtp"]} (STARTTLS puis authentification ; envoi
                 entre les boîtes d'un même compte, jamais vers la boîte dédiée)
  Mot de passe   {password_hint}  (le même pour le portail et toutes les boîtes)

  Boîtes :
    {dedicated}    boîte dédiée aux relevés du compte « {DEMO_LOGIN} »
    {own}            boîte du compte « {DEMO_LOGIN} » (alertes, notifications)
    {secondary}     compte secondaire : ses relevés arrivent dans sa boîte

  Le certificat TLS est auto-signé ({config.path(config.tls.certificate)}) : acceptez-le
  dans le client. Les relevés sont signés (S/MIME) par {config.path(config.signing.certificate)}.
  Essai rapide (demande le mot de passe) :
    curl -k -u {dedicated} "imaps://{host}:{ports["imaps"]}/INBOX" -X "SEARCH ALL"
  Arrêt : Ctrl-C.
"""


@click.command()
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("releves-demo"),
    show_default=True,
    help="Dossier de données de la démo (créé s'il n'existe pas).",
)
@click.option(
    "--password-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Fichier dont la première ligne est le mot de passe du compte demo "
    "(sinon un mot de passe est tiré au hasard et gardé dans le dossier).",
)
@listen_options
@log_format_option
def demo(
    data_dir: Path,
    password_file: Path | None,
    listen: str | None,
    imap_port: int | None,
    imaps_port: int | None,
    smtp_port: int | None,
    http_port: int | None,
    log_format: str | None,
) -> None:
    """Démonstration : comptes, redevables sur la banque de test, 90 jours de relevés, puis
    lance le service sur cette machine."""
    config_path = data_dir / CONFIG_FILE_NAME
    # Locked before building, so that a second demo neither builds nor migrates beside it.
    make_private_dir(data_dir)
    lock = DataDirLock(data_dir.resolve())
    lock.acquire()
    if config_path.exists():
        config = load_config(config_path)
        # A demo made by an older version gets the newer schema (a demo is never precious).
        asyncio.run(upgrade_schema(config))
        click.echo(f"Démo existante : {data_dir.resolve()}")
    else:
        password = demo_password(data_dir, password_file)
        click.echo(f"Création de la démo dans {data_dir.resolve()} ...")
        config = asyncio.run(build_demo(data_dir, password))
    hint = (
        f"la première ligne de {password_file.resolve()}"
        if password_file is not None
        else f"dans le fichier {(config.data_dir / LOGIN_NOTE_NAME).resolve()}"
    )
    overrides = ListenOverrides(listen, imap_port, imaps_port, smtp_port, http_port)
    config = with_log_format(overrides.apply(config), log_format)
    configure_logging(config.logging, config.data_dir, secrets_of(config))
    daemon = Daemon(config, SystemClock(), lock=lock, log_format=log_format)
    run_daemon(daemon, lambda d: click.echo(connection_help(d, hint)))

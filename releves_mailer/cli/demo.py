"""The ``demo`` command: a ready demo installation with 90 days of statements, then serve."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import click
from tqdm import tqdm

from releves_mailer.bootstrap import initialise_data_dir
from releves_mailer.cli.serve import listen_options
from releves_mailer.clock import PARIS, ManualClock, SystemClock
from releves_mailer.collect.connections import build_test_bank
from releves_mailer.collect.scheduler import RefreshPlan
from releves_mailer.collect.service import CollectionService
from releves_mailer.config import CONFIG_FILE_NAME, Config, load_config
from releves_mailer.daemon import Daemon, ListenOverrides
from releves_mailer.db import Database
from releves_mailer.db.migrate import upgrade
from releves_mailer.delivery.service import StatementDelivery
from releves_mailer.demo import DEMO_LOGIN, SECONDARY_LOGIN, create_demo_portfolio, demo_password
from releves_mailer.logs import configure_logging
from releves_mailer.mailbox.store import MessageStore
from releves_mailer.render import Renderer
from releves_mailer.signing.secrets import KeyRing
from releves_mailer.signing.smime import SmimeSigner

__all__ = ["demo"]

HISTORY_DAYS = 90


async def build_demo(data_dir: Path, password: str) -> Config:
    """Create the demo data directory and fill its boxes with 90 simulated days."""
    config = await initialise_data_dir(data_dir, "releves.localhost", SystemClock())
    today = SystemClock().now().astimezone(PARIS).date()
    first = today - dt.timedelta(days=HISTORY_DAYS)
    clock = ManualClock(dt.datetime.combine(first, dt.time(12, 0), PARIS))
    database = Database(config.database_url)
    store = MessageStore(database, config.data_dir / "messages", clock)
    try:
        await create_demo_portfolio(config, database, clock, password)
        collection = CollectionService(
            database,
            clock,
            {"testbank": build_test_bank(config, clock)},
            KeyRing.from_file(config.path(config.secrets.key_file)),
            plan=RefreshPlan.from_config(config.collection),
        )
        with tqdm(
            total=HISTORY_DAYS,
            desc="Simulation des 90 derniers jours",
            unit="nuit",
            leave=False,
            disable=None,
        ) as progress:
            report = await collection.simulate(
                first, today - dt.timedelta(days=1), on_night=lambda _night: progress.update(1)
            )
        delivery = StatementDelivery(
            database,
            store,
            Renderer.from_config(config),
            SmimeSigner.from_config(config),
            clock,
            config.portal,
        )
        delivered = await delivery.deliver_due()
    finally:
        await store.close()
        await database.dispose()
    click.echo(
        f"{report.statements} relevés produits, {delivered.delivered} déposés dans les boîtes."
    )
    return config


async def _upgrade(config: Config) -> None:
    """A demo made by an older version gets the newer schema (a demo is never precious)."""
    database = Database(config.database_url)
    try:
        await upgrade(database)
    finally:
        await database.dispose()


def connection_help(daemon: Daemon, password_hint: str) -> str:
    config = daemon.config
    domain = config.portal.domain
    host = config.imap.listen
    ports = daemon.ports
    return f"""
Démo releves-mailer prête. Connectez n'importe quel client de messagerie :

  Serveur IMAP   {host}  port {ports["imap"]} (STARTTLS)  ou  port {ports["imaps"]} (SSL/TLS)
  Serveur SMTP   {host}  port {ports["smtp"]} (STARTTLS puis authentification ; envoi
                 entre les boîtes d'un même compte, jamais vers la boîte dédiée)
  Portail web    {config.http.public_url}
  Mot de passe   {password_hint}  (le même pour toutes les boîtes)

  Boîtes :
    releves.{DEMO_LOGIN}@{domain}    boîte dédiée aux relevés du compte « {DEMO_LOGIN} »
    {DEMO_LOGIN}@{domain}            boîte du compte « {DEMO_LOGIN} » (alertes, notifications)
    {SECONDARY_LOGIN}@{domain}     compte secondaire : ses relevés arrivent dans sa boîte

  Le certificat TLS est auto-signé ({config.path(config.tls.certificate)}) : acceptez-le
  dans le client. Les relevés sont signés (S/MIME) par {config.path(config.signing.certificate)}.
  Essai rapide (demande le mot de passe) :
    curl -k -u releves.{DEMO_LOGIN}@{domain} "imaps://{host}:{ports["imaps"]}/INBOX" -X "SEARCH ALL"
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
def demo(
    data_dir: Path,
    password_file: Path | None,
    listen: str | None,
    imap_port: int | None,
    imaps_port: int | None,
    smtp_port: int | None,
    http_port: int | None,
) -> None:
    """Démonstration : comptes, redevables sur la banque de test, 90 jours de relevés, puis
    lance le service sur cette machine."""
    config_path = data_dir / CONFIG_FILE_NAME
    if config_path.exists():
        config = load_config(config_path)
        asyncio.run(_upgrade(config))
        click.echo(f"Démo existante : {data_dir.resolve()}")
    else:
        password = demo_password(data_dir, password_file)
        click.echo(f"Création de la démo dans {data_dir.resolve()} ...")
        config = asyncio.run(build_demo(data_dir, password))
    hint = (
        f"celui de {password_file}"
        if password_file is not None
        else f"voir {config.data_dir / 'demo-password.txt'}"
    )
    overrides = ListenOverrides(listen, imap_port, imaps_port, smtp_port, http_port)
    config = overrides.apply(config)
    configure_logging(config.logging, config.data_dir)
    daemon = Daemon(config, SystemClock())
    asyncio.run(daemon.run(on_ready=lambda d: click.echo(connection_help(d, hint))))

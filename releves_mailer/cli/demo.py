"""The ``demo`` command: a ready demo installation with 90 days of statements, then serve.

The installation is built once in its data directory: a portal account, a secondary,
redevables on the test bank, then the last 90 days simulated so that the boxes already hold
statements. Account ``demo`` receives its statements in its dedicated box
``releves.demo@<domain>``; its secondary account ``demo-agence`` receives its own in its
default box ``demo-agence@<domain>``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import secrets
from pathlib import Path

import click
from tqdm import tqdm

from releves_mailer.cli.serve import listen_options
from releves_mailer.clock import PARIS, Clock, ManualClock, SystemClock
from releves_mailer.collect.connections import build_test_bank, connect_test_bank
from releves_mailer.collect.scheduler import RefreshPlan
from releves_mailer.collect.service import CollectionService
from releves_mailer.config import CONFIG_FILE_NAME, Config, load_config
from releves_mailer.daemon.bootstrap import initialise_data_dir
from releves_mailer.daemon.main import Daemon, ListenOverrides
from releves_mailer.db import Database
from releves_mailer.db.migrate import upgrade
from releves_mailer.db.models import ReceptionMode
from releves_mailer.delivery.service import StatementDelivery
from releves_mailer.errors import UserError
from releves_mailer.files import make_private_dir
from releves_mailer.logs import configure_logging
from releves_mailer.mailbox.store import MessageStore
from releves_mailer.portfolio.accounts import AccountInput, create_account, subscribe
from releves_mailer.portfolio.boxes import box_address
from releves_mailer.portfolio.passwords import check_password_strength
from releves_mailer.portfolio.redevables import create_redevable, validate_redevable
from releves_mailer.render import Renderer
from releves_mailer.signing.secrets import KeyRing
from releves_mailer.signing.smime import SmimeSigner

__all__ = ["DEMO_LOGIN", "SECONDARY_LOGIN", "create_demo_portfolio", "demo", "demo_password"]

HISTORY_DAYS = 90
DEMO_LOGIN = "demo"
SECONDARY_LOGIN = "demo-agence"
LOGIN_NOTE_NAME = "demo-password.txt"


@dataclasses.dataclass(frozen=True)
class DemoRedevable:
    owner: str
    siren: str
    nic: str
    name: str
    periodicity: str
    month: int | None
    day: int | None


#: Fictitious companies (valid SIREN/SIRET keys, numbers not known to belong to anyone).
DEMO_REDEVABLES = (
    DemoRedevable(
        DEMO_LOGIN, "910433218", "00013", "BOULANGERIE DU MARCHÉ", "HEBDOMADAIRE", None, 2
    ),
    DemoRedevable(DEMO_LOGIN, "981960016", "", "GARAGE DES ALPES", "MENSUELLE", None, 0),
    DemoRedevable(
        DEMO_LOGIN, "933890832", "00019", "CABINET MÉDICAL DES TILLEULS", "JOURNALIERE", None, None
    ),
    DemoRedevable(DEMO_LOGIN, "986379402", "", "TRANSPORTS DE L'OUEST", "TRIMESTRIELLE", 3, 0),
    DemoRedevable(
        SECONDARY_LOGIN, "926542358", "00011", "LES JARDINS DE PROVENCE", "HEBDOMADAIRE", None, 6
    ),
    DemoRedevable(SECONDARY_LOGIN, "911615599", "", "IMPRIMERIE CENTRALE", "MENSUELLE", None, 15),
)


def demo_password(data_dir: Path, password_file: Path | None) -> str:
    """The demo password: from ``password_file``, else the one kept in the data directory,
    else a new random one written there (mode 0600) for the user to find again."""
    if password_file is not None:
        try:
            password = password_file.read_text(encoding="utf-8").splitlines()[0]
        except (OSError, IndexError):
            raise UserError(
                f"{password_file} : fichier de mot de passe illisible ou vide"
            ) from None
        check_password_strength(password)
        return password
    kept = data_dir / LOGIN_NOTE_NAME
    if kept.exists():
        return kept.read_text(encoding="utf-8").strip()
    password = secrets.token_urlsafe(12)
    make_private_dir(data_dir)
    descriptor = os.open(kept, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(password + "\n")
    return password


async def create_demo_portfolio(
    config: Config, database: Database, clock: Clock, password: str
) -> list[int]:
    """Accounts, redevables and test bank connections of the demo; returns connection ids."""
    async with database.session() as session:
        primary = await create_account(
            session,
            clock,
            AccountInput(
                login=DEMO_LOGIN,
                company_name="CABINET DÉMO EXPERTISE",
                siret="94078161000016",
                email=box_address(DEMO_LOGIN, config.portal.domain),
                contact_name="Responsable démo",
            ),
            password,
        )
        await subscribe(
            session, clock, primary, accept_terms=True, reception_mode=ReceptionMode.DEDICATED
        )
        secondary = await create_account(
            session,
            clock,
            AccountInput(
                login=SECONDARY_LOGIN,
                company_name="CABINET DÉMO AGENCE SUD",
                siret="98495931200013",
                email=box_address(SECONDARY_LOGIN, config.portal.domain),
                parent_login=DEMO_LOGIN,
            ),
            password,
        )
        await subscribe(
            session, clock, secondary, accept_terms=True, reception_mode=ReceptionMode.DEFAULT
        )
        owners = {DEMO_LOGIN: primary, SECONDARY_LOGIN: secondary}
        redevable_ids = []
        for item in DEMO_REDEVABLES:
            data, problems = validate_redevable(
                siren=item.siren,
                nic=item.nic,
                company_name=item.name,
                periodicity=item.periodicity,
                month=item.month,
                day=item.day,
            )
            if data is None:
                raise UserError("; ".join(p.message for p in problems))
            redevable = await create_redevable(session, clock, owners[item.owner], data)
            redevable_ids.append(redevable.id)
    bank = build_test_bank(config, clock)
    keyring = KeyRing.from_file(config.path(config.secrets.key_file))
    connections = []
    for redevable_id in redevable_ids:
        connection = await connect_test_bank(
            database, redevable_id, bank=bank, keyring=keyring, clock=clock
        )
        connections.append(connection.id)
    return connections


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
            SmimeSigner.from_files(
                config.path(config.signing.key), config.path(config.signing.certificate)
            ),
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
    dedicated = box_address(DEMO_LOGIN, domain, dedicated=True)
    own = box_address(DEMO_LOGIN, domain)
    secondary = box_address(SECONDARY_LOGIN, domain)
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
        else f"voir {config.data_dir / LOGIN_NOTE_NAME}"
    )
    overrides = ListenOverrides(listen, imap_port, imaps_port, smtp_port, http_port)
    config = overrides.apply(config)
    configure_logging(config.logging, config.data_dir)
    daemon = Daemon(config, SystemClock())
    asyncio.run(daemon.run(on_ready=lambda d: click.echo(connection_help(d, hint))))

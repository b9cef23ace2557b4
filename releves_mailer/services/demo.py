"""The demo installation: a portal account, a secondary, redevables on the test bank, then
90 simulated days with the statements delivered.

``releves-mailer demo`` builds it once in its data directory, simulates the last 90 days so
that the boxes already hold statements, then serves. Account ``demo`` receives its
statements in its dedicated box ``releves.demo@<domain>``; its secondary account
``demo-agence`` receives its own in its default box ``demo-agence@<domain>``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from releves_mailer.clock import PARIS, Clock, ManualClock, SystemClock
from releves_mailer.collect.connections import build_test_bank, connect_test_bank
from releves_mailer.collect.scheduler import RefreshPlan
from releves_mailer.collect.service import CollectionService
from releves_mailer.config import Config
from releves_mailer.daemon.bootstrap import initialise_data_dir
from releves_mailer.db import Database
from releves_mailer.db.models import ReceptionMode
from releves_mailer.delivery.service import StatementDelivery
from releves_mailer.errors import UserError
from releves_mailer.files import make_private_dir
from releves_mailer.mailbox.store import MessageStore
from releves_mailer.portfolio.accounts import AccountInput, create_account, subscribe
from releves_mailer.portfolio.boxes import box_address
from releves_mailer.portfolio.passwords import check_password_strength
from releves_mailer.portfolio.redevables import create_redevable, validate_redevable
from releves_mailer.render import Renderer
from releves_mailer.signing.secrets import KeyRing
from releves_mailer.signing.smime import SmimeSigner

__all__ = [
    "DEMO_LOGIN",
    "HISTORY_DAYS",
    "LOGIN_NOTE_NAME",
    "SECONDARY_LOGIN",
    "DemoBuilt",
    "DemoRedevable",
    "build_demo_data",
    "create_demo_portfolio",
    "demo_password",
]

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


@dataclass(frozen=True, slots=True)
class DemoBuilt:
    """The new demo's config and what its simulated history produced."""

    config: Config
    statements: int
    delivered: int


async def build_demo_data(
    data_dir: Path, password: str, on_night: Callable[[dt.date], None] | None = None
) -> DemoBuilt:
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
        report = await collection.simulate(first, today - dt.timedelta(days=1), on_night=on_night)
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
    return DemoBuilt(config, report.statements, delivered.delivered)

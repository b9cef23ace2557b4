"""Fills a new demo installation: its portfolio, 90 simulated days, the statements delivered."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from releves_mailer.bootstrap import initialise_data_dir
from releves_mailer.clock import PARIS, ManualClock, SystemClock
from releves_mailer.collect.connections import build_test_bank
from releves_mailer.collect.scheduler import RefreshPlan
from releves_mailer.collect.simulate import simulate
from releves_mailer.config import Config
from releves_mailer.db import Database
from releves_mailer.delivery.service import StatementDelivery
from releves_mailer.demo import create_demo_portfolio
from releves_mailer.mailbox.store import MessageStore
from releves_mailer.render import Renderer
from releves_mailer.signing.secrets import KeyRing
from releves_mailer.signing.smime import SmimeSigner

__all__ = ["HISTORY_DAYS", "DemoBuilt", "build_demo_data"]

HISTORY_DAYS = 90


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
        keyring = KeyRing.from_file(config.path(config.secrets.key_file))
        providers = {"testbank": build_test_bank(config, clock)}
        report = await simulate(
            database,
            clock=clock,
            providers=providers,
            keyring=keyring,
            first=first,
            last=today - dt.timedelta(days=1),
            plan=RefreshPlan.from_config(config.collection),
            on_night=on_night,
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
    return DemoBuilt(config, report.statements, delivered.delivered)

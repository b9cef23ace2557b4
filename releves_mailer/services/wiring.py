"""Builds the services of a one-shot process (a command) from the config, and its schema tools.

The daemon has its own composition root; a command opens the configured database here,
refused when its schema is not the one this code expects, and gets :class:`Services` (or the
daemon's collector, for the commands that collect).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from releves_mailer.aggregators.registry import Aggregators, open_aggregators
from releves_mailer.aggregators.testbank import ScheduledError, TestBank
from releves_mailer.clock import Clock, SystemClock
from releves_mailer.collect.connections import connect_test_bank
from releves_mailer.collect.scheduler import RefreshPlan
from releves_mailer.config import Config, ConfigError, async_database_url
from releves_mailer.daemon.jobs import Collector
from releves_mailer.db import Database
from releves_mailer.db.copy import TableCount, copy_database
from releves_mailer.db.migrate import SchemaOutOfDate, check_schema, current_heads, upgrade
from releves_mailer.db.migrate import head_revisions as head_revisions
from releves_mailer.errors import UserError
from releves_mailer.mailbox.dovecot.setup import DovecotPorts, DovecotSetup, write_dovecot_config
from releves_mailer.notify.outbox import Outbox
from releves_mailer.partner.alerts import AlertService
from releves_mailer.partner.links import LinkService
from releves_mailer.partner.mails import MailComposer, PartnerSettings
from releves_mailer.render import Renderer
from releves_mailer.services import Services
from releves_mailer.signing.secrets import KeyRing, KeyRingError
from releves_mailer.signing.smime import SmimeSigner

__all__ = [
    "Collection",
    "TableCount",
    "copy_database_to",
    "current_schema",
    "head_revisions",
    "link_service",
    "load_keyring",
    "open_collection",
    "open_services",
    "running_public_url",
    "upgrade_schema",
    "write_dovecot_setup",
]


@asynccontextmanager
async def _database(config: Config, *, check: bool = True) -> AsyncIterator[Database]:
    """The configured database, refused when its schema is not the one this code expects."""
    database = Database(config.database_url)
    try:
        if check:
            try:
                await check_schema(database)
            except SchemaOutOfDate as error:
                raise ConfigError(str(error), file=config.source) from None
        yield database
    finally:
        await database.dispose()


@asynccontextmanager
async def open_services(
    config: Config, clock: Clock | None = None, *, links: bool = False
) -> AsyncIterator[Services]:
    """The services over the configured database; ``links`` adds the link service (mails
    queued in the outbox for the daemon)."""
    clock = clock or SystemClock()
    async with _database(config) as database:
        service = link_service(config, database, clock) if links else None
        yield Services(database, clock, service)


async def current_schema(config: Config) -> frozenset[str]:
    """The revisions the configured database is at (raises the driver's error if unreachable)."""
    database = Database(config.database_url)
    try:
        return await current_heads(database)
    finally:
        await database.dispose()


async def upgrade_schema(config: Config) -> tuple[frozenset[str], frozenset[str]]:
    """Apply every pending migration; returns the revisions before and after."""
    database = Database(config.database_url)
    try:
        before = await current_heads(database)
        await upgrade(database)
        return before, await current_heads(database)
    finally:
        await database.dispose()


def load_keyring(config: Config) -> KeyRing:
    """The keys that decrypt the stored bank tokens."""
    try:
        return KeyRing.from_file(config.path(config.secrets.key_file))
    except KeyRingError as error:
        raise UserError(f"clés de chiffrement : {error}") from None


def link_service(config: Config, database: Database, clock: Clock | None = None) -> LinkService:
    """The link service as the command line uses it: mails are queued for the daemon."""
    clock = clock or SystemClock()
    return LinkService(database, _outbox(config, database, clock), _composer(config, clock))


def _outbox(config: Config, database: Database, clock: Clock) -> Outbox:
    return Outbox(
        database,
        clock,
        config.relay,
        domain=config.portal.domain,
        data_dir=config.data_dir,
        signer=SmimeSigner.from_files(
            config.path(config.signing.key), config.path(config.signing.certificate)
        ),
    )


def running_public_url(config: Config) -> str | None:
    """The public address of the daemon running on this data directory, or None.

    ``serve`` writes it in ``ports.json`` with its process id and removes the file when it
    stops; a file left by a killed daemon names a dead process and is ignored.
    """
    try:
        running = json.loads((config.data_dir / "ports.json").read_text(encoding="utf-8"))
        pid, url = int(running["pid"]), str(running["public_url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return url


def _composer(config: Config, clock: Clock) -> MailComposer:
    """Mails built by a command carry the links of the running daemon's address (with
    ``--http-port 0`` it differs from the config's)."""
    settings = PartnerSettings.from_config(config)
    url = running_public_url(config)
    if url is not None:
        settings = dataclasses.replace(settings, public_url=url.rstrip("/"))
    return MailComposer(Renderer.from_config(config), settings, clock)


@dataclass
class Collection:
    """What a collecting command works with: the daemon's own collector and aggregators."""

    services: Services
    aggregators: Aggregators
    collector: Collector

    @property
    def keyring(self) -> KeyRing:
        return self.collector.collection.keyring

    async def connect_test_bank(
        self,
        redevable_id: int,
        bank: TestBank,
        *,
        seed: int | None,
        errors: Iterable[ScheduledError] = (),
    ) -> int:
        """Connect a redevable to the test bank directly; returns the new connection's id."""
        connection = await connect_test_bank(
            self.services.database,
            redevable_id,
            bank=bank,
            keyring=self.keyring,
            clock=self.collector.clock,
            seed=seed,
            errors=errors,
        )
        return connection.id


@asynccontextmanager
async def open_collection(config: Config, clock: Clock) -> AsyncIterator[Collection]:
    """The services, every enabled aggregator and the collector with the daemon's alert hook.

    Links and alerts are queued in the outbox; the daemon sends them.
    """
    keyring = load_keyring(config)
    async with _database(config) as database, open_aggregators(config, clock) as found:
        outbox = _outbox(config, database, clock)
        composer = _composer(config, clock)
        links = LinkService(database, outbox, composer)
        alerts = AlertService(database, links, outbox, composer, keyring, found.modes)
        collector = Collector(
            database,
            clock,
            found.providers,
            keyring,
            RefreshPlan.from_config(config.collection),
            alerts,
        )
        yield Collection(Services(database, clock, links), found, collector)


async def copy_database_to(
    config: Config, url: str, progress: Callable[[str, int], None] | None = None
) -> list[TableCount]:
    """Copy the configured database into the empty one at ``url`` (see :mod:`db.copy`)."""
    source = Database(config.database_url)
    target = Database(async_database_url(url))
    try:
        try:
            await check_schema(source)
        except SchemaOutOfDate as error:
            raise ConfigError(str(error), file=config.source) from None
        try:
            async with target.engine.connect():
                pass
        except Exception as error:  # any driver error means "unreachable"
            raise UserError(f"base cible injoignable ({type(error).__name__}) : {error}") from None
        return await copy_database(source, target, progress=progress)
    finally:
        await source.dispose()
        await target.dispose()


def write_dovecot_setup(
    config: Config,
    folder: Path,
    *,
    listen: str,
    ports: tuple[int, int, int],
    internal_user: str | None = None,
    mail_user: str | None = None,
) -> DovecotSetup:
    """The configuration of a Dovecot instance for the installation of ``config``."""
    return write_dovecot_config(
        folder,
        database_url=config.database_url,
        domain=config.portal.domain,
        certificate=config.path(config.tls.certificate),
        key=config.path(config.tls.key),
        listen=listen,
        ports=DovecotPorts(*ports),
        internal_user=internal_user,
        mail_user=mail_user,
    )

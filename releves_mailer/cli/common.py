"""Plumbing shared by the command groups: config, database, keys, collection, output."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import update_wrapper
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import click

from releves_mailer.aggregators.registry import Aggregators, open_aggregators
from releves_mailer.clock import PARIS, Clock, SystemClock
from releves_mailer.collect.scheduler import RefreshPlan
from releves_mailer.collect.service import RunReport
from releves_mailer.config import Config, ConfigError, find_config_path, load_config
from releves_mailer.daemon.jobs import Collector
from releves_mailer.db import Database
from releves_mailer.db.migrate import SchemaOutOfDate, check_schema
from releves_mailer.errors import UserError
from releves_mailer.notify.outbox import Outbox
from releves_mailer.partner.alerts import AlertService
from releves_mailer.partner.links import LinkService
from releves_mailer.partner.mails import MailComposer, PartnerSettings
from releves_mailer.render import Renderer, format_montant
from releves_mailer.signing.secrets import KeyRing, KeyRingError
from releves_mailer.signing.smime import SmimeSigner

__all__ = [
    "REFRESH_FAILED",
    "AppContext",
    "Collection",
    "async_command",
    "echo_json",
    "exit_on_failed_refresh",
    "format_money",
    "link_service",
    "load_keyring",
    "open_collection",
    "open_database",
    "parse_datetime",
    "pass_app",
]

#: Exit status of ``collect``, ``simulate`` and ``banks connect`` when a refresh failed (the
#: work was done and stored; a cron job learns that a bank needs attention).
REFRESH_FAILED = 3

P = ParamSpec("P")
T = TypeVar("T")


@dataclass
class AppContext:
    """What the top-level options give every command."""

    config_option: Path | None = None
    debug: bool = False
    _config: Config | None = field(default=None, repr=False)

    @property
    def config_path(self) -> Path:
        return find_config_path(self.config_option)

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config


pass_app = click.make_pass_decorator(AppContext, ensure=True)


def async_command(
    function: Callable[Concatenate[AppContext, P], Coroutine[Any, Any, T]],
) -> Callable[P, T]:
    """Run an ``async def`` command body, handing it the :class:`AppContext` first."""

    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        app = click.get_current_context().ensure_object(AppContext)
        return asyncio.run(function(app, *args, **kwargs))

    return update_wrapper(wrapper, function)


@asynccontextmanager
async def open_database(config: Config, *, check: bool = True) -> AsyncIterator[Database]:
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


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)


def echo_json(value: Any) -> None:
    """Print ``value`` as indented JSON (dates and times in ISO 8601)."""
    click.echo(json.dumps(value, ensure_ascii=False, indent=2, default=_json_default))


def format_money(amount: int | None, currency: str) -> str:
    """An amount as the commands print it: French money text, ``-`` when unknown."""
    return "-" if amount is None else format_montant(amount, currency)


def parse_datetime(value: str) -> dt.datetime:
    """A ``--at`` value: ISO 8601, Paris time unless it names its offset; returned in UTC."""
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UserError(
            f"date et heure invalides « {value} » (attendu AAAA-MM-JJTHH:MM, heure de Paris)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=PARIS)
    return moment.astimezone(dt.UTC)


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


def _composer(config: Config, clock: Clock) -> MailComposer:
    return MailComposer(Renderer.from_config(config), PartnerSettings.from_config(config), clock)


@dataclass
class Collection:
    """What a collecting command works with: the daemon's own collector and aggregators."""

    database: Database
    aggregators: Aggregators
    collector: Collector

    @property
    def keyring(self) -> KeyRing:
        return self.collector.collection.keyring


@asynccontextmanager
async def open_collection(config: Config, clock: Clock) -> AsyncIterator[Collection]:
    """The database, every enabled aggregator and the collector with the daemon's alert hook.

    Links and alerts are queued in the outbox; the daemon sends them.
    """
    keyring = load_keyring(config)
    async with open_database(config) as database, open_aggregators(config, clock) as found:
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
        yield Collection(database, found, collector)


def exit_on_failed_refresh(report: RunReport | int) -> None:
    """Exit with :data:`REFRESH_FAILED` when a refresh failed (a report or a count)."""
    failed = report if isinstance(report, int) else report.failed_refreshes
    if failed:
        raise SystemExit(REFRESH_FAILED)

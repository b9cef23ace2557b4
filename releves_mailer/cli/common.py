"""Plumbing shared by the command groups: config, services, collection, output."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import update_wrapper
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import click

from releves_mailer.clock import PARIS, Clock
from releves_mailer.config import Config, find_config_path, load_config
from releves_mailer.errors import UserError
from releves_mailer.render import format_montant

if TYPE_CHECKING:
    from releves_mailer.collect.service import RunReport
    from releves_mailer.services import Services
    from releves_mailer.services.portfolio import RedevableView
    from releves_mailer.services.wiring import Collection

__all__ = [
    "REFRESH_FAILED",
    "AppContext",
    "account_filter",
    "async_command",
    "echo_json",
    "exit_on_failed_refresh",
    "find_redevable",
    "format_money",
    "listed_accounts",
    "open_collection",
    "open_services",
    "parse_datetime",
    "pass_app",
]

#: Exit status of ``collect``, ``simulate`` and ``banks connect`` when a refresh failed (the
#: work was done and stored; a cron job learns that a bank needs attention).
REFRESH_FAILED = 3

P = ParamSpec("P")
T = TypeVar("T")


# The wiring imports every room of the daemon: loaded when a command opens it, so that a
# command starts with only what it uses (and --help at once).
@asynccontextmanager
async def open_services(
    config: Config, clock: Clock | None = None, *, links: bool = False
) -> AsyncIterator[Services]:
    """:func:`releves_mailer.services.wiring.open_services`."""
    from releves_mailer.services import wiring

    async with wiring.open_services(config, clock, links=links) as services:
        yield services


@asynccontextmanager
async def open_collection(config: Config, clock: Clock) -> AsyncIterator[Collection]:
    """:func:`releves_mailer.services.wiring.open_collection`."""
    from releves_mailer.services import wiring

    async with wiring.open_collection(config, clock) as collection:
        yield collection


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


def exit_on_failed_refresh(report: RunReport | int) -> None:
    """Exit with :data:`REFRESH_FAILED` when a refresh failed (a report or a count)."""
    failed = report if isinstance(report, int) else report.failed_refreshes
    if failed:
        raise SystemExit(REFRESH_FAILED)


async def find_redevable(services: Services, siren: str, login: str | None) -> RedevableView:
    """The redevable of ``SIREN`` (``--account``: of that account); an ambiguous SIREN names
    the option that settles it."""
    try:
        return await services.portfolio.find_redevable(siren, login)
    except UserError as error:
        if error.field != "account":
            raise
        raise UserError(f"{error.message} (--account LOGIN)") from None


def account_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    """``--account LOGIN`` and ``--secondaries`` of the list commands (all accounts without)."""
    function = click.option(
        "--secondaries",
        "include_secondaries",
        is_flag=True,
        help="Avec --account : inclut les comptes secondaires de ce compte principal.",
    )(function)
    return click.option(
        "--account", "account_login", help="Seulement les redevables de ce compte portail."
    )(function)


async def listed_accounts(
    services: Services, login: str | None, secondaries: bool
) -> list[int] | None:
    """The portal accounts a list command keeps (None: every account)."""
    if not login:
        if secondaries:
            raise UserError("--secondaries s'emploie avec --account LOGIN")
        return None
    return await services.portfolio.account_ids(login, secondaries=secondaries)

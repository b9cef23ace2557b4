"""Plumbing shared by the command groups: config loading, database access, output."""

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

from releves_mailer.config import Config, ConfigError, find_config_path, load_config
from releves_mailer.db import Database
from releves_mailer.db.migrate import SchemaOutOfDate, check_schema

__all__ = [
    "AppContext",
    "async_command",
    "echo_json",
    "open_database",
    "pass_app",
]

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

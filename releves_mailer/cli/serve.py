"""The ``serve`` command: runs the daemon in the foreground."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import click

from releves_mailer.cli.common import AppContext, pass_app
from releves_mailer.clock import SystemClock
from releves_mailer.config import Config
from releves_mailer.daemon.lock import DataDirLock
from releves_mailer.daemon.main import Daemon, ListenOverrides
from releves_mailer.files import make_private_dir
from releves_mailer.logs import configure_logging, secrets_of

__all__ = ["listen_options", "log_format_option", "serve", "with_log_format"]


def listen_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """``--listen`` and the per-server port overrides shared by ``serve`` and ``demo``."""
    port = click.IntRange(0, 65535)
    for option in reversed(
        [
            click.option("--listen", help="Adresse d'écoute de tous les serveurs."),
            click.option("--imap-port", type=port, help="Port IMAP (0 : port libre)."),
            click.option("--imaps-port", type=port, help="Port IMAPS (0 : port libre)."),
            click.option("--smtp-port", type=port, help="Port SMTP (0 : port libre)."),
            click.option("--http-port", type=port, help="Port HTTP (0 : port libre)."),
        ]
    ):
        function = option(function)
    return function


def log_format_option(function: Callable[..., Any]) -> Callable[..., Any]:
    """``--log-format``, which wins over the config's ``logging.format`` (reloads included)."""
    return click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        help="Format du journal : texte (par défaut) ou json (un objet JSON par ligne).",
    )(function)


def with_log_format(config: Config, log_format: str | None) -> Config:
    if log_format is None:
        return config
    logging_section = config.logging.model_copy(update={"format": log_format})
    return config.model_copy(update={"logging": logging_section})


def print_ports(daemon: Daemon) -> None:
    ports = ", ".join(f"{name} {port}" for name, port in daemon.ports.items() if port)
    click.echo(
        f"releves-mailer prêt ({ports}) ; ports écrits dans {daemon.config.data_dir / 'ports.json'}"
    )


@click.command()
@listen_options
@log_format_option
@pass_app
def serve(
    app: AppContext,
    listen: str | None,
    imap_port: int | None,
    imaps_port: int | None,
    smtp_port: int | None,
    http_port: int | None,
    log_format: str | None,
) -> None:
    """Lance le service : serveurs IMAP, IMAPS et SMTP, collecte planifiée."""
    overrides = ListenOverrides(listen, imap_port, imaps_port, smtp_port, http_port)
    config = with_log_format(overrides.apply(app.config), log_format)
    # Refuse before anything is logged or opened when another daemon holds the folder.
    lock = DataDirLock(config.data_dir)
    make_private_dir(config.data_dir)
    lock.acquire()
    configure_logging(config.logging, config.data_dir, secrets_of(config))
    daemon = Daemon(config, SystemClock(), lock=lock, log_format=log_format)
    asyncio.run(daemon.run(on_ready=print_ports))

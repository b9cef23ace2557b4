"""The ``serve`` command: runs the daemon in the foreground."""

from __future__ import annotations

import asyncio
import errno
import re
from collections.abc import Callable
from typing import Any

import click

from releves_mailer.cli.common import AppContext, pass_app
from releves_mailer.clock import SystemClock
from releves_mailer.config import Config
from releves_mailer.daemon.lock import DataDirLock
from releves_mailer.daemon.main import Daemon, ListenOverrides
from releves_mailer.errors import UserError
from releves_mailer.files import make_private_dir
from releves_mailer.logs import configure_logging, secrets_of

__all__ = [
    "address_in_use",
    "listen_options",
    "log_format_option",
    "run_daemon",
    "serve",
    "with_log_format",
]

#: Each server: its name for users, its config key and its command-line option.
_SERVICES = (
    ("IMAP", "imap.port", "--imap-port"),
    ("IMAPS", "imap.tls_port", "--imaps-port"),
    ("SMTP", "smtp.port", "--smtp-port"),
    ("HTTP (portail)", "http.port", "--http-port"),
)


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


def address_in_use(config: Config, error: OSError) -> str:
    """Which server could not listen, on which address, and the option that moves it."""
    ports = {
        "imap.port": config.imap.port,
        "imap.tls_port": config.imap.tls_port,
        "smtp.port": config.smtp.port,
        "http.port": config.http.port,
    }
    found = re.search(r"\(['\"]?([^'\",]*)['\"]?, (\d+)", str(error))
    port = int(found[2]) if found else None
    for name, key, option in _SERVICES:
        if port is not None and ports[key] == port:
            host = found[1] if found else ""
            return (
                f"le port {port} du serveur {name} est déjà utilisé sur {host} par un autre "
                f"programme (un autre releves-mailer ?) : arrêtez-le, ou choisissez un autre "
                f"port avec {option} N (0 : un port libre) ou la clé {key} de la configuration"
            )
    return (
        "une adresse d'écoute est déjà utilisée par un autre programme : changez de port avec "
        "--imap-port, --imaps-port, --smtp-port ou --http-port (0 : un port libre)"
    )


def run_daemon(daemon: Daemon, on_ready: Callable[[Daemon], Any]) -> None:
    """Run the daemon until it stops; a port already taken is told in French."""
    try:
        asyncio.run(daemon.run(on_ready=on_ready))
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        raise UserError(address_in_use(daemon.config, error)) from None


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
    run_daemon(daemon, print_ports)

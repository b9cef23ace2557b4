"""The mailbox engine the daemon runs, chosen by ``[mailbox] engine``: the built-in store
with the daemon's own IMAP server, or a Dovecot instance reached over LMTP and IMAP.

:func:`open_engine` is the one place that knows the choice; the composition root takes from
it the delivery sink (statements, the outbox's local copies, SMTP inbound, EDI replies), the
quota measure, where the webmail reads the boxes, the health check's part, the IMAP server
when the daemon runs one, and the housekeeping of the store's files when there is a store.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from sqlalchemy.engine import make_url

from releves_mailer.clock import Clock
from releves_mailer.config import Config, ConfigError
from releves_mailer.daemon.health import EnginePart, dovecot_part, store_folder_part
from releves_mailer.db import Database
from releves_mailer.errors import UserError
from releves_mailer.mailbox.contracts import MailboxLimits
from releves_mailer.mailbox.dovecot.lmtp import LmtpSink
from releves_mailer.mailbox.dovecot.setup import DovecotSetup, load_dovecot_setup
from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.sink import MessageSink
from releves_mailer.mailbox.smtp import UsageFunction
from releves_mailer.mailbox.store import MessageStore
from releves_mailer.portfolio.auth import PortfolioAuthenticator
from releves_mailer.portfolio.logins import LoginGuard
from releves_mailer.webmail import endpoint_from_config
from releves_mailer.webmail.imap import ImapEndpoint

__all__ = ["MailboxEngine", "open_engine"]

_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "*": "127.0.0.1", "": "127.0.0.1"}  # noqa: S104


@dataclass
class MailboxEngine:
    """What the daemon uses of the engine holding the boxes."""

    #: ``[mailbox] engine``.
    name: str
    #: Where every local delivery goes.
    sink: MessageSink
    #: Bytes a box holds, for ``[smtp] mailbox_quota``.
    usage: UsageFunction
    #: Where the webmail reads the boxes.
    webmail: ImapEndpoint
    #: The engine's part of ``/health``.
    health: EnginePart
    #: The daemon's own IMAP server, when it serves the boxes itself.
    imap: ImapServer | None = None
    #: The IMAP ports readers use (``ports.json``): the daemon's, or Dovecot's.
    ports: dict[str, int | None] = field(default_factory=dict)
    #: Hourly clean-up of the engine's files (returns how many went), if it needs one.
    housekeeping: Callable[[], Awaitable[int]] | None = None


async def open_engine(
    config: Config,
    database: Database,
    clock: Clock,
    stack: AsyncExitStack,
    *,
    tls: ssl.SSLContext,
    authenticator: PortfolioAuthenticator,
    guard: LoginGuard,
) -> MailboxEngine:
    """Build and start the configured engine; what it started stops with ``stack``."""
    if config.mailbox.engine == "dovecot":
        return dovecot_engine(config)
    limits = MailboxLimits(config.smtp.mailbox_quota, config.imap.max_folders_per_user)
    store = MessageStore(database, config.data_dir / "messages", clock, limits=limits)
    await store.start(stack)
    imap = ImapServer(config.imap, store, authenticator, tls, clock, guard=guard)
    await imap.start(stack)
    return MailboxEngine(
        name="builtin",
        sink=store,
        usage=store.usage,
        webmail=endpoint_from_config(config, imap.port, imap.tls_port),
        health=store_folder_part(store.blob_dir),
        imap=imap,
        ports={"imap": imap.port, "imaps": imap.tls_port},
        housekeeping=store.collect_garbage,
    )


def dovecot_engine(config: Config) -> MailboxEngine:
    """Dovecot as ``dovecot-config`` wrote it into ``[mailbox] dovecot_dir``: deliveries
    over LMTP, the webmail on its IMAP, no IMAP server of the daemon's own."""
    if not make_url(config.database_url).drivername.startswith("postgresql"):
        raise ConfigError(
            "le moteur « dovecot » lit les comptes dans la base PostgreSQL de l'installation ; "
            "la base configurée est SQLite : copiez-la vers PostgreSQL (releves-mailer db copy "
            '--to postgresql://…) puis réglez [database] url, ou gardez engine = "builtin"',
            file=config.source,
            key="mailbox.engine",
        )
    try:
        setup = load_dovecot_setup(config.path(config.mailbox.dovecot_dir))
        sink = LmtpSink(setup)
    except UserError as error:
        raise ConfigError(str(error), file=config.source, key="mailbox.dovecot_dir") from None
    except OSError as error:
        raise ConfigError(
            f"{setup.master_password_file} : illisible ({type(error).__name__})",
            file=config.source,
            key="mailbox.dovecot_dir",
        ) from None
    return MailboxEngine(
        name="dovecot",
        sink=sink,
        usage=sink.usage,
        webmail=_dovecot_webmail(config, setup),
        health=dovecot_part(sink.unreachable),
        ports={"imap": setup.ports.imap, "imaps": setup.ports.imaps},
    )


def _dovecot_webmail(config: Config, setup: DovecotSetup) -> ImapEndpoint:
    """``[webmail]`` when it names a server; else Dovecot's plain IMAP over the loopback, or
    its IMAPS (with ``tls = "imaps"``, or when Dovecot listens on another address: it refuses
    plaintext logins there) trusting the installation's certificate."""
    section = config.webmail
    if section.imap_host:
        return endpoint_from_config(config, None, None)
    host = _LOOPBACK.get(setup.listen, setup.listen)
    if section.tls == "none" and host in ("127.0.0.1", "::1", "localhost"):
        return ImapEndpoint(host, section.imap_port or setup.ports.imap)
    context = ssl.create_default_context(cafile=str(setup.certificate))
    # Dovecot shows the installation's own certificate, reached by address: that one alone.
    context.check_hostname = False
    return ImapEndpoint(host, section.imap_port or setup.ports.imaps, context)

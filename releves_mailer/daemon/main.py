"""Composition root: builds every component from the config and owns their lifecycle.

Components start in order inside one ``AsyncExitStack`` and stop in reverse. SIGTERM and
SIGINT stop the daemon cleanly (IMAP sessions get BYE, transactions in flight finish or roll
back); SIGHUP re-reads the config file for ``[logging]`` and ``[templates]``, reopens the log
and reloads the templates. The daemon holds its data directory's lock while it runs, and
tells systemd (when it started it) when it is ready, alive, reloading and stopping.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from releves_mailer.aggregators.contract import RouteHooks
from releves_mailer.aggregators.registry import open_aggregators
from releves_mailer.clock import Clock
from releves_mailer.collect.connections import connections_named
from releves_mailer.collect.scheduler import RefreshPlan
from releves_mailer.config import Config, ConfigError, LoggingSection, load_config
from releves_mailer.daemon.engine import open_engine
from releves_mailer.daemon.gc_tuning import tune_garbage_collector
from releves_mailer.daemon.health import ops_routes
from releves_mailer.daemon.jobs import Collector
from releves_mailer.daemon.lock import DataDirLock
from releves_mailer.daemon.systemd import Notifier, watchdog_interval
from releves_mailer.db import Database
from releves_mailer.db.claims import worker_identity
from releves_mailer.db.migrate import SchemaOutOfDate, check_schema
from releves_mailer.delivery.service import StatementDelivery
from releves_mailer.files import PRIVATE_DIR, make_private_dir, write_atomically
from releves_mailer.listeners import reserve_port
from releves_mailer.logs import configure_logging, secrets_of
from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.smtp import InboundHandler, SmtpServer, sink_deliverer
from releves_mailer.metrics import CountingGuard, LoopMonitor, Metrics
from releves_mailer.notify.outbox import Outbox
from releves_mailer.partner.alerts import AlertService
from releves_mailer.partner.flow import PartnerFlow
from releves_mailer.partner.links import LinkService
from releves_mailer.partner.mails import MailComposer, PartnerSettings
from releves_mailer.portfolio.auth import PasswordGuard, PortfolioAuthenticator
from releves_mailer.portfolio.throttle import DatabaseGuardStore
from releves_mailer.render import Renderer, RenderError
from releves_mailer.services import Services
from releves_mailer.services.edi import AnalysisJobs, EdiService, discovery_settings
from releves_mailer.services.edi_mail import EdiMailbox
from releves_mailer.signing.secrets import KeyRing
from releves_mailer.signing.smime import SmimeSigner
from releves_mailer.waiting import wait_any
from releves_mailer.web.app import create_app
from releves_mailer.web.portal import setup_portal
from releves_mailer.web.portal.edi import setup as setup_edi_portal
from releves_mailer.web.server import HttpServer
from releves_mailer.webmail import Webmail, limits_from_config

__all__ = ["Daemon", "ListenOverrides", "server_ssl_context"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ListenOverrides:
    """Command-line overrides of the listen address and ports (0 picks a free port)."""

    listen: str | None = None
    imap_port: int | None = None
    imaps_port: int | None = None
    smtp_port: int | None = None
    http_port: int | None = None

    def apply(self, config: Config) -> Config:
        def given(**values: object) -> dict[str, object]:
            return {key: value for key, value in values.items() if value is not None}

        listen = self.listen
        http = config.http.model_copy(update=given(listen=listen, port=self.http_port))
        if http.port == 0:
            # Links carry the HTTP address, so its port must be known before the app is built.
            http = http.model_copy(update={"port": reserve_port(http.listen)})
        default_url = f"http://{config.http.listen}:{config.http.port}"
        if config.http.public_url.rstrip("/") == default_url:
            host = "127.0.0.1" if http.listen in ("0.0.0.0", "") else http.listen  # noqa: S104
            host = "[::1]" if host == "::" else (f"[{host}]" if ":" in host else host)
            http = http.model_copy(update={"public_url": f"http://{host}:{http.port}"})
        return config.model_copy(
            update={
                "imap": config.imap.model_copy(
                    update=given(listen=listen, port=self.imap_port, tls_port=self.imaps_port)
                ),
                "smtp": config.smtp.model_copy(update=given(listen=listen, port=self.smtp_port)),
                "http": http,
            }
        )


def server_ssl_context(config: Config) -> ssl.SSLContext:
    """TLS context of the IMAP/SMTP servers, from ``[tls]``."""
    certificate = config.path(config.tls.certificate)
    key = config.path(config.tls.key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certificate, key)
    except FileNotFoundError as error:
        raise ConfigError(
            f"fichier introuvable {error.filename}", file=config.source, key="tls"
        ) from None
    except ssl.SSLError as error:
        raise ConfigError(
            f"certificat ou clé TLS illisible ({error.reason})", file=config.source, key="tls"
        ) from None
    return context


class Daemon:
    """The running service: database, mailbox engine, SMTP and HTTP servers."""

    #: What SIGHUP applies from the re-read config file; other sections need a restart.
    RELOADED_SECTIONS = ("logging", "templates")

    def __init__(
        self,
        config: Config,
        clock: Clock,
        *,
        lock: DataDirLock | None = None,
        log_format: str | None = None,
    ) -> None:
        """``lock``: the data directory's lock when the caller took it already (``demo``
        locks before building); otherwise :meth:`run` takes it. ``log_format``: the
        command line's ``--log-format``, which wins over the file at every reload too."""
        self.config = config
        self.clock = clock
        self.ports: dict[str, int | None] = {}
        self.renderer: Renderer | None = None
        #: This daemon's own metrics registry (``/metrics``).
        self.metrics = Metrics()
        self.lock = lock if lock is not None else DataDirLock(config.data_dir)
        self.log_format = log_format
        self.notifier = Notifier.from_environment()
        self._stop = asyncio.Event()
        self._file_config: Config | None = None

    def stop(self) -> None:
        if not self._stop.is_set():
            self.notifier.notify(STOPPING=1, STATUS="arrêt en cours")
        self._stop.set()

    async def start(self, stack: AsyncExitStack) -> None:
        config = self.config
        # Folders made before 0700 was the rule: closing the top one hides all they hold.
        make_private_dir(config.data_dir)
        config.data_dir.chmod(PRIVATE_DIR)
        database = Database(config.database_url)
        stack.push_async_callback(database.dispose)
        try:
            await check_schema(database)
        except SchemaOutOfDate as error:
            raise ConfigError(str(error), file=config.source) from None
        context = server_ssl_context(config)
        authenticator = PortfolioAuthenticator(database, config.portal.domain)
        # One guard for IMAP, SMTP AUTH and the portal: no protocol is a softer door.
        guard = PasswordGuard(
            self.clock,
            config.auth,
            config.portal.domain,
            store=DatabaseGuardStore(database, self.clock, config.auth.window),
        )
        metrics = self.metrics
        # The boxes: the built-in store and IMAP server, or Dovecot (``[mailbox] engine``).
        engine = await open_engine(
            config,
            database,
            self.clock,
            stack,
            tls=context,
            authenticator=authenticator,
            guard=CountingGuard(guard, "imap", metrics),
        )
        self.mailbox, sink = engine, engine.sink
        edi = EdiService(database, self.clock, discovery_settings(config))
        handler = InboundHandler(
            authenticator,
            sink_deliverer(sink, config.portal.domain),
            self.clock,
            config.portal.domain,
            guard=CountingGuard(guard, "smtp", metrics),
            usage=engine.usage,
            config=config.smtp,
            deposits=EdiMailbox(edi, sink, config.portal.domain, self.clock),
        )
        smtp = SmtpServer(config.smtp, handler, context, config.portal.domain)
        await smtp.start(stack)
        self.renderer = Renderer.from_config(config)
        signer = SmimeSigner.from_files(
            config.path(config.signing.key), config.path(config.signing.certificate)
        )
        # Several daemons may share one PostgreSQL database: each claims its work by name.
        worker, lease = worker_identity(), RefreshPlan.from_config(config.collection).lease
        self.delivery = StatementDelivery(
            database,
            sink,
            self.renderer,
            signer,
            self.clock,
            config.portal,
            metrics=metrics,
            worker=worker,
            lease=lease,
        )
        self.outbox = Outbox(
            database,
            self.clock,
            config.relay,
            domain=config.portal.domain,
            data_dir=config.data_dir,
            local_sink=sink,
            signer=signer,
            worker=worker,
        )
        keyring = KeyRing.from_file(config.path(config.secrets.key_file))
        aggregators = await stack.enter_async_context(open_aggregators(config, self.clock))
        settings = PartnerSettings.from_config(config)
        composer = MailComposer(self.renderer, settings, self.clock)
        links = LinkService(database, self.outbox, composer)
        self.alerts = AlertService(
            database, links, self.outbox, composer, keyring, aggregators.modes
        )
        self.collector = Collector(
            database,
            self.clock,
            aggregators.providers,
            keyring,
            RefreshPlan.from_config(config.collection),
            self.alerts,
            self.delivery,
            metrics=metrics,
            worker=worker,
        )
        setups: list[Callable[[web.Application], None]] = [
            functools.partial(
                setup_portal,
                services=Services(
                    database,
                    self.clock,
                    links,
                    plan=RefreshPlan.from_config(config.collection),
                    max_secondaries=config.portal.max_secondary_accounts,
                ),
                settings=settings,
                guard=CountingGuard(guard, "http", metrics),
                import_max_lines=config.portal.import_max_lines,
                webmail_engine=Webmail.create(
                    engine.webmail,
                    keyring,
                    self.clock,
                    trusted=[signer.certificate],
                    limits=limits_from_config(config),
                ),
            )
        ]
        health, ops = ops_routes(config.http, database, self.clock, engine.health, metrics)
        setups.append(ops)
        edi_jobs = AnalysisJobs(edi)
        stack.push_async_callback(edi_jobs.close)
        setups.append(functools.partial(setup_edi_portal, service=edi, jobs=edi_jobs))
        hooks = RouteHooks(refresh_named=functools.partial(self._refresh_named, database))
        setups.extend(aggregators.routes(hooks))
        flow = None
        if aggregators.modes:
            # The first mode is the default of new links: Powens when it is configured.
            flow = PartnerFlow(
                database,
                links,
                self.outbox,
                composer,
                keyring,
                aggregators.modes,
                default_mode=next(iter(aggregators.modes)),
                after_finish=self._refresh_soon,
            )
        app = create_app(
            renderer=self.renderer,
            settings=settings,
            flow=flow,
            setups=setups,
        )
        http = HttpServer(config.http, app)
        await http.start(stack)
        self.imap, self.smtp, self.http = engine.imap, smtp, http
        servers: dict[str, ImapServer | SmtpServer | HttpServer] = {"smtp": smtp, "http": http}
        if engine.imap is not None:
            servers["imap"] = engine.imap
        for name, server in sorted(servers.items()):
            health.watch(name, server, server.limiter)
        metrics.watch_listeners({name: server.limiter for name, server in servers.items()})
        self._spawn(stack, LoopMonitor(metrics).run(self._stop), "event-loop monitor")
        self._spawn(stack, self.outbox.run(self._stop), "outbox")
        self._spawn(stack, self.collector.run(self._stop), "collection")
        if engine.housekeeping is not None:
            self._spawn(stack, self._housekeeping(engine.housekeeping), "housekeeping")
        interval = watchdog_interval()
        if self.notifier.enabled and interval is not None:
            self._spawn(stack, self.notifier.ping_watchdog(interval, self._stop), "watchdog")
        self._spawn(stack, edi.run(self._stop), "edi")
        # With Dovecot, its IMAP ports: where the boxes are read.
        self.ports = {
            **engine.ports,
            "smtp": smtp.port,
            "http": http.port,
        }
        self._write_ports(config.data_dir / "ports.json")
        # Commands read it for the running daemon's address: it must not outlive the daemon.
        stack.callback((config.data_dir / "ports.json").unlink, missing_ok=True)

    async def _refresh_named(
        self, database: Database, provider: str, provider_connection_id: str
    ) -> list[int]:
        """An aggregator named one of its connections: refresh early the local ones holding it."""
        found = await connections_named(database, provider, provider_connection_id)
        for connection_id in found:
            self.collector.refresh_soon(connection_id)
        return found

    async def _housekeeping(self, collect_garbage: Callable[[], Awaitable[int]]) -> None:
        """Hourly: remove message files left without a row by rolled-back deliveries."""
        while not self._stop.is_set():
            try:
                removed = await collect_garbage()
                if removed:
                    _log.info("removed %d orphan message file(s)", removed)
            except Exception:
                _log.exception("housekeeping failed")
            await wait_any(self._stop, seconds=3600)

    async def _refresh_soon(self, connection_id: int) -> None:
        """After a client repaired or added a connection: refresh it without waiting a night."""
        _log.info("connection %d updated by its client: refreshing it now", connection_id)
        self.collector.refresh_soon(connection_id)

    def _spawn(self, stack: AsyncExitStack, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run a background loop until the daemon stops; it ends before the servers close."""
        task = asyncio.create_task(work, name=name)

        async def finish() -> None:
            self._stop.set()
            try:
                await asyncio.wait_for(task, timeout=30)
            except TimeoutError:
                task.cancel()
                _log.warning("%s did not stop in time", name)

        stack.push_async_callback(finish)

    def reload(self) -> None:
        """SIGHUP: re-read the config file, apply its ``[logging]`` and ``[templates]``,
        reopen the log file and reload the templates; name the changes that need a restart.
        """
        # MONOTONIC_USEC: what systemd 253+ pairs a reload with (sd_notify(3)).
        self.notifier.notify(
            RELOADING=1,
            STATUS="rechargement de la configuration",
            MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000,
        )
        restart_needed: list[str] = []
        fresh = self._read_config_file()
        if fresh is not None:
            if self._file_config is not None:
                restart_needed = [
                    name
                    for name in type(fresh).model_fields
                    if name not in self.RELOADED_SECTIONS
                    and getattr(fresh, name) != getattr(self._file_config, name)
                ]
            self._file_config = fresh
            self.config = self.config.model_copy(
                update={"logging": self._logging_of(fresh), "templates": fresh.templates}
            )
        configure_logging(self.config.logging, self.config.data_dir, secrets_of(self.config))
        templates = "templates reloaded"
        if self.renderer is not None:
            custom = self.config.templates.custom_dir
            try:
                self.renderer.reload(self.config.path(custom) if custom is not None else None)
            except RenderError as error:
                templates = "templates NOT reloaded"
                _log.error("templates not reloaded, the previous ones stay in use: %s", error)
        _log.info(
            "reloaded: configuration file %s, log level %s, log format %s, log file reopened, %s",
            "re-read" if fresh is not None else "unchanged",
            self.config.logging.level,
            self.config.logging.format,
            templates,
        )
        if restart_needed:
            _log.warning(
                "changed section(s) %s take effect only after a restart", ", ".join(restart_needed)
            )
        self.notifier.notify(READY=1, STATUS=self._status())

    def _read_config_file(self) -> Config | None:
        if self.config.source is None:
            return None
        try:
            return load_config(self.config.source)
        except ConfigError as error:
            _log.error("configuration file not reloaded, the running one stays: %s", error)
            return None

    def _logging_of(self, config: Config) -> LoggingSection:
        if self.log_format is None:
            return config.logging
        return config.logging.model_copy(update={"format": self.log_format})

    def _status(self) -> str:
        ports = ", ".join(f"{name} {port}" for name, port in self.ports.items() if port)
        return f"prêt ({ports})"

    def _write_ports(self, path: Path) -> None:
        """The ports in use, the public address links carry, and the daemon's process id."""
        running = {**self.ports, "public_url": self.config.http.public_url, "pid": os.getpid()}
        write_atomically(path, (json.dumps(running) + "\n").encode())

    async def run(self, on_ready: Callable[[Daemon], Awaitable[None] | None] | None = None) -> None:
        """Start everything, wait for SIGTERM/SIGINT (or :meth:`stop`), then stop in reverse.

        Refuses with :class:`~releves_mailer.daemon.lock.DaemonAlreadyRunning` before
        touching anything when another daemon holds the data directory.
        """
        owns_lock = not self.lock.held
        if owns_lock:
            make_private_dir(self.config.data_dir)
            self.lock.acquire()
        if self.config.source is not None and self._file_config is None:
            self._file_config = self._read_config_file()
        tune_garbage_collector()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            async with AsyncExitStack() as stack:
                self.notifier.notify(STATUS="démarrage")
                await self.start(stack)
                _log.info("releves-mailer ready: %s", self.ports)
                self.notifier.notify(READY=1, STATUS=self._status(), MAINPID=os.getpid())
                if on_ready is not None:
                    result = on_ready(self)
                    if result is not None:
                        await result
                await self._stop.wait()
                _log.info("stopping")
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            if owns_lock:
                self.lock.release()
            self.notifier.close()
        _log.info("stopped")

"""The daemon's health check: the state of each part, for ``GET /health``.

A part is down when (see ``docs/metrics.md``):

* ``base_de_donnees``: ``SELECT 1`` fails or takes more than 5 seconds;
* ``stockage_messages`` (the built-in engine): the message folder (or, before the first
  delivery makes it, the data folder) is missing or not writable, or its file system has
  less than :data:`MIN_FREE_BYTES` free;
* ``dovecot`` (``[mailbox] engine = "dovecot"``, in its place): Dovecot's LMTP or IMAP
  service does not greet the daemon;
* ``imap``, ``smtp``, ``http``: a listener is closed or its accept loop has ended;
* ``file_envoi`` (the outbox of mails to outside addresses): a mail has been waiting longer
  than ``[http] health_outbox_max_age_minutes`` (relay down or refusing), or the queue
  cannot be read;
* ``collecte``: no collection round has ended for ``[http] health_collection_max_age_minutes``
  (counted from the daemon's start before the first round).

Ages of the outbox are on the business clock (mails are dated by it); the age of the last
round is on the event loop's monotonic clock, so that a wrong or frozen business clock never
hides a collector that stopped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from releves_mailer.clock import Clock
from releves_mailer.config import HttpSection
from releves_mailer.db import Database
from releves_mailer.metrics import Metrics
from releves_mailer.services.monitoring import Monitoring
from releves_mailer.web.ops import setup_ops

__all__ = [
    "MIN_FREE_BYTES",
    "EnginePart",
    "HealthCheck",
    "Serving",
    "database_figures",
    "dovecot_part",
    "ops_routes",
    "store_folder_part",
]

_log = logging.getLogger(__name__)

#: Free space under which the message store is down: a statement mail does not fit anymore.
MIN_FREE_BYTES = 64 * 1024 * 1024
#: Longest wait for one part's answer.
CHECK_TIMEOUT = 5.0

OK = "ok"
DOWN = "panne"


class Serving(Protocol):
    """A server of the daemon as the health check sees it."""

    @property
    def serving(self) -> bool: ...


class Connections(Protocol):
    @property
    def count(self) -> int: ...


@dataclass(frozen=True)
class Listening:
    """One protocol's server and the limiter counting its open connections."""

    server: Serving
    limiter: Connections


def _part(ok: bool, **details: Any) -> dict[str, Any]:
    return {"etat": OK if ok else DOWN, **details}


def _seconds(delta: dt.timedelta | None) -> float | None:
    return None if delta is None else round(delta.total_seconds(), 3)


@dataclass(frozen=True)
class EnginePart:
    """The mailbox engine's part of the document: its name and its check."""

    name: str
    check: Callable[[], Awaitable[dict[str, Any]]]


def store_folder_part(store_dir: Path) -> EnginePart:
    """The built-in store's part: its folder writable, with room for a statement."""

    def inspect() -> tuple[bool, int]:
        # The folder is made by the first delivery: until then, where it will be made.
        folder = store_dir if store_dir.exists() else store_dir.parent
        usable = folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)
        return usable, shutil.disk_usage(folder).free if usable else 0

    async def check() -> dict[str, Any]:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                usable, free = await asyncio.to_thread(inspect)
        except (OSError, TimeoutError) as error:
            return _part(False, erreur=f"dossier des messages illisible ({type(error).__name__})")
        if not usable:
            return _part(False, erreur="dossier des messages absent ou non modifiable")
        if free < MIN_FREE_BYTES:
            return _part(False, espace_libre_octets=free, erreur="espace disque insuffisant")
        return _part(True, espace_libre_octets=free)

    return EnginePart("stockage_messages", check)


def dovecot_part(unreachable: Callable[[], Awaitable[list[str]]]) -> EnginePart:
    """Dovecot's part: its LMTP and IMAP services greet the daemon (``unreachable`` names
    those that do not)."""

    async def check() -> dict[str, Any]:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT * 2):
                missing = await unreachable()
        except TimeoutError:
            missing = ["pas de réponse"]
        if missing:
            return _part(False, erreur=f"Dovecot injoignable : {', '.join(missing)}")
        return _part(True)

    return EnginePart("dovecot", check)


class HealthCheck:
    """Checks every part at once; :meth:`check` gives (all up, the JSON document)."""

    def __init__(
        self,
        monitoring: Monitoring,
        engine: EnginePart,
        metrics: Metrics,
        *,
        outbox_max_age: dt.timedelta,
        collection_max_age: dt.timedelta,
    ) -> None:
        self.monitoring = monitoring
        self.engine = engine
        self.listening: dict[str, Listening] = {}
        self.metrics = metrics
        self.outbox_max_age = outbox_max_age
        self.collection_max_age = collection_max_age
        self._started = asyncio.get_running_loop().time()

    def watch(self, protocol: str, server: Serving, limiter: Connections) -> None:
        """Check this server (its name in the JSON: ``protocol``)."""
        self.listening[protocol] = Listening(server, limiter)

    async def check(self) -> tuple[bool, dict[str, Any]]:
        database, engine, outbox = await asyncio.gather(
            self._database(), self.engine.check(), self._outbox()
        )
        parts: dict[str, dict[str, Any]] = {
            "base_de_donnees": database,
            self.engine.name: engine,
        }
        for name, listening in sorted(self.listening.items()):
            parts[name] = _part(listening.server.serving, connexions=listening.limiter.count)
        parts["file_envoi"] = outbox
        parts["collecte"] = self._collection()
        healthy = all(part["etat"] == OK for part in parts.values())
        return healthy, {"etat": OK if healthy else DOWN, "composants": parts}

    async def _database(self) -> dict[str, Any]:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                await self.monitoring.ping()
        except Exception as error:
            _log.warning("health: the database does not answer: %s", type(error).__name__)
            return _part(False, erreur=f"la base ne répond pas ({type(error).__name__})")
        return _part(True)

    async def _outbox(self) -> dict[str, Any]:
        limit = self.outbox_max_age
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                figures = await self.monitoring.outbox()
        except Exception as error:
            return _part(False, erreur=f"file d'envoi illisible ({type(error).__name__})")
        stuck = figures.oldest_age is not None and figures.oldest_age > limit
        details: dict[str, Any] = {
            "en_attente": figures.pending,
            "plus_ancien_secondes": _seconds(figures.oldest_age),
            "abandonnes": figures.failed,
            "seuil_secondes": _seconds(limit),
        }
        if stuck:
            details["erreur"] = "un message attend depuis plus que le seuil (relais injoignable ?)"
        return _part(not stuck, **details)

    def _collection(self) -> dict[str, Any]:
        limit = self.collection_max_age
        summary = self.metrics.last_round
        since = self.metrics.last_round_monotonic or self._started
        age = dt.timedelta(seconds=asyncio.get_running_loop().time() - since)
        last = None
        if summary is not None:
            last = {
                "fin": summary.at.isoformat(),
                "rafraichissements": summary.refreshed,
                "echecs": summary.failed,
                "releves_produits": summary.statements_cut,
            }
        details: dict[str, Any] = {
            "dernier_tour": last,
            "depuis_secondes": _seconds(age),
            "seuil_secondes": _seconds(limit),
        }
        stale = age > limit
        if stale:
            details["erreur"] = "aucun tour de collecte terminé depuis plus que le seuil"
        return _part(not stale, **details)


def database_figures(monitoring: Monitoring, metrics: Metrics) -> Callable[[], Awaitable[None]]:
    """The scrape-time hook that sets the outbox and statement gauges from the database."""

    async def read() -> None:
        outbox = await monitoring.outbox()
        metrics.outbox_queue.set(outbox.pending)
        metrics.outbox_oldest.set(_seconds(outbox.oldest_age) or 0.0)
        metrics.outbox_failed.set(outbox.failed)
        statements = await monitoring.statements()
        for state, count in statements.by_state.items():
            metrics.statements.labels(state).set(count)
        metrics.statements_undelivered.set(statements.undelivered)

    return read


def ops_routes(
    config: HttpSection, database: Database, clock: Clock, engine: EnginePart, metrics: Metrics
) -> tuple[HealthCheck, Callable[[web.Application], None]]:
    """The daemon's health check (servers to :meth:`~HealthCheck.watch` once started) and
    the setup adding ``/health`` and ``/metrics`` to its HTTP application."""
    monitoring = Monitoring(database, clock)
    health = HealthCheck(
        monitoring,
        engine,
        metrics,
        outbox_max_age=dt.timedelta(minutes=config.health_outbox_max_age_minutes),
        collection_max_age=dt.timedelta(minutes=config.health_collection_max_age_minutes),
    )
    metrics.before_scrape(database_figures(monitoring, metrics))

    def setup(app: web.Application) -> None:
        setup_ops(app, health=health, metrics=metrics, allowed=config.metrics_allowed)

    return health, setup

"""The contract of an aggregator package: what the registry enables, opens and mounts.

An aggregator opened for one run of the daemon (or of a command) is its
:class:`~releves_mailer.collect.provider.Provider` (collection), its
:class:`~releves_mailer.partner.modes.PartnerMode` (the webview of secure links) and the HTTP
routes it needs (a webview's pages, webhooks), mounted on the daemon's application.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from releves_mailer.clock import Clock
from releves_mailer.collect.provider import Provider
from releves_mailer.config import Config
from releves_mailer.partner.modes import PartnerMode

__all__ = ["Aggregator", "OpenAggregator", "RouteHooks"]


@dataclass(frozen=True, slots=True)
class RouteHooks:
    """What an aggregator's routes may ask of the daemon."""

    #: ``(provider, provider connection id)``: refresh early the local connections holding
    #: that connection, and return their ids (a webhook only says "look again").
    refresh_named: Callable[[str, str], Awaitable[Sequence[int]]]


class OpenAggregator(Protocol):
    """An enabled aggregator, opened: its resources close with the stack it was opened in."""

    @property
    def provider(self) -> Provider: ...

    @property
    def mode(self) -> PartnerMode: ...

    def mount(self, app: web.Application, hooks: RouteHooks) -> None:
        """Add the aggregator's HTTP routes to the daemon's application (maybe none)."""
        ...


class Aggregator(Protocol):
    """One aggregator package, as the registry lists it."""

    #: The provider code stored on connections (``testbank``, ``powens``).
    @property
    def name(self) -> str: ...

    def enabled(self, config: Config) -> bool:
        """Whether the config turns it on."""
        ...

    async def open(self, config: Config, clock: Clock, stack: AsyncExitStack) -> OpenAggregator:
        """Build it; whatever must be closed is pushed on ``stack``."""
        ...

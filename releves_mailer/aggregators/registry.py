"""The registry of aggregators: every one the config enables, opened in one place.

The daemon and every command that collects (``collect``, ``simulate``, ``banks connect``)
open them here, so a command refreshes exactly the connections the daemon would: a Powens
connection is refreshed by ``collect`` as soon as ``[aggregator.powens]`` is enabled. The
daemon mounts the routes of each the same way; none is wired by name.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from releves_mailer.aggregators.contract import Aggregator, OpenAggregator, RouteHooks
from releves_mailer.aggregators.powens.aggregator import POWENS
from releves_mailer.aggregators.testbank.aggregator import TESTBANK
from releves_mailer.clock import Clock
from releves_mailer.collect.provider import Provider
from releves_mailer.config import Config
from releves_mailer.partner.modes import PartnerMode

__all__ = ["AGGREGATORS", "Aggregators", "open_aggregators"]

#: Every aggregator known, in order of preference: the first enabled is the default mode of
#: new links (Powens when it is configured).
AGGREGATORS: Sequence[Aggregator] = (POWENS, TESTBANK)


@dataclass(slots=True)
class Aggregators:
    """The enabled providers (by the code stored on connections) and their partner modes."""

    providers: dict[str, Provider] = field(default_factory=dict)
    #: In order of preference: the first is the default mode of new links.
    modes: dict[str, PartnerMode] = field(default_factory=dict)
    opened: list[OpenAggregator] = field(default_factory=list)

    def routes(self, hooks: RouteHooks) -> list[Callable[[web.Application], None]]:
        """The ``setups`` of :func:`~releves_mailer.web.app.create_app` adding their routes."""
        return [functools.partial(each.mount, hooks=hooks) for each in self.opened]


@asynccontextmanager
async def open_aggregators(config: Config, clock: Clock) -> AsyncIterator[Aggregators]:
    """Open every enabled aggregator; their resources close when the block ends."""
    async with AsyncExitStack() as stack:
        found = Aggregators()
        for aggregator in AGGREGATORS:
            if not aggregator.enabled(config):
                continue
            opened = await aggregator.open(config, clock, stack)
            found.providers[aggregator.name] = opened.provider
            found.modes[aggregator.name] = opened.mode
            found.opened.append(opened)
        yield found

"""The aggregators the config enables, each provider with its partner mode, built in one place.

The daemon and every command that collects (``collect``, ``simulate``, ``banks connect``)
open them here, so a command refreshes exactly the connections the daemon would: a Powens
connection is refreshed by ``collect`` as soon as ``[aggregator.powens]`` is enabled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import aiohttp

from releves_mailer.clock import Clock
from releves_mailer.collect.connections import build_test_bank
from releves_mailer.collect.powens.provider import PowensProvider
from releves_mailer.collect.powens.webview import DEFAULT_WEBVIEW_BASE
from releves_mailer.collect.provider import Provider
from releves_mailer.config import Config
from releves_mailer.partner.mails import PartnerSettings
from releves_mailer.partner.modes import PartnerMode
from releves_mailer.partner.powens import PowensPartner
from releves_mailer.partner.testbank import TestBankPartner

__all__ = ["Aggregators", "open_aggregators"]


@dataclass(slots=True)
class Aggregators:
    """The enabled providers (by the code stored on connections) and their partner modes."""

    providers: dict[str, Provider] = field(default_factory=dict)
    #: In order of preference: the first is the default mode of new links.
    modes: dict[str, PartnerMode] = field(default_factory=dict)
    powens: PowensProvider | None = None
    testbank: TestBankPartner | None = None


@asynccontextmanager
async def open_aggregators(config: Config, clock: Clock) -> AsyncIterator[Aggregators]:
    """Build every enabled aggregator; their HTTP sessions close when the block ends."""
    async with AsyncExitStack() as stack:
        found = Aggregators()
        section = config.aggregator.powens
        if section.enabled:
            session = aiohttp.ClientSession()
            stack.push_async_callback(session.close)
            found.powens = PowensProvider.from_config(
                section,
                session,
                clock,
                base_url=section.api_url or None,
                webview_base=section.webview_url or DEFAULT_WEBVIEW_BASE,
            )
            found.providers[found.powens.name] = found.powens
            found.modes[found.powens.name] = PowensPartner(found.powens)
        if config.aggregator.testbank.enabled:
            bank = build_test_bank(config, clock)
            found.providers[bank.name] = bank
            public_url = PartnerSettings.from_config(config).public_url
            found.testbank = TestBankPartner(bank, clock, public_url)
            found.modes[found.testbank.name] = found.testbank
        yield found

"""The test bank in the registry: opened from ``[aggregator.testbank]``, with its webview.

Opening builds the bank and its partner mode; mounting adds the pages of its webview, which
the daemon serves itself (``/testbank/webview/``).
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass

from aiohttp import web

from releves_mailer.aggregators.contract import RouteHooks
from releves_mailer.aggregators.testbank import TestBank, webview
from releves_mailer.aggregators.testbank.partner import TestBankPartner
from releves_mailer.clock import Clock
from releves_mailer.collect.connections import build_test_bank
from releves_mailer.config import Config
from releves_mailer.partner.mails import PartnerSettings

__all__ = ["TESTBANK", "OpenTestBank", "TestBankAggregator"]


@dataclass(frozen=True, slots=True)
class OpenTestBank:
    """The test bank opened: the bank and its partner mode (nothing to close)."""

    provider: TestBank
    mode: TestBankPartner

    def mount(self, app: web.Application, hooks: RouteHooks) -> None:
        """The webview's pages (the test bank sends no webhooks)."""
        webview.setup(app, self.mode)


class TestBankAggregator:
    """:class:`~releves_mailer.aggregators.contract.Aggregator` of the test bank."""

    __test__ = False

    name = TestBank.name

    def enabled(self, config: Config) -> bool:
        return config.aggregator.testbank.enabled

    async def open(self, config: Config, clock: Clock, stack: AsyncExitStack) -> OpenTestBank:
        bank = build_test_bank(config, clock)
        public_url = PartnerSettings.from_config(config).public_url
        return OpenTestBank(bank, TestBankPartner(bank, clock, public_url))


TESTBANK = TestBankAggregator()

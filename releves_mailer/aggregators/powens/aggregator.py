"""Powens in the registry: opened from ``[aggregator.powens]``, with its webhook route.

Opening builds the provider over one HTTP session (closed with the stack) and its partner
mode; mounting adds ``/powens/webhooks/{event}`` when a webhook secret is configured.
"""

from __future__ import annotations

import datetime as dt
import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from releves_mailer.aggregators.contract import RouteHooks
from releves_mailer.aggregators.powens.partner import PowensPartner
from releves_mailer.aggregators.powens.provider import PowensProvider
from releves_mailer.aggregators.powens.webhooks import WebhookEvent, webhook_handler
from releves_mailer.aggregators.powens.webview import DEFAULT_WEBVIEW_BASE
from releves_mailer.clock import Clock
from releves_mailer.config import Config, PowensSection

__all__ = ["POWENS", "OpenPowens", "PowensAggregator"]

_log = logging.getLogger(__name__)

#: Where Powens posts its webhooks, one URL per event type.
WEBHOOK_ROUTE = "/powens/webhooks/{event}"


@dataclass(frozen=True, slots=True)
class OpenPowens:
    """Powens opened: the provider (over its HTTP session) and its partner mode."""

    provider: PowensProvider
    mode: PowensPartner
    section: PowensSection
    clock: Clock

    def mount(self, app: web.Application, hooks: RouteHooks) -> None:
        """The webhook route: a valid webhook refreshes early the connection it names."""
        secret = self.section.webhook_secret.get_secret_value()
        if not secret:
            _log.warning("no Powens webhook secret configured: webhooks are not accepted")
            return
        name = self.provider.name

        async def on_webhook(event: WebhookEvent) -> None:
            # A webhook only says "look again": the refresh re-reads everything from the API
            # (a "deleted" event too: the refresh confirms it with a 404 first).
            found = await hooks.refresh_named(name, event.connection_id)
            _log.info(
                "Powens webhook %s for connection %s: local connection(s) %s",
                event.kind,
                event.connection_id,
                found or "none",
            )

        handler = webhook_handler(
            secret,
            on_webhook,
            clock=self.clock,
            max_body=self.section.webhook_max_body,
            max_age=dt.timedelta(seconds=self.section.webhook_max_age_seconds),
        )
        app.router.add_post(WEBHOOK_ROUTE, handler)


class PowensAggregator:
    """:class:`~releves_mailer.aggregators.contract.Aggregator` of Powens."""

    name = PowensProvider.name

    def enabled(self, config: Config) -> bool:
        return config.aggregator.powens.enabled

    async def open(self, config: Config, clock: Clock, stack: AsyncExitStack) -> OpenPowens:
        section = config.aggregator.powens
        session = aiohttp.ClientSession()
        stack.push_async_callback(session.close)
        provider = PowensProvider.from_config(
            section,
            session,
            clock,
            base_url=section.api_url or None,
            webview_base=section.webview_url or DEFAULT_WEBVIEW_BASE,
        )
        return OpenPowens(provider, PowensPartner(provider), section, clock)


POWENS = PowensAggregator()

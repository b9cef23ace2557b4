"""``GET /health`` and ``GET /metrics`` for the admin's monitoring, from allowed networks only.

``/health`` answers 200 with the JSON state of each part, 503 when one is down;
``/metrics`` answers the Prometheus text format. Both are for monitoring tools on the
admin's networks (``[http] metrics_allowed``, loopback by default): any other client gets
403. The TCP peer's address is checked, never ``X-Forwarded-For``: behind a reverse proxy,
every client would look like the proxy, so these paths must not be published through one.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from typing import Any, Protocol

from aiohttp import web

from releves_mailer.metrics import CONTENT_TYPE

__all__ = ["HealthSource", "MetricsSource", "is_allowed", "setup_ops"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class HealthSource(Protocol):
    async def check(self) -> tuple[bool, dict[str, Any]]:
        """(every part up, the JSON document of each part's state)."""
        ...


class MetricsSource(Protocol):
    async def exposition(self) -> bytes:
        """Every metric in the Prometheus text format."""
        ...


def is_allowed(peer: str | None, allowed: Sequence[Network]) -> bool:
    """Whether the client address ``peer`` is in one of the ``allowed`` networks."""
    if not peer:
        return False
    try:
        address = ipaddress.ip_address(peer.split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in allowed)


_REFUSED = "Accès refusé : cette adresse n'est pas autorisée ([http] metrics_allowed).\n"


def setup_ops(
    app: web.Application,
    *,
    health: HealthSource,
    metrics: MetricsSource,
    allowed: Sequence[Network],
) -> None:
    """Add ``/health`` and ``/metrics`` to ``app``."""

    def refused(request: web.Request) -> web.Response | None:
        if is_allowed(request.remote, allowed):
            return None
        return web.Response(status=403, text=_REFUSED, charset="utf-8")

    async def health_page(request: web.Request) -> web.Response:
        answer = refused(request)
        if answer is not None:
            return answer
        healthy, document = await health.check()
        return web.Response(
            status=200 if healthy else 503,
            text=json.dumps(document, ensure_ascii=False, indent=2) + "\n",
            content_type="application/json",
            charset="utf-8",
        )

    async def metrics_page(request: web.Request) -> web.Response:
        answer = refused(request)
        if answer is not None:
            return answer
        body = await metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/health", health_page)
    app.router.add_get("/metrics", metrics_page)

"""Powens (partner mode): API client, Provider implementation, Webview URLs and callbacks.

Also in this package: the partner mode (``partner``), the webhooks (``webhooks``) and the
registry entry that opens Powens and mounts its webhook route (``aggregator``).
"""

from releves_mailer.aggregators.powens.client import (
    PaginationError,
    PowensAPIError,
    PowensClient,
    RetryPolicy,
    Timeouts,
    api_host,
)
from releves_mailer.aggregators.powens.parsing import (
    KNOWN_STATES,
    UNKNOWN_STATE,
    PowensConnection,
    parse_amount,
    parse_timestamp,
)
from releves_mailer.aggregators.powens.provider import (
    PAGE_LIMIT,
    PowensProvider,
    TemporaryCode,
)
from releves_mailer.aggregators.powens.webview import (
    WebviewCallback,
    WebviewError,
    build_webview_url,
    parse_webview_callback,
)

__all__ = [
    "KNOWN_STATES",
    "PAGE_LIMIT",
    "UNKNOWN_STATE",
    "PaginationError",
    "PowensAPIError",
    "PowensClient",
    "PowensConnection",
    "PowensProvider",
    "RetryPolicy",
    "TemporaryCode",
    "Timeouts",
    "WebviewCallback",
    "WebviewError",
    "api_host",
    "build_webview_url",
    "parse_amount",
    "parse_timestamp",
    "parse_webview_callback",
]

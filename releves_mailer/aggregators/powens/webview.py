"""Powens Webview URLs (connect, reconnect, manage) and the parameters of its callback.

URL shape (reference section 2): ``https://webview.powens.com/{lang}/{flow}?domain=<host>&
client_id=...&redirect_uri=...&code=...&state=...`` — the language segment is always present,
``domain`` carries the full API host, ``redirect_uri`` must be whitelisted in the console and
carry no query of its own, and ``code`` is a fresh temporary code (never the permanent token).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, urlencode, urlsplit

__all__ = [
    "DEFAULT_WEBVIEW_BASE",
    "LANGUAGES",
    "WebviewCallback",
    "WebviewError",
    "build_webview_url",
    "parse_webview_callback",
]

DEFAULT_WEBVIEW_BASE = "https://webview.powens.com/"
LANGUAGES = frozenset({"en", "fr", "de", "nl", "it", "es", "pt"})
Flow = Literal["connect", "reconnect", "manage"]


def build_webview_url(
    *,
    flow: Flow,
    domain_host: str,
    client_id: str,
    code: str,
    redirect_uri: str,
    state: str,
    connection_id: str | None = None,
    lang: str = "fr",
    reset_credentials: bool = False,
    connector_uuids: Iterable[str] = (),
    max_connections: int | None = None,
    base: str = DEFAULT_WEBVIEW_BASE,
) -> str:
    """The Webview URL to redirect the client's browser to.

    ``reconnect`` needs ``connection_id`` (the connection to repair); ``reset_credentials``
    (reconnect only) forces the re-entry of every credential, useful after ``wrongpass`` or
    ``passwordExpired``. ``connector_uuids`` (connect/manage) skips the bank picker.
    """
    if flow not in ("connect", "reconnect", "manage"):
        raise ValueError(f"unknown webview flow {flow!r}")
    if lang not in LANGUAGES:
        raise ValueError(f"unsupported webview language {lang!r}")
    if not code:
        raise ValueError("a temporary code is required (the permanent token never goes out)")
    parts = urlsplit(redirect_uri)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError("redirect_uri must be an absolute URL without query nor fragment")
    if flow == "reconnect" and not connection_id:
        raise ValueError("the reconnect flow needs the connection id")
    params: list[tuple[str, str]] = [
        ("domain", domain_host),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("code", code),
        ("state", state),
    ]
    if connection_id and flow in ("reconnect", "manage"):
        params.append(("connection_id", str(connection_id)))
    if reset_credentials:
        if flow != "reconnect":
            raise ValueError("reset_credentials only applies to the reconnect flow")
        params.append(("reset_credentials", "true"))
    uuids = [uuid for uuid in connector_uuids if uuid]
    if uuids:
        if flow == "reconnect":
            raise ValueError("connector_uuids does not apply to the reconnect flow")
        params.append(("connector_uuids", ",".join(uuids)))
    if max_connections is not None:
        if flow != "connect" or max_connections < 1:
            raise ValueError("max_connections is a positive number for the connect flow")
        params.append(("max_connections", str(max_connections)))
    return f"{base.rstrip('/')}/{lang}/{flow}?{urlencode(params, quote_via=quote)}"


class WebviewError(enum.StrEnum):
    """Error codes of the Webview callback; anything else is :attr:`OTHER`."""

    ACCESS_DENIED = "access_denied"  # the client cancelled
    SERVER_ERROR = "server_error"
    TOS_DECLINED = "tos_declined"
    SESSION_EXPIRED = "session_expired"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class WebviewCallback:
    """What the Webview sent back on the ``redirect_uri`` (query parameters).

    Only ``state`` is trustworthy as a correlation key (and only once the caller checked it
    is one of its own); the connection ids are re-read from the API before use.
    """

    state: str
    connection_ids: tuple[str, ...] = ()
    #: Sent only when the Webview was opened without a code (to exchange for a token).
    code: str | None = None
    error: WebviewError | None = None
    #: The raw error code (useful when :attr:`error` is ``OTHER``).
    error_code: str | None = None
    error_description: str = ""
    connection_deleted: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


def parse_webview_callback(query: Mapping[str, str]) -> WebviewCallback:
    """Read the callback parameters; ``state`` is required, everything else optional."""
    state = query.get("state")
    if not state:
        raise ValueError("webview callback without state")
    ids: list[str] = []
    for value in (query.get("connection_id"), query.get("id_connection")):
        if value and value not in ids:
            ids.append(value)
    for value in (query.get("connection_ids") or "").split(","):
        value = value.strip()
        if value and value not in ids:
            ids.append(value)
    for value in ids:
        if not value.isdigit():
            raise ValueError(f"webview callback with a malformed connection id {value!r}")
    error_code = query.get("error") or None
    error: WebviewError | None = None
    if error_code is not None:
        try:
            error = WebviewError(error_code)
        except ValueError:
            error = WebviewError.OTHER
    return WebviewCallback(
        state=state,
        connection_ids=tuple(ids),
        code=query.get("code") or None,
        error=error,
        error_code=error_code,
        error_description=(query.get("error_description") or "")[:500],
        connection_deleted=(query.get("connection_deleted") or "").lower() == "true",
    )

"""Low-level Powens API calls: one aiohttp session, retries, rate limits, errors, pagination.

Retry rules (see ``docs/powens.md``):

- **429** is retried on every call (the request was refused, not processed), after the
  ``Retry-After`` delay (seconds or an HTTP date); a delay above
  :attr:`RetryPolicy.max_retry_after`, or too many 429 in a row, gives up with
  ``rateLimiting``.
- **5xx, timeouts and broken connections** are retried with exponential backoff and jitter,
  at most :attr:`RetryPolicy.attempts` times, but only for idempotent calls. A call that is not
  idempotent (``POST /auth/init`` creates a billed user) is retried only when the connection
  could not even be opened. Giving up raises a transient error (``websiteUnavailable``).
- Other error statuses raise :class:`PowensAPIError` at once, its code mapped from the body
  ``{"code": ..., "message": ...}``: codes of :mod:`releves_mailer.collect.errors` keep their
  meaning, any other becomes the generic ``unknown`` (kept in ``powens_code``).

Tokens and secrets are never logged: only the method, the path and the status are.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import aiohttp
import yarl

from releves_mailer.aggregators.powens.parsing import UNKNOWN_STATE, loads
from releves_mailer.clock import Clock, SystemClock
from releves_mailer.collect.errors import normalise_error_code
from releves_mailer.collect.provider import ProviderError

__all__ = [
    "PaginationError",
    "PowensAPIError",
    "PowensClient",
    "Query",
    "RetryPolicy",
    "Sleep",
    "Timeouts",
    "api_host",
]

log = logging.getLogger("releves_mailer.aggregators.powens")

Sleep = Callable[[float], Awaitable[None]]
#: Query parameters in order; a None value is a value-less flag (``?all``).
Query = Sequence[tuple[str, str | None]]

#: Powens error codes that mean one of our codes under another name.
_CODE_ALIASES = {"tooManySync": "rateLimiting"}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard the client insists before giving up."""

    #: Attempts in all for 5xx, timeouts and connection errors (1 = no retry).
    attempts: int = 4
    #: First backoff delay in seconds; doubled at each attempt, capped by ``max_delay``.
    base_delay: float = 0.5
    max_delay: float = 30.0
    #: 429 answers accepted in a row for one call before giving up.
    rate_limit_attempts: int = 5
    #: A ``Retry-After`` longer than this (seconds) gives up at once: the scheduler retries.
    max_retry_after: float = 120.0
    #: Wait used when a 429 carries no usable ``Retry-After``.
    default_retry_after: float = 5.0


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-request time limits in seconds."""

    connect: float = 10.0
    #: Whole request (connect, send, answer) of an ordinary call.
    request: float = 60.0
    #: A forced synchronisation can block while Powens talks to the bank.
    sync: float = 300.0


class PowensAPIError(ProviderError):
    """Powens answered with an error (or not at all): ``code`` is one of ours.

    ``status`` is the HTTP status (0 when no answer came), ``powens_code`` the code of the
    error body as Powens sent it.
    """

    def __init__(
        self,
        code: str,
        detail: str = "",
        *,
        status: int = 0,
        powens_code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(code, detail)
        self.status = status
        self.powens_code = powens_code
        self.request_id = request_id


class PaginationError(ProviderError):
    """``_links.next`` went round in circles, left the API host, or never ended."""

    def __init__(self, detail: str) -> None:
        super().__init__(UNKNOWN_STATE, detail)


def api_host(domain: str) -> str:
    """The API host of a domain: ``acme-sandbox`` -> ``acme-sandbox.biapi.pro``."""
    domain = domain.strip().lower().rstrip("/")
    if "://" in domain:
        domain = urlsplit(domain).netloc
    return domain if "." in domain else f"{domain}.biapi.pro"


def encode_query(query: Query) -> str:
    """A query string in the given order; ``(name, None)`` gives a bare ``name``."""
    parts = []
    for name, value in query:
        key = quote(name, safe="")
        parts.append(key if value is None else f"{key}={quote(value, safe='')}")
    return "&".join(parts)


def _error_body(data: bytes) -> tuple[str | None, str, str | None]:
    """(code, message, request_id) of a Powens error body, tolerant of anything."""
    try:
        document = loads(data) if data else None
    except (ValueError, UnicodeDecodeError):
        document = None
    if not isinstance(document, Mapping):
        text = data[:200].decode("utf-8", "replace").strip()
        return None, text, None
    code = document.get("code")
    message = document.get("message") or document.get("description") or ""
    request_id = document.get("request_id")
    return (
        str(code) if code else None,
        str(message)[:500],
        str(request_id) if request_id else None,
    )


def map_error_code(powens_code: str | None, status: int) -> str:
    """Our code for a Powens error code and HTTP status."""
    if powens_code:
        aliased = _CODE_ALIASES.get(powens_code, powens_code)
        canonical = normalise_error_code(aliased)
        if canonical is not None:
            return canonical
        return UNKNOWN_STATE
    if status == 429:
        return "rateLimiting"
    if status >= 500 or status == 0:
        return "websiteUnavailable"
    return UNKNOWN_STATE


class PowensClient:
    """Powens' HTTP API over an ``aiohttp.ClientSession`` owned (created, closed) by the caller.

    ``base_url`` defaults to ``https://<domain host>/2.0/``; tests point it at the fake server.
    ``sleep`` and ``jitter`` are injectable so that tests neither wait nor depend on chance.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        domain: str,
        client_id: str,
        client_secret: str,
        base_url: str | None = None,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        max_pages: int = 1000,
    ) -> None:
        self._session = session
        self.domain_host = api_host(domain)
        self.client_id = client_id
        self._client_secret = client_secret
        self.base_url = (base_url or f"https://{self.domain_host}/2.0/").rstrip("/") + "/"
        self.clock: Clock = clock or SystemClock()
        self._sleep = sleep
        self._jitter = jitter
        self.retry = retry or RetryPolicy()
        self.timeouts = timeouts or Timeouts()
        self.max_pages = max_pages
        base = urlsplit(self.base_url)
        self._origin = (base.scheme, base.netloc)
        self._base_path = base.path

    def __repr__(self) -> str:  # never show the secret
        return f"PowensClient(base_url={self.base_url!r}, client_id={self.client_id!r})"

    # -- URLs ------------------------------------------------------------------------------

    def url(self, path: str, query: Query = ()) -> str:
        """Absolute URL of an API path (``users/me/accounts``) with an ordered query."""
        url = self.base_url + path.lstrip("/")
        encoded = encode_query(query)
        return f"{url}?{encoded}" if encoded else url

    def resolve_link(self, href: str) -> str:
        """Resolve a ``_links`` href against the API; foreign hosts are refused.

        The bearer token goes with every request, so following a link elsewhere would leak it.
        """
        absolute = urljoin(self.base_url, href)
        parts = urlsplit(absolute)
        if (parts.scheme, parts.netloc) != self._origin or not parts.path.startswith(
            self._base_path
        ):
            raise PaginationError(f"lien de pagination hors de l'API Powens refusé : {href!r}")
        return absolute

    # -- calls -----------------------------------------------------------------------------

    async def get(self, path: str, token: str, query: Query = ()) -> Any:
        return await self.call("GET", self.url(path, query), token=token, idempotent=True)

    async def auth_init(self) -> Any:
        """``POST /auth/init``: creates a new, billed, user. Never retried once sent."""
        body = {"client_id": self.client_id, "client_secret": self._client_secret}
        return await self.call("POST", self.url("auth/init"), body=body, idempotent=False)

    async def call(
        self,
        method: str,
        url: str,
        *,
        token: str | None = None,
        body: Mapping[str, Any] | None = None,
        idempotent: bool,
        time_limit: float | None = None,
        accept_statuses: Sequence[int] = (),
    ) -> Any:
        """One API call with the retry rules of this module; returns the decoded JSON body.

        ``accept_statuses`` are returned as ``{"_status": status, ...body}`` instead of raising
        (e.g. 409 for a forced synchronisation already running).
        """
        path = urlsplit(url).path
        failures = 0
        rate_limited = 0
        while True:
            try:
                status, headers, data = await self._send(method, url, token, body, time_limit)
            except aiohttp.ClientConnectorError as error:
                # The connection was never opened: nothing reached Powens, always safe to retry.
                failures += 1
                reason = f"connexion impossible à l'API Powens ({type(error).__name__})"
                await self._backoff_or_give_up(method, path, failures, reason, always=True)
                continue
            except (TimeoutError, aiohttp.ClientError) as error:
                failures += 1
                reason = f"pas de réponse de l'API Powens ({type(error).__name__})"
                await self._backoff_or_give_up(method, path, failures, reason, always=idempotent)
                continue
            log.debug("powens %s %s -> %s", method, path, status)
            if 200 <= status < 300 or status in accept_statuses:
                document = self._decode(data, method, path, status)
                if status in accept_statuses and not (200 <= status < 300):
                    merged = dict(document) if isinstance(document, Mapping) else {}
                    merged["_status"] = status
                    return merged
                return document
            powens_code, message, request_id = _error_body(data)
            if status == 429:
                rate_limited += 1
                wait = self._retry_after(headers.get("Retry-After"))
                if (
                    rate_limited >= self.retry.rate_limit_attempts
                    or wait > self.retry.max_retry_after
                ):
                    raise PowensAPIError(
                        "rateLimiting",
                        f"Powens limite le débit des appels (HTTP 429, Retry-After {wait:g} s)",
                        status=429,
                        powens_code=powens_code,
                        request_id=request_id,
                    )
                log.info("powens %s %s rate limited: waiting %.1f s", method, path, wait)
                await self._sleep(wait)
                continue
            if status >= 500:
                failures += 1
                reason = f"HTTP {status} {powens_code or ''} {message}".strip()
                if idempotent and failures < self.retry.attempts:
                    await self._backoff(method, path, failures, reason)
                    continue
                raise PowensAPIError(
                    map_error_code(powens_code, status),
                    f"API Powens indisponible : {reason}",
                    status=status,
                    powens_code=powens_code,
                    request_id=request_id,
                )
            raise PowensAPIError(
                map_error_code(powens_code, status),
                f"HTTP {status} {powens_code or ''} {message}".strip(),
                status=status,
                powens_code=powens_code,
                request_id=request_id,
            )

    async def paginate(self, path: str, token: str, query: Query, key: str) -> list[Any]:
        """Every row of a paged list, following ``_links.next`` with loop protection.

        A repeated href (cycle), a link leaving the API, or more than ``max_pages`` pages
        raises :class:`PaginationError`. A page without ``_links`` at all that is full
        (``limit`` rows) is followed by offset, as the reference says offset paging works.
        """
        limit = next((int(v) for k, v in query if k == "limit" and v), 0)
        base_query = [(k, v) for k, v in query if k != "offset"]
        offset = next((int(v) for k, v in query if k == "offset" and v), 0)
        url = self.url(path, query)
        seen: set[str] = set()
        rows: list[Any] = []
        pages = 0
        while True:
            if url in seen:
                raise PaginationError(
                    f"pagination Powens en boucle : lien déjà suivi ({urlsplit(url).path}, "
                    f"page {pages + 1})"
                )
            seen.add(url)
            pages += 1
            if pages > self.max_pages:
                raise PaginationError(
                    f"pagination Powens sans fin : plus de {self.max_pages} pages"
                )
            document = await self.call("GET", url, token=token, idempotent=True)
            if not isinstance(document, Mapping) or not isinstance(document.get(key), list):
                raise PowensAPIError(
                    UNKNOWN_STATE, f"réponse Powens inattendue pour {path} : pas de {key!r}"
                )
            page = document[key]
            rows.extend(page)
            links = document.get("_links")
            href: object = None
            if isinstance(links, Mapping):
                following = links.get("next")
                href = following.get("href") if isinstance(following, Mapping) else following
            if isinstance(href, str) and href:
                url = self.resolve_link(href)
                continue
            if links is None and limit and len(page) >= limit:
                offset += len(page)
                url = self.url(path, [*base_query, ("offset", str(offset))])
                continue
            return rows

    # -- internals -------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        url: str,
        token: str | None,
        body: Mapping[str, Any] | None,
        time_limit: float | None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        limits = aiohttp.ClientTimeout(
            total=time_limit or self.timeouts.request, connect=self.timeouts.connect
        )
        async with self._session.request(
            method,
            yarl.URL(url, encoded=True),
            headers=headers,
            data=data,
            timeout=limits,
            allow_redirects=False,
        ) as response:
            payload = await response.read()
            return response.status, response.headers, payload

    @staticmethod
    def _decode(data: bytes, method: str, path: str, status: int) -> Any:
        if not data.strip():
            return {}
        try:
            return loads(data)
        except (ValueError, UnicodeDecodeError):
            raise PowensAPIError(
                UNKNOWN_STATE,
                f"réponse Powens illisible (HTTP {status}) pour {method} {path}",
                status=status,
            ) from None

    def _retry_after(self, value: str | None) -> float:
        if not value:
            return self.retry.default_retry_after
        text = value.strip()
        try:
            return max(0.0, float(int(text)))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return self.retry.default_retry_after
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return max(0.0, (when - self.clock.now()).total_seconds())

    async def _backoff_or_give_up(
        self, method: str, path: str, failures: int, reason: str, *, always: bool
    ) -> None:
        if always and failures < self.retry.attempts:
            await self._backoff(method, path, failures, reason)
            return
        raise PowensAPIError("websiteUnavailable", reason, status=0)

    async def _backoff(self, method: str, path: str, failures: int, reason: str) -> None:
        ceiling = min(self.retry.max_delay, self.retry.base_delay * 2 ** (failures - 1))
        # "Equal jitter": half the delay fixed, half random, so retries never synchronise.
        delay = ceiling / 2 + ceiling / 2 * self._jitter()
        log.warning(
            "powens %s %s failed (%s): retry %d in %.2f s", method, path, reason, failures, delay
        )
        await self._sleep(delay)

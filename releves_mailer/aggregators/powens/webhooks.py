"""Powens webhooks: check their HMAC signature and turn them into "refresh early" events.

A webhook is a *trigger*, never a source of data: the events below only say which connection
to refresh early (or which one Powens says was deleted); the refresh re-reads everything from
the API, and a "deleted" event must be confirmed there (a 404) before anything is dropped. So a
replayed or forged-but-valid payload can at worst cause an early, idempotent refresh.

Signature (reference section 6, HMAC mode): headers ``BI-Signature-Date`` and ``BI-Signature``;
``BI-Signature = base64(HMAC-SHA256(secret, "POST." + <URL path> + "." + <date> + "." + <body>))``
compared in constant time over the raw body. The reference gives no freshness rule nor date
format: we refuse a date older (or further ahead) than ``max_age`` (5 minutes by default; it
must parse as ISO 8601, an HTTP date or epoch seconds) and a signature already seen within
that window (a replay). The body is capped (1 MiB by default) and read only once the
signature headers are there, chunk by chunk, refused as soon as it grows past the cap.

Powens calls one URL per event type and does not name the event in the payload: mount the
handler on a route with an ``{event}`` segment (``/powens/webhooks/{event}``, with
``connection_synced``, ``account_synced``, ``connection_deleted``...), or pass ``?event=``;
without either, the event is inferred from the payload's shape (refresh events only).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email.utils
import enum
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from releves_mailer.clock import Clock, SystemClock

__all__ = [
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_BODY",
    "MalformedWebhook",
    "SeenSignatures",
    "WebhookEvent",
    "WebhookKind",
    "parse_event",
    "sign",
    "verify_signature",
    "webhook_handler",
]

log = logging.getLogger("releves_mailer.aggregators.powens.webhooks")

SIGNATURE_HEADER = "BI-Signature"
DATE_HEADER = "BI-Signature-Date"
#: Largest body read. Only identifiers are used from a payload; ACCOUNT_SYNCED carries the
#: synced transactions too, but a nightly delta of one account stays far below this.
DEFAULT_MAX_BODY = 1024 * 1024
#: Oldest signature date accepted, and how long a seen signature is remembered (replays).
DEFAULT_MAX_AGE = dt.timedelta(minutes=5)


class WebhookKind(enum.StrEnum):
    """The Powens events this daemon listens to."""

    CONNECTION_SYNCED = "CONNECTION_SYNCED"
    ACCOUNT_SYNCED = "ACCOUNT_SYNCED"
    #: Accounts listed after a Webview connection (before transactions): a refresh too.
    ACCOUNTS_FETCHED = "ACCOUNTS_FETCHED"
    CONNECTION_DELETED = "CONNECTION_DELETED"


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """What a webhook asks for: refresh connection X early, or "X was deleted" (to confirm)."""

    kind: WebhookKind
    connection_id: str
    user_id: str | None = None
    account_id: str | None = None

    @property
    def deleted(self) -> bool:
        """Powens says the connection is gone: re-read it before believing it."""
        return self.kind is WebhookKind.CONNECTION_DELETED

    @property
    def refresh(self) -> bool:
        return not self.deleted


class MalformedWebhook(ValueError):
    """The body is not a payload of the announced event."""


def sign(secret: str, method: str, path: str, date: str, body: bytes) -> str:
    """The ``BI-Signature`` value Powens computes for a delivery."""
    message = f"{method.upper()}.{path}.{date}.".encode() + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_signature(
    secret: str, *, method: str, path: str, date: str, body: bytes, signature: str
) -> bool:
    """Whether ``signature`` is the right one, compared in constant time."""
    try:
        given = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    expected = base64.b64decode(sign(secret, method, path, date, body))
    return hmac.compare_digest(given, expected)


def _parse_signature_date(value: str) -> dt.datetime | None:
    text = value.strip()
    if text.isdigit():
        number = int(text)
        return dt.datetime.fromtimestamp(number / 1000 if number > 10**11 else number, dt.UTC)
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def _identifier(value: object, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise MalformedWebhook(f"{what} missing or not an identifier")
    text = str(value).strip()
    if not text.isdigit():
        raise MalformedWebhook(f"{what} is not a Powens identifier: {text[:40]!r}")
    return text


def _optional_identifier(value: object, what: str) -> str | None:
    return None if value is None else _identifier(value, what)


def _kind(name: str | None, payload: Mapping[str, Any]) -> WebhookKind | None:
    if name:
        normalised = name.strip().upper().replace("-", "_")
        try:
            return WebhookKind(normalised)
        except ValueError:
            return None  # an event we do not listen to: acknowledged, ignored
    if isinstance(payload.get("connection"), Mapping):
        return WebhookKind.CONNECTION_SYNCED
    if "id_connection" in payload and "id" in payload:
        return WebhookKind.ACCOUNT_SYNCED
    return None


def parse_event(name: str | None, body: bytes) -> WebhookEvent | None:
    """The event of a delivery; None for events we ignore. Raises :class:`MalformedWebhook`.

    Only identifiers are read from the payload; its accounts and transactions are ignored on
    purpose (the refresh re-reads them from the API).
    """
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise MalformedWebhook("body is not JSON") from None
    if not isinstance(payload, Mapping):
        raise MalformedWebhook("body is not a JSON object")
    kind = _kind(name, payload)
    if kind is None:
        return None
    if kind in (WebhookKind.CONNECTION_SYNCED, WebhookKind.ACCOUNTS_FETCHED):
        connection = payload.get("connection")
        if not isinstance(connection, Mapping):
            raise MalformedWebhook(f"{kind} without a connection object")
        user = payload.get("user")
        user_id = user.get("id") if isinstance(user, Mapping) else connection.get("id_user")
        return WebhookEvent(
            kind,
            connection_id=_identifier(connection.get("id"), "connection.id"),
            user_id=_optional_identifier(user_id, "user.id"),
        )
    if kind is WebhookKind.ACCOUNT_SYNCED:
        return WebhookEvent(
            kind,
            connection_id=_identifier(payload.get("id_connection"), "id_connection"),
            user_id=_optional_identifier(payload.get("id_user"), "id_user"),
            account_id=_identifier(payload.get("id"), "id"),
        )
    return WebhookEvent(
        kind,
        connection_id=_identifier(payload.get("id"), "id"),
        user_id=_optional_identifier(payload.get("id_user"), "id_user"),
    )


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The raw body, or None as soon as it is known to exceed ``limit`` (announced length, or
    the chunks read so far): nothing more is read. Read from the stream: no app-wide cap."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _refuse_unread(request: web.Request, status: int, error: str) -> web.StreamResponse:
    """Answer, then close the connection: aiohttp would otherwise drain the unread body."""
    response = web.json_response({"error": error}, status=status)
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    # The answer is in the transport's buffer, flushed before the socket closes.
    request.protocol.force_close()
    return response


class SeenSignatures:
    """Signatures accepted within the freshness window, to refuse their replays.

    Only correctly signed deliveries get here, so only Powens (or whoever holds the secret)
    fills it; ``capacity`` bounds it anyway (the oldest entries go first).
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._until: dict[str, dt.datetime] = {}

    def add(self, signature: str, until: dt.datetime, now: dt.datetime) -> bool:
        """Remember ``signature`` until ``until``; False when it is already there (a replay)."""
        self._forget_expired(now)
        known = self._until.get(signature)
        if known is not None and known > now:
            return False
        self._until[signature] = until
        while len(self._until) > self.capacity:
            del self._until[next(iter(self._until))]
        return True

    def discard(self, signature: str) -> None:
        self._until.pop(signature, None)

    def _forget_expired(self, now: dt.datetime) -> None:
        # Entries come in roughly by date: drop expired ones from the oldest end.
        while self._until:
            first = next(iter(self._until))
            if self._until[first] > now:
                break
            del self._until[first]


def webhook_handler(
    secret: str,
    on_event: Callable[[WebhookEvent], Awaitable[None]],
    *,
    path_prefix: str = "",
    max_age: dt.timedelta | None = DEFAULT_MAX_AGE,
    clock: Clock | None = None,
    max_body: int = DEFAULT_MAX_BODY,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An ``aiohttp.web`` handler for Powens webhooks.

    Answers 401 without signature headers (checked before any of the body is read) or with a
    date older or further ahead than ``max_age``, 413 above ``max_body`` (refused as soon as
    it is known, the connection closed), 403 on a wrong signature, 409 on a replay of a
    signature accepted within ``max_age``, 400 on a malformed payload, 200 otherwise (events
    we ignore included), 500 when ``on_event`` fails (Powens sends again later; that very
    delivery is then accepted again). ``max_age=None`` turns the date and replay checks off
    (tests). ``path_prefix`` is prepended to the request path when a reverse proxy strips it:
    the signature covers the path Powens called. ``on_event`` should only schedule work.
    """
    if not secret:
        raise ValueError("a Powens webhook secret is required")
    the_clock: Clock = clock or SystemClock()
    seen = SeenSignatures()

    async def handle(request: web.Request) -> web.StreamResponse:
        date = request.headers.get(DATE_HEADER, "")
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not date or not signature:
            log.warning("powens webhook without signature from %s", request.remote)
            return await _refuse_unread(request, 401, "missing signature")
        body = await _read_body(request, max_body)
        if body is None:
            log.warning("powens webhook above %d bytes from %s", max_body, request.remote)
            return await _refuse_unread(request, 413, "payload too large")
        path = path_prefix.rstrip("/") + request.raw_path.split("?", 1)[0]
        if not verify_signature(
            secret, method=request.method, path=path, date=date, body=body, signature=signature
        ):
            log.warning("powens webhook with a bad signature from %s", request.remote)
            return web.json_response({"error": "bad signature"}, status=403)
        key = signature.strip()
        if max_age is not None:
            now = the_clock.now()
            signed_at = _parse_signature_date(date)
            if signed_at is None or abs(now - signed_at) > max_age:
                log.warning(
                    "powens webhook with a stale or unreadable date from %s", request.remote
                )
                return web.json_response({"error": "stale signature"}, status=401)
            if not seen.add(key, signed_at + max_age, now):
                log.warning("powens webhook replayed from %s", request.remote)
                return web.json_response({"error": "replayed signature"}, status=409)
        name = request.match_info.get("event") or request.query.get("event")
        try:
            event = parse_event(name, body)
        except MalformedWebhook as error:
            log.warning("malformed powens webhook %s: %s", name or "?", error)
            return web.json_response({"error": "malformed payload"}, status=400)
        if event is None:
            log.info("powens webhook %s ignored", name or "(unnamed)")
            return web.json_response({"status": "ignored"})
        log.info(
            "powens webhook %s: connection %s (user %s)",
            event.kind,
            event.connection_id,
            event.user_id,
        )
        try:
            await on_event(event)
        except Exception:
            log.exception("powens webhook %s: handler failed", event.kind)
            seen.discard(key)
            return web.json_response({"error": "handler failed"}, status=500)
        return web.json_response({"status": "ok"})

    return handle

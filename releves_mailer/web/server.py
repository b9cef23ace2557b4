"""The daemon's HTTP listener: runs an aiohttp application inside the daemon's event loop."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack

from aiohttp import web

from releves_mailer.config import HttpSection
from releves_mailer.listeners import ConnectionLimiter, Listener

__all__ = ["HttpServer"]

_log = logging.getLogger(__name__)

_REFUSAL_BODY = "Trop de connexions : réessayez dans un instant.\r\n".encode()
#: What an HTTP client over the connection caps reads before the connection closes.
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Retry-After: 10\r\n"
    b"Connection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_REFUSAL_BODY), _REFUSAL_BODY)
)


class HttpServer:
    """Serve ``app`` on ``config.listen:config.port`` (port 0 picks a free port)."""

    def __init__(self, config: HttpSection, app: web.Application) -> None:
        self.config = config
        self.app = app
        self.port: int | None = None
        self.limiter = ConnectionLimiter(
            "HTTP", config.max_connections, config.max_connections_per_address
        )
        self._runner: web.AppRunner | None = None
        self._listener: Listener | None = None

    async def start(self, stack: AsyncExitStack | None = None) -> None:
        runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=5.0
        )
        await runner.setup()
        # The runner's request handler factory behind our own accept loop (no aiohttp site).
        assert runner.server is not None
        listener = Listener(self.limiter, runner.server, refusal=_REFUSAL)
        try:
            await listener.start(self.config.listen, self.config.port)
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._listener = listener
        self.port = listener.port
        _log.info("HTTP listening on %s:%d", self.config.listen, self.port)
        if stack is not None:
            stack.push_async_callback(self.stop)

    @property
    def serving(self) -> bool:
        """Listening and accepting (for ``/health``)."""
        return self._listener is not None and self._listener.serving

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

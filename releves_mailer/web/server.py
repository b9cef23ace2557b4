"""The daemon's HTTP listener: runs an aiohttp application inside the daemon's event loop."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack

from aiohttp import web

from releves_mailer.config import HttpSection

__all__ = ["HttpServer"]

_log = logging.getLogger(__name__)


class HttpServer:
    """Serve ``app`` on ``config.listen:config.port`` (port 0 picks a free port)."""

    def __init__(self, config: HttpSection, app: web.Application) -> None:
        self.config = config
        self.app = app
        self.port: int | None = None
        self._runner: web.AppRunner | None = None

    async def start(self, stack: AsyncExitStack | None = None) -> None:
        runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=5.0
        )
        await runner.setup()
        site = web.TCPSite(runner, self.config.listen, self.config.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        addresses = runner.addresses
        self.port = int(addresses[0][1]) if addresses else self.config.port
        _log.info("HTTP listening on %s:%d", self.config.listen, self.port)
        if stack is not None:
            stack.push_async_callback(self.stop)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

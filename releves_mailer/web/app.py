"""The aiohttp application factory: routes, French pages, security headers.

Services are handed in (constructor injection, no globals). Other modules of ``web/`` add
their routes through ``setups`` (portal pages, the Powens webhook route...).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from releves_mailer.partner.flow import PartnerFlow
from releves_mailer.partner.mails import PartnerSettings
from releves_mailer.partner.testbank import TestBankPartner
from releves_mailer.render import Renderer

__all__ = ["PAGES", "Pages", "create_app", "security_headers"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Every page is a link page or a webview page: nothing may be cached, no token may leak
#: through a Referer, no other origin may frame it, and only our own stylesheet loads.
SECURITY_HEADERS: Mapping[str, str] = {
    "Cache-Control": "no-store, max-age=0",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as error:
        error.headers.update(SECURITY_HEADERS)
        raise
    response.headers.update(SECURITY_HEADERS)
    return response


class Pages:
    """Renders ``templates/web/<name>.html`` with the portal's common context."""

    def __init__(self, renderer: Renderer, settings: PartnerSettings) -> None:
        self.renderer = renderer
        self.settings = settings

    def render(self, name: str, context: Mapping[str, Any], *, status: int = 200) -> web.Response:
        full = {
            "portal_name": self.settings.portal_name,
            "support_email": self.settings.support_email,
            "support_phone": self.settings.support_phone,
            **context,
        }
        body = self.renderer.render_page(name, full)
        return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")

    def stylesheet(self) -> bytes:
        for folder in self.renderer.search_path:
            path = Path(folder) / "web" / "releves.css"
            if path.is_file():
                return path.read_bytes()
        return b""


PAGES = web.AppKey("pages", Pages)


def create_app(
    *,
    renderer: Renderer,
    settings: PartnerSettings,
    flow: PartnerFlow | None = None,
    testbank: TestBankPartner | None = None,
    setups: Sequence[Callable[[web.Application], None]] = (),
) -> web.Application:
    """Build the application: link pages when ``flow`` is given, the test bank's webview
    when ``testbank`` is, then whatever ``setups`` add."""
    from releves_mailer.web import links, testbank_webview

    app = web.Application(middlewares=[security_headers], client_max_size=64 * 1024)
    pages = Pages(renderer, settings)
    app[PAGES] = pages
    css = pages.stylesheet()

    async def stylesheet(request: web.Request) -> web.Response:
        return web.Response(body=css, content_type="text/css", charset="utf-8")

    app.router.add_get("/static/releves.css", stylesheet)
    if flow is not None:
        links.setup(app, flow, pages)
    if testbank is not None:
        testbank_webview.setup(app, testbank, pages)
    for setup in setups:
        setup(app)
    return app

"""The aiohttp application factory: routes, French pages, security headers.

Services are handed in (constructor injection, no globals). Other modules of ``web/`` add
their routes through ``setups`` (portal pages, each aggregator's routes...).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from releves_mailer.partner.flow import PartnerFlow
from releves_mailer.partner.mails import PartnerSettings
from releves_mailer.render import Renderer

__all__ = ["ERRORS", "PAGES", "Pages", "add_security_headers", "create_app", "error_pages"]

_log = logging.getLogger(__name__)

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


#: French titles and messages of the error pages aiohttp would answer in English.
ERRORS: Mapping[int, tuple[str, str]] = {
    400: ("Requête invalide", "La demande est incomplète ou mal formée."),
    403: ("Accès refusé", "Vous n'avez pas accès à cette page."),
    404: ("Page introuvable", "Cette page n'existe pas ou n'existe plus."),
    405: ("Action impossible", "Cette action n'est pas possible sur cette page."),
    413: ("Envoi trop volumineux", "Le contenu envoyé dépasse la taille autorisée."),
}
_INTERNAL = (
    "Erreur interne",
    "Une erreur inattendue s'est produite ; elle a été enregistrée. Réessayez plus tard.",
)


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every answer of the app carries them, error pages included
    (aiohttp's own 500 as well)."""
    response.headers.update(SECURITY_HEADERS)


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """French pages for aiohttp's default error answers and for unexpected failures."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        known = ERRORS.get(error.status)
        if known is None or error.text != f"{error.status}: {error.reason}":
            raise  # a redirect, or an answer that already says something of its own
        page = request.app[PAGES].error_page(*known, status=error.status)
        if "Allow" in error.headers:
            page.headers["Allow"] = error.headers["Allow"]
        return page
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        _log.exception("unexpected error on %s %s", request.method, request.path)
        return request.app[PAGES].error_page(*_INTERNAL, status=500)


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

    def error_page(self, title: str, message: str, *, status: int) -> web.Response:
        return self.render("erreur", {"title": title, "message": message}, status=status)

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
    setups: Sequence[Callable[[web.Application], None]] = (),
) -> web.Application:
    """Build the application: link pages when ``flow`` is given, then whatever ``setups``
    add (the portal, each aggregator's routes)."""
    from releves_mailer.web import links

    app = web.Application(middlewares=[error_pages], client_max_size=64 * 1024)
    app.on_response_prepare.append(add_security_headers)
    pages = Pages(renderer, settings)
    app[PAGES] = pages
    css = pages.stylesheet()

    async def stylesheet(request: web.Request) -> web.Response:
        return web.Response(body=css, content_type="text/css", charset="utf-8")

    app.router.add_get("/static/releves.css", stylesheet)
    if flow is not None:
        links.setup(app, flow, pages)
    for setup in setups:
        setup(app)
    return app

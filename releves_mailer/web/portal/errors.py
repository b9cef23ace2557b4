"""Error answers under ``/portail`` as portal pages: the user's menu, a French message.

A 404 of an unknown address, a refused selection or a missing file would otherwise be a bare
text or the site's generic page; here the user keeps the portal's layout and a way back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from releves_mailer.web.app import ERRORS
from releves_mailer.web.portal.common import PORTAL, PREFIX
from releves_mailer.web.portal.session import COOKIE_NAME

__all__ = ["portal_errors"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def portal_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn the 4xx answers of portal addresses into portal pages (same status)."""
    if request.path != PREFIX and not request.path.startswith(f"{PREFIX}/"):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPException as error:
        known = ERRORS.get(error.status)
        if error.status < 400 or known is None or error.content_type != "text/plain":
            raise
        title, default = known
        text = error.text or ""
        message = default if text == f"{error.status}: {error.reason}" else text
        portal = request.app[PORTAL]
        found = await portal.services.sessions.find(request.cookies.get(COOKIE_NAME, ""))
        page = portal.pages.render(
            "portal/erreur",
            {
                "title": title,
                "user": found.account if found is not None else None,
                "csrf": found.csrf_token if found is not None else "",
                "nav": "",
                "message": "",
                "errors": [message],
            },
            status=error.status,
        )
        if "Allow" in error.headers:
            page.headers["Allow"] = error.headers["Allow"]
        return page

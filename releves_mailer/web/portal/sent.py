"""The "Messages envoyés" page: the mails sent for the account to outside addresses."""

from __future__ import annotations

import dataclasses

from aiohttp import web

from releves_mailer.web.portal.common import (
    PREFIX,
    Pagination,
    PortalRequest,
    int_param,
    page,
    path_id,
)

__all__ = ["setup"]

NAV = "envoyes"


async def list_page(request: PortalRequest) -> web.StreamResponse:
    probe = Pagination(int_param(request.query, "page"), 0, {})
    rows, total = await request.services.sent.search(
        request.user, request.portal.settings.domain, limit=probe.size, offset=probe.offset
    )
    return request.portal.render(
        request,
        "envoyes",
        {
            "title": "Messages envoyés",
            "nav": NAV,
            "rows": rows,
            "pagination": dataclasses.replace(probe, total=total),
        },
    )


async def detail_page(request: PortalRequest) -> web.StreamResponse:
    found = await request.services.sent.detail(
        request.user, request.portal.settings.domain, path_id(request)
    )
    if found is None:
        raise web.HTTPNotFound()
    return request.portal.render(
        request,
        "envoye",
        {"title": found.mail.subject or "Message envoyé", "nav": NAV, "detail": found},
    )


def setup(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/envoyes", page(list_page))
    app.router.add_get(f"{PREFIX}/envoyes/{{id}}", page(detail_page))

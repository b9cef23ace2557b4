"""Handlers of the secure links (``/releves/saisie``, ``/releves/maj``) and the callback."""

from __future__ import annotations

import logging

from aiohttp import web

from releves_mailer.partner.flow import LinkProblem, LinkRefused, PartnerFlow
from releves_mailer.partner.links import LinkKind
from releves_mailer.web.app import Pages

__all__ = ["LinkHandlers", "setup"]

_log = logging.getLogger(__name__)

_STATUS = {
    LinkProblem.UNKNOWN: 404,
    LinkProblem.EXPIRED: 410,
    LinkProblem.USED: 410,
    LinkProblem.INACTIVE: 410,
    LinkProblem.CLOSED: 410,
    LinkProblem.CANCELLED: 200,
    LinkProblem.UNAVAILABLE: 503,
}
_TITLES = {
    LinkProblem.UNKNOWN: "Lien invalide",
    LinkProblem.EXPIRED: "Lien expiré",
    LinkProblem.USED: "Lien déjà utilisé",
    LinkProblem.INACTIVE: "Dossier désactivé",
    LinkProblem.CLOSED: "Connexion bancaire fermée",
    LinkProblem.CANCELLED: "Opération interrompue",
    LinkProblem.UNAVAILABLE: "Service indisponible",
}


class LinkHandlers:
    def __init__(self, flow: PartnerFlow, pages: Pages) -> None:
        self.flow = flow
        self.pages = pages

    def refused(self, error: LinkRefused) -> web.Response:
        return self.pages.render(
            "lien_refuse",
            {
                "title": _TITLES[error.problem],
                "message": error.message,
                "retry": error.problem in (LinkProblem.CANCELLED, LinkProblem.UNAVAILABLE),
            },
            status=_STATUS[error.problem],
        )

    async def _open(self, token: str, kind: LinkKind, connection_id: int | None) -> web.Response:
        try:
            url = await self.flow.open_link(token, kind, connection_id)
        except LinkRefused as error:
            return self.refused(error)
        raise web.HTTPFound(url)

    async def saisie(self, request: web.Request) -> web.Response:
        return await self._open(request.query.get("token", ""), LinkKind.ENTRY, None)

    async def maj(self, request: web.Request) -> web.Response:
        raw = request.query.get("idConnexion", "")
        if not raw.isdigit() or len(raw) > 18:
            return self.refused(LinkRefused(LinkProblem.UNKNOWN))
        return await self._open(request.query.get("token", ""), LinkKind.UPDATE, int(raw))

    async def retour(self, request: web.Request) -> web.Response:
        params = {key: request.query[key] for key in request.query}
        try:
            finished = await self.flow.finish(params)
        except LinkRefused as error:
            return self.refused(error)
        return self.pages.render(
            "lien_termine",
            {
                "update": finished.kind is LinkKind.UPDATE,
                "company": finished.company,
                "bank_name": finished.bank_name,
                "accounts": finished.accounts,
                "title": "Opération terminée",
            },
        )


def setup(app: web.Application, flow: PartnerFlow, pages: Pages) -> None:
    handlers = LinkHandlers(flow, pages)
    app.router.add_get("/releves/saisie", handlers.saisie)
    app.router.add_get("/releves/maj", handlers.maj)
    app.router.add_get("/releves/retour", handlers.retour)

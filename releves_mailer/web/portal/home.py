"""The portal's home page: collection health at a glance, each figure a link to its list."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from releves_mailer.web.portal.common import PREFIX, PortalRequest, page

__all__ = ["setup"]

#: The first date the statements search accepts: the undelivered figure counts them all.
ALL_DATES = "2000-01-01"


def _link(path: str, secondaries: bool, **filters: str) -> str:
    query = dict(filters)
    if secondaries:
        query["secondaires"] = "1"
    return f"{PREFIX}/{path}?{urlencode(query)}"


async def home(request: PortalRequest) -> web.StreamResponse:
    report = await request.services.health.report(request.user)
    wide = report.include_secondaries
    return request.portal.render(
        request,
        "accueil",
        {
            "title": "Accueil",
            "nav": "accueil",
            "report": report,
            "links": {
                "redevables": _link("redevables", wide),
                "erreur": _link("redevables", wide, etat="erreur"),
                "comptes_erreur": _link("comptes", wide, connexion="erreur"),
                "jeton_valide": _link("redevables", wide, jeton="valide"),
                "jeton_expire": _link("redevables", wide, jeton="expire"),
                "sans_connexion": _link("redevables", wide, etat="aucune"),
                "non_deposes": _link("releves", wide, etat="non_depose", du=ALL_DATES),
            },
        },
    )


async def root(request: web.Request) -> web.StreamResponse:
    """``/``: the address the daemon prints leads to the portal (its login form first)."""
    raise web.HTTPFound(f"{PREFIX}/")


def setup(app: web.Application) -> None:
    app.router.add_get("/", root)
    app.router.add_get(f"{PREFIX}/", page(home))
    app.router.add_get(PREFIX, page(home))

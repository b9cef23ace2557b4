"""Subscription screen: accept the CGAU (dated), choose the reception mode of statements."""

from __future__ import annotations

from aiohttp import web

from releves_mailer.errors import UserError
from releves_mailer.portfolio.boxes import box_address
from releves_mailer.services.portfolio import ReceptionMode
from releves_mailer.web.portal.common import PORTAL, PREFIX, PortalRequest, flag, page
from releves_mailer.web.portal.edi import edi_option, set_edi_option

__all__ = ["setup"]


async def _page(
    request: PortalRequest, *, errors: list[str], mode: str, status: int = 200
) -> web.Response:
    user = request.user
    edi_auto = await edi_option(request)
    domain = request.portal.settings.domain
    return request.portal.render(
        request,
        "souscription",
        {
            "title": "Relevés de comptes : souscription",
            "nav": "souscription",
            "errors": errors,
            "mode": mode,
            "edi_auto": edi_auto,
            "modes": [
                (
                    ReceptionMode.NONE.value,
                    "Pas de réception par mail",
                    "Les relevés sont à télécharger dans le suivi des relevés de comptes.",
                ),
                (
                    ReceptionMode.DEFAULT.value,
                    "Boîte par défaut",
                    "Les relevés arrivent dans la boîte de votre compte : "
                    f"{box_address(user.login, domain)}.",
                ),
                (
                    ReceptionMode.DEDICATED.value,
                    "Boîte dédiée aux relevés",
                    "Les relevés arrivent dans la boîte "
                    f"{box_address(user.login, domain, dedicated=True)}, "
                    "avec le même mot de passe que votre boîte.",
                ),
            ],
        },
        status=status,
    )


async def form(request: PortalRequest) -> web.StreamResponse:
    return await _page(request, errors=[], mode=request.user.reception_mode.value)


async def submit(request: PortalRequest) -> web.StreamResponse:
    raw_mode = request.text("reception")
    try:
        mode = ReceptionMode(raw_mode)
    except ValueError:
        return await _page(
            request,
            errors=["Choisissez la boîte de réception des relevés."],
            mode=request.user.reception_mode.value,
            status=422,
        )
    try:
        await request.services.portfolio.subscribe(
            request.user.id, accept_terms=flag(request.form or {}, "cgau"), reception_mode=mode
        )
    except UserError as error:
        return await _page(
            request,
            errors=[error.message[:1].upper() + error.message[1:] + "."],
            mode=mode.value,
            status=422,
        )
    await set_edi_option(request, flag(request.form or {}, "edi"))
    raise web.HTTPSeeOther(f"{PREFIX}/souscription?msg=souscrit")


async def terms(request: web.Request) -> web.StreamResponse:
    """The CGAU (``web/cgau_texte.html``, which the admin may override); no login needed."""
    return request.app[PORTAL].pages.render("cgau", {"title": "Conditions Générales"})


def setup(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/cgau", terms)
    app.router.add_get(f"{PREFIX}/souscription", page(form, subscribed=False))
    app.router.add_post(f"{PREFIX}/souscription", page(submit, subscribed=False))

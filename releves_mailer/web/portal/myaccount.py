"""The "Mon compte" page: change one's password; a primary account manages its secondaries."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from releves_mailer.errors import UserError
from releves_mailer.portfolio.boxes import box_address
from releves_mailer.services.family import SecondaryInput
from releves_mailer.services.portfolio import AccountView
from releves_mailer.web.portal import webmail
from releves_mailer.web.portal.common import PREFIX, PortalRequest, confirm_page, page, path_id

__all__ = ["setup"]

BASE = f"{PREFIX}/mon-compte"
#: The fields of the secondary account form, as the form names them.
SECONDARY_FIELDS = ("login", "company_name", "siret", "email", "contact_name", "phone")


def _sentence(error: UserError) -> str:
    return error.message[:1].upper() + error.message[1:] + "."


async def _page(
    request: PortalRequest,
    *,
    errors: Mapping[str, list[str]] | None = None,
    values: Mapping[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    user = request.user
    domain = request.portal.settings.domain
    family = await request.services.family.view(user) if user.is_primary else None
    return request.portal.render(
        request,
        "mon_compte",
        {
            "title": "Gestion de votre compte",
            "nav": "compte",
            "box": box_address(user.login, domain),
            "dedicated_box": box_address(user.login, domain, dedicated=True),
            "family": family,
            "form_errors": errors or {},
            "errors": [message for messages in (errors or {}).values() for message in messages],
            "values": values or {},
        },
        status=status,
    )


async def show(request: PortalRequest) -> web.StreamResponse:
    return await _page(request)


async def change_password(request: PortalRequest) -> web.StreamResponse:
    new = request.text("nouveau")
    if new != request.text("confirmation"):
        return await _page(
            request,
            errors={"mot_de_passe": ["Les deux saisies du nouveau mot de passe diffèrent."]},
            status=422,
        )
    try:
        await request.services.family.change_own_password(
            request.user, request.text("ancien"), new, current_session=request.session_id
        )
    except UserError as error:
        return await _page(request, errors={"mot_de_passe": [_sentence(error)]}, status=422)
    await webmail.password_changed(request.request.app, webmail.session_id(request), new)
    raise web.HTTPSeeOther(f"{BASE}?msg=mot_de_passe")


async def create_secondary(request: PortalRequest) -> web.StreamResponse:
    values = {name: request.text(name).strip() for name in SECONDARY_FIELDS}
    password = request.text("mot_de_passe")
    if password != request.text("confirmation"):
        return await _page(
            request,
            errors={"secondaire": ["Les deux saisies du mot de passe diffèrent."]},
            values=values,
            status=422,
        )
    try:
        await request.services.family.create(request.user, SecondaryInput(**values), password)
    except UserError as error:
        return await _page(
            request, errors={"secondaire": [_sentence(error)]}, values=values, status=422
        )
    raise web.HTTPSeeOther(f"{BASE}?msg=secondaire_cree")


async def _secondary_or_404(request: PortalRequest) -> AccountView:
    if not request.user.is_primary:
        raise web.HTTPNotFound()
    wanted = path_id(request)
    family = await request.services.family.view(request.user)
    for secondary in family.secondaries:
        if secondary.id == wanted:
            return secondary
    raise web.HTTPNotFound()


async def deactivate_confirm(request: PortalRequest) -> web.StreamResponse:
    secondary = await _secondary_or_404(request)
    return confirm_page(
        request,
        title="Désactiver un compte secondaire",
        nav="compte",
        question=(
            f"Voulez-vous vraiment désactiver le compte secondaire « {secondary.login} » "
            f"({secondary.company_name}) ? Il ne pourra plus se connecter au portail ni à "
            "ses boîtes aux lettres ; ses redevables et ses relevés sont conservés."
        ),
        action=f"{BASE}/secondaires/{secondary.id}/desactiver",
        confirm_label="Confirmer la désactivation",
        back=BASE,
    )


async def _switch(request: PortalRequest, active: bool) -> web.StreamResponse:
    secondary = await _secondary_or_404(request)
    try:
        await request.services.family.set_active(request.user, secondary.id, active)
    except UserError as error:
        return await _page(request, errors={"secondaire": [_sentence(error)]}, status=409)
    code = "secondaire_reactive" if active else "secondaire_desactive"
    raise web.HTTPSeeOther(f"{BASE}?msg={code}")


async def deactivate(request: PortalRequest) -> web.StreamResponse:
    return await _switch(request, False)


async def reactivate(request: PortalRequest) -> web.StreamResponse:
    return await _switch(request, True)


async def set_secondary_password(request: PortalRequest) -> web.StreamResponse:
    secondary = await _secondary_or_404(request)
    password = request.text("mot_de_passe")
    key = f"secondaire-{secondary.id}"
    if password != request.text("confirmation"):
        return await _page(
            request, errors={key: ["Les deux saisies du mot de passe diffèrent."]}, status=422
        )
    try:
        await request.services.family.set_password(request.user, secondary.id, password)
    except UserError as error:
        return await _page(request, errors={key: [_sentence(error)]}, status=422)
    raise web.HTTPSeeOther(f"{BASE}?msg=secondaire_mot_de_passe")


def setup(app: web.Application) -> None:
    app.router.add_get(BASE, page(show, subscribed=False))
    app.router.add_post(f"{BASE}/mot-de-passe", page(change_password, subscribed=False))
    app.router.add_post(f"{BASE}/secondaires", page(create_secondary))
    app.router.add_get(f"{BASE}/secondaires/{{id}}/desactiver", page(deactivate_confirm))
    app.router.add_post(f"{BASE}/secondaires/{{id}}/desactiver", page(deactivate))
    app.router.add_post(f"{BASE}/secondaires/{{id}}/reactiver", page(reactivate))
    app.router.add_post(f"{BASE}/secondaires/{{id}}/mot-de-passe", page(set_secondary_password))

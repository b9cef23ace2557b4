"""Bank accounts screens: the list with its filters, an account's detail, deactivation."""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from releves_mailer.services.banks import BankAccountSearch
from releves_mailer.web.portal.common import (
    PREFIX,
    Pagination,
    PortalRequest,
    confirm_page,
    flag,
    int_param,
    open_link_page,
    page,
    path_id,
    send_link_page,
)
from releves_mailer.web.portal.scope import bank_account_or_404

__all__ = ["setup"]

CONNECTION_FILTERS = ("succes", "erreur")
LINK_FILTERS = ("valide", "expire", "utilise")
#: Most events the detail page shows.
HISTORY_LIMIT = 500


def _criteria(query: Any) -> dict[str, str]:
    return {
        "siret": query.get("siret", "").strip(),
        "nom": query.get("nom", "").strip(),
        "iban": query.get("iban", "").strip(),
        "connexion": query.get("connexion", "")
        if query.get("connexion") in CONNECTION_FILTERS
        else "",
        "jeton": query.get("jeton", "") if query.get("jeton") in LINK_FILTERS else "",
        "desactives": "1" if flag(query, "desactives") else "",
        "secondaires": "1" if flag(query, "secondaires") else "",
    }


async def list_page(request: PortalRequest) -> web.StreamResponse:
    portal = request.portal
    criteria = _criteria(request.query)
    probe = Pagination(int_param(request.query, "page"), 0, criteria)
    search = BankAccountSearch(
        siret=criteria["siret"],
        name=criteria["nom"],
        iban=criteria["iban"],
        connection=criteria["connexion"],
        link=criteria["jeton"],
        include_inactive=bool(criteria["desactives"]),
        include_secondaries=bool(criteria["secondaires"]),
        limit=probe.size,
        offset=probe.offset,
    )
    rows, total = await request.services.banks.search(request.user, search)
    # Connections without a bank account yet (failed at their first check), shown above.
    bare = await request.services.banks.bare_connections(request.user, search)
    pagination = dataclasses.replace(probe, total=total)
    return portal.render(
        request,
        "comptes",
        {
            "title": "Gestion des comptes bancaires",
            "nav": "comptes",
            "criteria": criteria,
            "rows": rows,
            "bare": bare,
            "pagination": pagination,
            "show_login": bool(criteria["secondaires"]) and request.user.is_primary,
        },
    )


async def detail_page(request: PortalRequest) -> web.StreamResponse:
    services = request.services
    found = await bank_account_or_404(request, path_id(request))
    account = found.account
    entry = await services.banks.detail(account.id, history_limit=HISTORY_LIMIT)
    current = await services.banks.row(account.id)
    links = [
        link
        for link in await services.links.recent(found.redevable.id)
        if link.connection_id in (None, account.connection_id)
    ]
    statements = await services.statements.rows_of_account(account.id)
    return request.portal.render(
        request,
        "compte",
        {
            "title": "Détail d'un compte bancaire",
            "nav": "comptes",
            "account": entry.account,
            "row": current,
            "connection": entry.connection,
            "redevable": entry.redevable,
            "schedule": entry.redevable.schedule,
            "events": [
                {
                    "at": event.at,
                    "message": event.message or event.kind,
                    "old_value": event.old_value,
                    "new_value": event.new_value,
                    "ok": event.ok,
                }
                for event in entry.events
            ],
            "links": links,
            "statements": statements,
        },
    )


async def deactivate_confirm(request: PortalRequest) -> web.StreamResponse:
    found = await bank_account_or_404(request, path_id(request))
    return request.portal.render(
        request,
        "compte_desactiver",
        {
            "title": "Désactiver un compte bancaire",
            "nav": "comptes",
            "account": found.account,
            "redevable": found.redevable,
        },
    )


async def _switch(request: PortalRequest, active: bool) -> web.StreamResponse:
    account = (await bank_account_or_404(request, path_id(request))).account
    await request.services.banks.set_active(account.id, active)
    code = "compte_reactive" if active else "compte_desactive"
    raise web.HTTPSeeOther(f"{PREFIX}/comptes/{account.id}?msg={code}")


async def deactivate(request: PortalRequest) -> web.StreamResponse:
    return await _switch(request, False)


async def reactivate(request: PortalRequest) -> web.StreamResponse:
    return await _switch(request, True)


async def send_update_link_confirm(request: PortalRequest) -> web.StreamResponse:
    found = await bank_account_or_404(request, path_id(request))
    redevable = found.redevable
    return confirm_page(
        request,
        title="Transmettre un lien sécurisé",
        nav="comptes",
        question=(
            f"Transmettre à {redevable.email or 'l’adresse email du redevable'} un lien "
            f"sécurisé, valable 72 heures, pour que {redevable.full_company_name} mette à jour "
            "les identifiants de cette connexion bancaire ?"
        ),
        action=f"{PREFIX}/comptes/{found.account.id}/lien",
        confirm_label="Envoyer le lien",
        back=f"{PREFIX}/comptes/{found.account.id}",
    )


async def send_update_link(request: PortalRequest) -> web.StreamResponse:
    """ "Mettre à jour les identifiants": mail a secure update link to the redevable."""
    account = (await bank_account_or_404(request, path_id(request))).account
    return await send_link_page(
        request,
        account.redevable_id,
        connection_id=account.connection_id,
        nav="comptes",
        done=f"{PREFIX}/comptes/{account.id}?msg=lien",
    )


async def open_update_link(request: PortalRequest) -> web.StreamResponse:
    """The holder updates the credentials himself (his own company): show the link."""
    account = (await bank_account_or_404(request, path_id(request))).account
    return await open_link_page(
        request, account.redevable_id, connection_id=account.connection_id, nav="comptes"
    )


def setup(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/comptes", page(list_page))
    app.router.add_get(f"{PREFIX}/comptes/{{id}}", page(detail_page))
    app.router.add_get(f"{PREFIX}/comptes/{{id}}/desactiver", page(deactivate_confirm))
    app.router.add_post(f"{PREFIX}/comptes/{{id}}/desactiver", page(deactivate))
    app.router.add_post(f"{PREFIX}/comptes/{{id}}/reactiver", page(reactivate))
    app.router.add_get(f"{PREFIX}/comptes/{{id}}/lien", page(send_update_link_confirm))
    app.router.add_post(f"{PREFIX}/comptes/{{id}}/lien", page(send_update_link))
    app.router.add_post(f"{PREFIX}/comptes/{{id}}/ouvrir", page(open_update_link))

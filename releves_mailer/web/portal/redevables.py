"""Redevables screens ("Paramétrage"): search, create, edit, (de)activate, import, tabs."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from releves_mailer.errors import UserError
from releves_mailer.portfolio.redevables import FIELD_LABELS, RedevableSearch, validate_redevable
from releves_mailer.services.links import IssuedView
from releves_mailer.services.portfolio import Periodicity, RedevableView
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
from releves_mailer.web.portal.scope import redevable_or_404

__all__ = ["setup"]

WEEKDAYS = ["Dimanche", "Lundi", "Mardi", "Mercredi", "Jeudi", "Vendredi", "Samedi"]
MONTHS = [
    "Janvier",
    "Février",
    "Mars",
    "Avril",
    "Mai",
    "Juin",
    "Juillet",
    "Août",
    "Septembre",
    "Octobre",
    "Novembre",
    "Décembre",
]
#: How an import issue on a SIRET already on the account says what would replace it (the
#: import form's checkbox).
UPDATE_REMEDY = (
    "cochez « Mettre à jour les redevables de ce compte déjà présents » pour le modifier"
)
#: Per periodicity: the form fields that hold its month and its day.
_FIELDS: dict[Periodicity, tuple[str | None, str | None]] = {
    Periodicity.JOURNALIERE: (None, None),
    Periodicity.HEBDOMADAIRE: (None, "day_week"),
    Periodicity.MENSUELLE: (None, "day_month"),
    Periodicity.TRIMESTRIELLE: ("month_q", "day_month"),
    Periodicity.SEMESTRIELLE: ("month_s", "day_month"),
    Periodicity.ANNUELLE: ("month_a", "day_year"),
}


class FormValues(dict[str, str]):
    """Form fields for a template: an absent field is empty (the templates are strict)."""

    def __missing__(self, key: str) -> str:
        return ""


def _choices() -> dict[str, Any]:
    return {
        "periodicities": [p.value for p in Periodicity],
        "weekdays": list(enumerate(WEEKDAYS, start=1)),
        "month_days": [(day, str(day)) for day in range(1, 29)] + [(0, "Fin du mois")],
        "year_days": list(range(1, 32)),
        "months": list(enumerate(MONTHS, start=1)),
    }


def _form_values(redevable: RedevableView | None) -> dict[str, str]:
    """The edit form's fields for a stored redevable (or empty for a new one)."""
    if redevable is None:
        return {"periodicity": Periodicity.HEBDOMADAIRE.value, "day_week": "2"}
    values = {
        "siren": redevable.siren,
        "nic": redevable.nic,
        "company_name": redevable.company_name,
        "company_name_2": redevable.company_name_2,
        "email": redevable.email,
        "periodicity": redevable.periodicity.value,
        "remote_entry": "1" if redevable.remote_entry else "",
        "no_auto_link": "1" if redevable.no_auto_link else "",
        "include_pending": "1" if redevable.include_pending else "",
        "skip_empty_mail": "1" if redevable.skip_empty_mail else "",
    }
    month_field, day_field = _FIELDS[redevable.periodicity]
    if month_field and redevable.month is not None:
        values[month_field] = str(redevable.month)
    if day_field and redevable.day is not None:
        values[day_field] = str(redevable.day)
    return values


def _submitted(request: PortalRequest) -> dict[str, str]:
    names = (
        "siren nic company_name company_name_2 email periodicity day_week day_month day_year "
        "month_q month_s month_a remote_entry no_auto_link include_pending skip_empty_mail"
    ).split()
    return {name: request.text(name).strip() for name in names}


def _validate(values: Mapping[str, str]) -> tuple[Any, list[UserError]]:
    periodicity = values.get("periodicity", "")
    month_field, day_field = (
        _FIELDS.get(Periodicity(periodicity), (None, None))
        if (periodicity in Periodicity.__members__)
        else (None, None)
    )
    return validate_redevable(
        siren=values.get("siren", ""),
        nic=values.get("nic", ""),
        company_name=values.get("company_name", ""),
        company_name_2=values.get("company_name_2", ""),
        email=values.get("email", ""),
        periodicity=periodicity,
        month=values.get(month_field, "") if month_field else None,
        day=values.get(day_field, "") if day_field else None,
        remote_entry=flag(values, "remote_entry"),
        no_auto_link=flag(values, "no_auto_link"),
        include_pending=flag(values, "include_pending"),
        skip_empty_mail=flag(values, "skip_empty_mail"),
    )


def _error_list(errors: list[UserError]) -> list[str]:
    return [
        f"{FIELD_LABELS.get(error.field, error.field)} : {error.message}"
        if error.field
        else error.message
        for error in errors
    ]


def _criteria(query: Mapping[str, str]) -> dict[str, str]:
    state = query.get("etat", "")
    link = query.get("jeton", "")
    return {
        "siret": query.get("siret", "").strip(),
        "nom": query.get("nom", "").strip(),
        "iban": query.get("iban", "").strip(),
        "etat": state if state in ("succes", "erreur", "aucune") else "",
        "jeton": link if link in ("valide", "expire") else "",
        "desactives": "1" if flag(query, "desactives") else "",
        "secondaires": "1" if flag(query, "secondaires") else "",
    }


async def list_page(request: PortalRequest) -> web.StreamResponse:
    criteria = _criteria(request.query)
    secondaries = bool(criteria["secondaires"]) and request.user.is_primary
    number = int_param(request.query, "page")
    probe = Pagination(number, 0, criteria)
    found = await request.services.portfolio.search(
        request.user,
        RedevableSearch(
            siret=criteria["siret"],
            name=criteria["nom"],
            iban=criteria["iban"],
            collection_state=criteria["etat"],
            link_state=criteria["jeton"],
            include_inactive=bool(criteria["desactives"]),
            include_secondaries=secondaries,
            limit=probe.size,
            offset=probe.offset,
        ),
        count_accounts=True,
    )
    rows = [
        {
            "redevable": row,
            "login": row.account_login,
            "schedule": row.schedule,
            "accounts": found.active_accounts.get(row.id, 0),
        }
        for row in found.rows
    ]
    return request.portal.render(
        request,
        "redevables",
        {
            "title": "Paramétrage des relevés",
            "nav": "redevables",
            "criteria": criteria,
            "rows": rows,
            "pagination": Pagination(number, found.total, criteria),
            "show_login": secondaries,
        },
    )


def _edit_page(
    request: PortalRequest,
    *,
    redevable: RedevableView | None,
    values: Mapping[str, str],
    errors: list[str],
    tab: str = "comptes",
    accounts: list[Any] | None = None,
    links: list[Any] | None = None,
    status: int = 200,
) -> web.Response:
    return request.portal.render(
        request,
        "redevable",
        {
            "title": "Modification d'un redevable" if redevable else "Création d'un redevable",
            "nav": "redevables",
            "redevable": redevable,
            "values": FormValues(values),
            "errors": errors,
            "tab": tab,
            "accounts": accounts or [],
            "links": links or [],
            **_choices(),
        },
        status=status,
    )


async def new_form(request: PortalRequest) -> web.StreamResponse:
    return _edit_page(request, redevable=None, values=_form_values(None), errors=[])


async def create(request: PortalRequest) -> web.StreamResponse:
    portal = request.portal
    values = _submitted(request)
    data, problems = _validate(values)
    if data is None:
        return _edit_page(
            request, redevable=None, values=values, errors=_error_list(problems), status=422
        )
    try:
        redevable, sent = await portal.services.portfolio.create_redevable(request.user.id, data)
    except UserError as error:
        return _edit_page(
            request, redevable=None, values=values, errors=_error_list([error]), status=422
        )
    done = "cree_lien" if sent else "cree"
    raise web.HTTPSeeOther(f"{PREFIX}/redevables/{redevable.id}?msg={done}")


async def _tabs(request: PortalRequest, redevable: RedevableView) -> dict[str, Any]:
    services = request.services
    return {
        "accounts": await services.banks.rows_of_redevable(redevable.id),
        "links": await services.links.recent(redevable.id),
    }


async def edit_form(request: PortalRequest) -> web.StreamResponse:
    redevable = await redevable_or_404(request, path_id(request))
    tab = "jetons" if request.query.get("onglet") == "jetons" else "comptes"
    return _edit_page(
        request,
        redevable=redevable,
        values=_form_values(redevable),
        errors=[],
        tab=tab,
        **await _tabs(request, redevable),
    )


async def update(request: PortalRequest) -> web.StreamResponse:
    values = _submitted(request)
    data, problems = _validate(values)
    errors = _error_list(problems)
    sent: list[IssuedView] = []
    redevable = await redevable_or_404(request, path_id(request))
    if data is not None:
        try:
            _, sent = await request.services.portfolio.update_redevable(redevable.id, data)
        except UserError as error:
            errors = _error_list([error])
    if errors:
        stored = await redevable_or_404(request, redevable.id)
        return _edit_page(
            request,
            redevable=stored,
            values=values,
            errors=errors,
            status=422,
            **await _tabs(request, stored),
        )
    done = "modifie_lien" if sent else "modifie"
    raise web.HTTPSeeOther(f"{PREFIX}/redevables/{redevable.id}?msg={done}")


def _back(request: PortalRequest, code: str) -> str:
    target = request.text("retour")
    if not target.startswith(f"{PREFIX}/redevables") or "//" in target:
        target = f"{PREFIX}/redevables"
    return f"{target}{'&' if '?' in target else '?'}msg={code}"


async def _switch(request: PortalRequest, active: bool) -> web.StreamResponse:
    portal = request.portal
    redevable = await redevable_or_404(request, path_id(request))
    try:
        # Its bank accounts follow, exactly as with the command line.
        await portal.services.portfolio.set_redevable_active(redevable.id, active)
    except UserError as error:
        return portal.render(
            request, "erreur", {"title": "Action impossible", "errors": [error.message]}, status=409
        )
    raise web.HTTPSeeOther(_back(request, "reactive" if active else "desactive"))


async def deactivate_confirm(request: PortalRequest) -> web.StreamResponse:
    redevable = await redevable_or_404(request, path_id(request))
    back = request.query.get("retour", "")
    if not back.startswith(f"{PREFIX}/redevables") or "//" in back:
        back = f"{PREFIX}/redevables"
    return confirm_page(
        request,
        title="Désactiver un redevable",
        nav="redevables",
        question=(
            f"Voulez-vous vraiment désactiver le redevable {redevable.full_company_name} "
            f"(SIRET {redevable.siret}) ? La collecte de ses comptes bancaires s'arrête et "
            "aucun relevé ne sera plus produit pour lui jusqu'à sa réactivation."
        ),
        action=f"{PREFIX}/redevables/{redevable.id}/desactiver",
        confirm_label="Confirmer la désactivation",
        back=back,
        hidden={"retour": back},
    )


async def deactivate(request: PortalRequest) -> web.StreamResponse:
    return await _switch(request, False)


async def reactivate(request: PortalRequest) -> web.StreamResponse:
    return await _switch(request, True)


async def send_link_confirm(request: PortalRequest) -> web.StreamResponse:
    redevable = await redevable_or_404(request, path_id(request))
    return confirm_page(
        request,
        title="Transmettre un lien sécurisé",
        nav="redevables",
        question=(
            f"Transmettre à {redevable.email or 'l’adresse email du redevable'} un lien "
            f"sécurisé, valable 72 heures, pour que {redevable.full_company_name} ajoute ses "
            "comptes bancaires ?"
        ),
        action=f"{PREFIX}/redevables/{redevable.id}/lien",
        confirm_label="Envoyer le lien",
        back=f"{PREFIX}/redevables/{redevable.id}",
    )


async def send_link(request: PortalRequest) -> web.StreamResponse:
    """ "Ajouter des comptes bancaires": mail a secure link to the redevable."""
    redevable = await redevable_or_404(request, path_id(request))
    return await send_link_page(
        request,
        redevable.id,
        connection_id=None,
        nav="redevables",
        done=f"{PREFIX}/redevables/{redevable.id}?onglet=jetons&msg=lien",
    )


async def open_link(request: PortalRequest) -> web.StreamResponse:
    """The holder adds the bank accounts himself (the redevable is his own company)."""
    redevable = await redevable_or_404(request, path_id(request))
    return await open_link_page(request, redevable.id, connection_id=None, nav="redevables")


async def import_form(request: PortalRequest) -> web.StreamResponse:
    return request.portal.render(
        request,
        "import",
        {"title": "Importer des redevables", "nav": "redevables", "report": None, "name": ""},
    )


async def import_submit(request: PortalRequest) -> web.StreamResponse:
    portal = request.portal
    assert request.form is not None
    upload = request.form.get("fichier")
    if not isinstance(upload, web.FileField):
        return portal.render(
            request,
            "import",
            {
                "title": "Importer des redevables",
                "nav": "redevables",
                "report": None,
                "name": "",
                "errors": ["Choisissez un fichier à importer."],
            },
            status=422,
        )
    data = await asyncio.to_thread(upload.file.read)
    report = await portal.services.portfolio.import_file(
        request.user.id,
        data,
        update=flag(request.form, "maj"),
        dry_run=flag(request.form, "verifier"),
        no_auto_link=flag(request.form, "no_auto_link"),
        max_lines=portal.import_max_lines,
    )
    issues = [
        {
            "line": issue.line,
            "field": FIELD_LABELS.get(issue.field, issue.field),
            "value": issue.value,
            "reason": issue.reason,
        }
        for issue in (item.with_remedy(UPDATE_REMEDY) for item in report.issues)
    ]
    return portal.render(
        request,
        "import",
        {
            "title": "Importer des redevables",
            "nav": "redevables",
            "report": report,
            "issues": issues,
            "links_sent": report.links_sent,
            "name": upload.filename,
        },
        status=200 if report.ok else 422,
    )


def setup(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/redevables", page(list_page))
    app.router.add_get(f"{PREFIX}/redevables/nouveau", page(new_form))
    app.router.add_post(f"{PREFIX}/redevables/nouveau", page(create))
    app.router.add_get(f"{PREFIX}/redevables/import", page(import_form))
    app.router.add_post(f"{PREFIX}/redevables/import", page(import_submit, upload=True))
    app.router.add_get(f"{PREFIX}/redevables/{{id}}", page(edit_form))
    app.router.add_post(f"{PREFIX}/redevables/{{id}}", page(update))
    app.router.add_get(f"{PREFIX}/redevables/{{id}}/desactiver", page(deactivate_confirm))
    app.router.add_post(f"{PREFIX}/redevables/{{id}}/desactiver", page(deactivate))
    app.router.add_post(f"{PREFIX}/redevables/{{id}}/reactiver", page(reactivate))
    app.router.add_get(f"{PREFIX}/redevables/{{id}}/lien", page(send_link_confirm))
    app.router.add_post(f"{PREFIX}/redevables/{{id}}/lien", page(send_link))
    app.router.add_post(f"{PREFIX}/redevables/{{id}}/ouvrir", page(open_link))

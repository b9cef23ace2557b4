"""Reception tracking ("Suivi et téléchargement"): search, detail, CFONB/CSV and ZIP downloads."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from aiohttp import web

from releves_mailer.clock import PARIS, business_today
from releves_mailer.errors import UserError
from releves_mailer.services.statements import StatementSearch, StatementState
from releves_mailer.statements.exports import CFONB, CSV, zip_files
from releves_mailer.web.portal.common import (
    PREFIX,
    Pagination,
    PortalRequest,
    flag,
    int_param,
    page,
    path_id,
)
from releves_mailer.web.portal.scope import statement_or_404

__all__ = ["setup"]

STATE_FILTERS = {
    "succes": StatementState.PRODUCED,
    "en_cours": StatementState.WAITING,
    "echec": StatementState.FAILED,
}
#: The "Non déposé" filter: produced, not yet in its box (the home page's figure).
UNDELIVERED = "non_depose"
#: Most statements one "Tout télécharger" ZIP holds.
ZIP_LIMIT = 1000
#: Days the search covers when no start date is given.
DEFAULT_DAYS = 31
#: The dates a search filter may name.
FIRST_DATE = dt.date(2000, 1, 1)
LAST_DATE = dt.date(2099, 12, 31)


def _date(value: str, name: str) -> dt.date | None:
    """A date typed in a filter (ISO or JJ/MM/AAAA), None when empty or unreadable.

    Raises :class:`UserError` for a real date outside the range a statement can have: the
    bounds of the search would otherwise overflow the date arithmetic (a 500).
    """
    text = value.strip()
    found = None
    for parse in (dt.date.fromisoformat, lambda t: dt.datetime.strptime(t, "%d/%m/%Y").date()):
        try:
            found = parse(text)
            break
        except ValueError:
            continue
    if found is not None and not FIRST_DATE <= found <= LAST_DATE:
        raise UserError(
            f"La date « {name} » ({found:%d/%m/%Y}) est hors limites : saisissez une date "
            f"entre le {FIRST_DATE:%d/%m/%Y} et le {LAST_DATE:%d/%m/%Y}.",
            field=name,
        )
    return found


def _criteria(values: Mapping[str, Any], today: dt.date) -> dict[str, str]:
    first = _date(str(values.get("du", "")), "du")
    last = _date(str(values.get("au", "")), "au")
    state = str(values.get("etat", ""))
    if first is not None and last is not None and last < first:
        raise UserError(
            f"La date « au » ({last:%d/%m/%Y}) est antérieure à la date « du » "
            f"({first:%d/%m/%Y}) : saisissez une période dont la fin suit le début.",
            field="au",
        )
    return {
        "du": (first or today - dt.timedelta(days=DEFAULT_DAYS)).isoformat(),
        "au": last.isoformat() if last else "",
        "siret": str(values.get("siret", "")).strip(),
        "nom": str(values.get("nom", "")).strip(),
        "iban": str(values.get("iban", "")).strip(),
        "etat": state if state in STATE_FILTERS or state == UNDELIVERED else "",
        "secondaires": "1" if flag(values, "secondaires") else "",
    }


def _bad_filter(request: PortalRequest, error: UserError) -> web.Response:
    return request.portal.render(
        request,
        "erreur",
        {"title": "Recherche impossible", "nav": "releves", "errors": [error.message]},
        status=400,
    )


def _search(criteria: Mapping[str, str]) -> StatementSearch:
    return StatementSearch(
        start=dt.date.fromisoformat(criteria["du"]),
        end=dt.date.fromisoformat(criteria["au"]) if criteria["au"] else None,
        siret=criteria["siret"],
        name=criteria["nom"],
        iban=criteria["iban"],
        state=STATE_FILTERS.get(criteria["etat"]),
        undelivered=criteria["etat"] == UNDELIVERED,
        include_secondaries=bool(criteria["secondaires"]),
    )


async def list_page(request: PortalRequest) -> web.StreamResponse:
    portal = request.portal
    try:
        criteria = _criteria(request.query, business_today(portal.clock))
    except UserError as error:
        return _bad_filter(request, error)
    probe = Pagination(int_param(request.query, "page"), 0, criteria)
    rows, total = await request.services.statements.search(
        request.user, _search(criteria), limit=probe.size, offset=probe.offset
    )
    pagination = dataclasses.replace(probe, total=total)
    return portal.render(
        request,
        "releves",
        {
            "title": "Suivi des relevés reçus",
            "nav": "releves",
            "criteria": criteria,
            "rows": rows,
            "pagination": pagination,
            "show_login": bool(criteria["secondaires"]) and request.user.is_primary,
            "zip_limit": ZIP_LIMIT,
        },
    )


async def detail_page(request: PortalRequest) -> web.StreamResponse:
    found = await statement_or_404(request, path_id(request))
    return request.portal.render(
        request,
        "releve",
        {
            "title": "Détail du relevé",
            "nav": "releves",
            "statement": found.statement,
            "row": found.row,
            "movements": found.movements,
            "corrections": found.corrections,
        },
    )


def _attachment(name: str, content: bytes, content_type: str) -> web.Response:
    response = web.Response(body=content, content_type=content_type)
    response.headers["Content-Disposition"] = (
        f"attachment; filename=\"{name}\"; filename*=UTF-8''{quote(name)}"
    )
    return response


async def _download(request: PortalRequest, kind: str) -> web.StreamResponse:
    files = await request.services.statements.download(request.user, path_id(request), kind)
    if files is None:
        raise web.HTTPNotFound(text="Page introuvable.", content_type="text/plain")
    if not files:
        raise web.HTTPNotFound(text="Fichier indisponible.", content_type="text/plain")
    content_type = "text/plain" if kind == CFONB else "text/csv"
    return _attachment(files[0].name, files[0].content, content_type)


async def download_cfonb(request: PortalRequest) -> web.StreamResponse:
    return await _download(request, CFONB)


async def download_csv(request: PortalRequest) -> web.StreamResponse:
    return await _download(request, CSV)


async def download_zip(request: PortalRequest) -> web.StreamResponse:
    """The selected statements (``ids``), or every result of the search (``tout``), zipped."""
    portal = request.portal
    assert request.form is not None
    everything = flag(request.form, "tout")
    statements = request.services.statements
    if everything:
        try:
            criteria = _criteria(request.form, business_today(portal.clock))
        except UserError as error:
            return _bad_filter(request, error)
        files = await statements.files_of_search(request.user, _search(criteria), limit=ZIP_LIMIT)
    else:
        wanted = {
            int(value)
            for value in request.form.getall("ids", [])
            if isinstance(value, str) and value.isdigit() and len(value) < 18
        }
        if not wanted or len(wanted) > ZIP_LIMIT:
            raise web.HTTPBadRequest(
                text=(
                    f"Aucun relevé sélectionné : cochez de 1 à {ZIP_LIMIT} relevés dans la "
                    "liste, ou utilisez « Tout télécharger »."
                    if not wanted
                    else f"Sélectionnez au plus {ZIP_LIMIT} relevés."
                ),
                content_type="text/plain",
            )
        selected = await statements.files_of_selection(request.user, wanted)
        if selected is None:
            # One of the ids is not the user's: nothing is given, nothing is revealed.
            raise web.HTTPNotFound(text="Page introuvable.", content_type="text/plain")
        files = selected
    if not files:
        raise web.HTTPNotFound(text="Aucun fichier à télécharger.", content_type="text/plain")
    content = await asyncio.to_thread(zip_files, files)
    stamp = portal.clock.now().astimezone(PARIS).strftime("%Y%m%d_%H%M%S")
    return _attachment(f"Releves_{stamp}.zip", content, "application/zip")


def setup(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/releves", page(list_page))
    app.router.add_post(f"{PREFIX}/releves/zip", page(download_zip))
    app.router.add_get(f"{PREFIX}/releves/{{id}}", page(detail_page))
    app.router.add_get(f"{PREFIX}/releves/{{id}}/cfonb", page(download_cfonb))
    app.router.add_get(f"{PREFIX}/releves/{{id}}/csv", page(download_csv))

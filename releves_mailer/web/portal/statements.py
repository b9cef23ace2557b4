"""Reception tracking ("Suivi et téléchargement"): search, detail, CFONB/CSV and ZIP downloads."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from releves_mailer.clock import PARIS, business_today
from releves_mailer.db.models import (
    BankAccount,
    LineKind,
    PortalAccount,
    Redevable,
    Statement,
    StatementLine,
    StatementState,
)
from releves_mailer.errors import UserError
from releves_mailer.statements.exports import CFONB, CSV, file_name, read_files, zip_files
from releves_mailer.vocabulary import french
from releves_mailer.web.portal.common import (
    PREFIX,
    Pagination,
    PortalRequest,
    flag,
    int_param,
    page,
    path_id,
)
from releves_mailer.web.portal.scope import (
    allowed_account_ids,
    listed_account_ids,
    statement_or_404,
)

__all__ = ["StatementRow", "setup", "statement_row"]

STATE_FILTERS = {
    "succes": StatementState.PRODUCED,
    "en_cours": StatementState.WAITING,
    "echec": StatementState.FAILED,
}
#: Most statements one "Tout télécharger" ZIP holds.
ZIP_LIMIT = 1000
#: Days the search covers when no start date is given.
DEFAULT_DAYS = 31
#: The dates a search filter may name.
FIRST_DATE = dt.date(2000, 1, 1)
LAST_DATE = dt.date(2099, 12, 31)


@dataclass(frozen=True)
class StatementRow:
    """One line of the tracking table."""

    id: int
    login: str
    siren: str
    nic: str
    company: str
    iban: str
    period_start: dt.date
    period_end: dt.date
    received_at: dt.datetime
    state: str
    state_label: str
    reason: str
    movements: int
    deleted: int
    has_cfonb: bool
    has_csv: bool


def statement_row(statement: Statement, redevable: Redevable, login: str) -> StatementRow:
    return StatementRow(
        id=statement.id,
        login=login,
        siren=redevable.siren,
        nic=redevable.nic,
        company=redevable.full_company_name,
        iban=statement.iban or "",
        period_start=statement.period_start,
        period_end=statement.period_end,
        received_at=statement.created_at,
        state=statement.state.value,
        state_label=french(statement.state).capitalize(),
        reason=statement.reason,
        movements=statement.movement_count,
        deleted=statement.deleted_count,
        has_cfonb=statement.state is StatementState.PRODUCED and statement.cfonb_size is not None,
        has_csv=statement.state is StatementState.PRODUCED and statement.csv_size is not None,
    )


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
    return {
        "du": (first or today - dt.timedelta(days=DEFAULT_DAYS)).isoformat(),
        "au": last.isoformat() if last else "",
        "siret": str(values.get("siret", "")).strip(),
        "nom": str(values.get("nom", "")).strip(),
        "iban": str(values.get("iban", "")).strip(),
        "etat": state if state in STATE_FILTERS else "",
        "secondaires": "1" if flag(values, "secondaires") else "",
    }


def _bad_filter(request: PortalRequest, error: UserError) -> web.Response:
    return request.portal.render(
        request,
        "erreur",
        {"title": "Recherche impossible", "nav": "releves", "errors": [error.message]},
        status=400,
    )


def _search(criteria: Mapping[str, str], account_ids: list[int]) -> list[ColumnElement[bool]]:
    """The conditions on ``statement`` alone (served by its indexes; no join to count)."""
    redevables = select(Redevable.id).where(Redevable.account_id.in_(account_ids))
    siret = criteria["siret"].replace(" ", "")
    if siret:
        redevables = redevables.where(
            (Redevable.siren + Redevable.nic).startswith(siret, autoescape=True)
        )
    if criteria["nom"]:
        full = func.lower(Redevable.company_name + " " + Redevable.company_name_2)
        redevables = redevables.where(full.contains(criteria["nom"].lower(), autoescape=True))
    start = dt.datetime.combine(dt.date.fromisoformat(criteria["du"]), dt.time(), tzinfo=PARIS)
    # Without a SIRET or name, most redevables match: "+ 0" keeps SQLite off the
    # per-redevable index so that it scans the covering index by date instead (PostgreSQL
    # plans on its own either way).
    narrow = bool(siret or criteria["nom"])
    scope = Statement.redevable_id if narrow else Statement.redevable_id + 0
    conditions: list[ColumnElement[bool]] = [
        scope.in_(redevables),
        Statement.created_at >= start,
    ]
    if criteria["au"]:
        end = dt.date.fromisoformat(criteria["au"]) + dt.timedelta(days=1)
        conditions.append(Statement.created_at < dt.datetime.combine(end, dt.time(), PARIS))
    iban = criteria["iban"].replace(" ", "").upper()
    if iban:
        # The account's IBAN (searched among the accounts, not along every statement).
        conditions.append(
            Statement.account_id.in_(
                select(BankAccount.id).where(BankAccount.iban.contains(iban, autoescape=True))
            )
        )
    if criteria["etat"]:
        conditions.append(Statement.state == STATE_FILTERS[criteria["etat"]])
    return conditions


_NEWEST_FIRST = (Statement.created_at.desc(), Statement.id.desc())


async def _rows(session: AsyncSession, ids: list[int]) -> list[StatementRow]:
    """The table rows of the statements ``ids``, in that order."""
    if not ids:
        return []
    found = {
        statement.id: statement_row(statement, redevable, login)
        for statement, redevable, login in await session.execute(
            select(Statement, Redevable, PortalAccount.login)
            .join(Redevable, Redevable.id == Statement.redevable_id)
            .join(PortalAccount, PortalAccount.id == Redevable.account_id)
            .where(Statement.id.in_(ids))
        )
    }
    return [found[statement_id] for statement_id in ids]


async def list_page(request: PortalRequest) -> web.StreamResponse:
    portal = request.portal
    try:
        criteria = _criteria(request.query, business_today(portal.clock))
    except UserError as error:
        return _bad_filter(request, error)
    async with portal.database.session() as session:
        ids = await listed_account_ids(session, request.user, bool(criteria["secondaires"]))
        conditions = _search(criteria, ids)
        total = int(await session.scalar(select(func.count(Statement.id)).where(*conditions)) or 0)
        pagination = Pagination(int_param(request.query, "page"), total, criteria)
        # Ids first (an index-only scan, even deep in the list), then their rows.
        page_ids = list(
            await session.scalars(
                select(Statement.id)
                .where(*conditions)
                .order_by(*_NEWEST_FIRST)
                .limit(pagination.size)
                .offset(pagination.offset)
            )
        )
        rows = await _rows(session, page_ids)
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
    portal = request.portal
    async with portal.database.session() as session:
        statement, redevable = await statement_or_404(session, request.user, path_id(request))
        lines = (
            await session.scalars(
                select(StatementLine)
                .where(StatementLine.statement_id == statement.id)
                .order_by(StatementLine.kind, StatementLine.position)
                .limit(2000)
            )
        ).all()
    return portal.render(
        request,
        "releve",
        {
            "title": "Détail du relevé",
            "nav": "releves",
            "statement": statement,
            "row": statement_row(statement, redevable, ""),
            "movements": [line for line in lines if line.kind is LineKind.MOVEMENT],
            "corrections": [line for line in lines if line.kind is LineKind.CORRECTION],
        },
    )


def _attachment(name: str, content: bytes, content_type: str) -> web.Response:
    response = web.Response(body=content, content_type=content_type)
    response.headers["Content-Disposition"] = (
        f"attachment; filename=\"{name}\"; filename*=UTF-8''{quote(name)}"
    )
    return response


async def _download(request: PortalRequest, kind: str) -> web.StreamResponse:
    portal = request.portal
    async with portal.database.session() as session:
        statement, _ = await statement_or_404(session, request.user, path_id(request))
        files = await read_files(session, [statement], (kind,))
    if not files or statement.state is not StatementState.PRODUCED:
        raise web.HTTPNotFound(text="Fichier indisponible.", content_type="text/plain")
    content_type = "text/plain" if kind == CFONB else "text/csv"
    return _attachment(file_name(statement, kind), files[0].content, content_type)


async def download_cfonb(request: PortalRequest) -> web.StreamResponse:
    return await _download(request, CFONB)


async def download_csv(request: PortalRequest) -> web.StreamResponse:
    return await _download(request, CSV)


async def download_zip(request: PortalRequest) -> web.StreamResponse:
    """The selected statements (``ids``), or every result of the search (``tout``), zipped."""
    portal = request.portal
    assert request.form is not None
    everything = flag(request.form, "tout")
    async with portal.database.session() as session:
        if everything:
            try:
                criteria = _criteria(request.form, business_today(portal.clock))
            except UserError as error:
                return _bad_filter(request, error)
            ids = await listed_account_ids(session, request.user, bool(criteria["secondaires"]))
            query = (
                select(Statement, Redevable, PortalAccount.login)
                .join(Redevable, Redevable.id == Statement.redevable_id)
                .join(PortalAccount, PortalAccount.id == Redevable.account_id)
                .where(*_search(criteria, ids))
                .order_by(*_NEWEST_FIRST)
                .limit(ZIP_LIMIT)
            )
        else:
            wanted = {
                int(value)
                for value in request.form.getall("ids", [])
                if isinstance(value, str) and value.isdigit() and len(value) < 18
            }
            if not wanted or len(wanted) > ZIP_LIMIT:
                raise web.HTTPBadRequest(
                    text=f"Sélectionnez de 1 à {ZIP_LIMIT} relevés.", content_type="text/plain"
                )
            query = (
                select(Statement, Redevable, PortalAccount.login)
                .join(Redevable, Redevable.id == Statement.redevable_id)
                .join(PortalAccount, PortalAccount.id == Redevable.account_id)
                .where(Statement.id.in_(wanted))
                .where(Redevable.account_id.in_(await allowed_account_ids(session, request.user)))
                .order_by(*_NEWEST_FIRST)
            )
        found = [statement for statement, _, _ in await session.execute(query)]
        if not everything and len(found) != len(wanted):
            # One of the ids is not the user's: nothing is given, nothing is revealed.
            raise web.HTTPNotFound(text="Page introuvable.", content_type="text/plain")
        ready = [s for s in found if s.state is StatementState.PRODUCED]
        files = await read_files(session, ready)
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

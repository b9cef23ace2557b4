"""Bank accounts screens: the list with its filters, an account's detail, deactivation."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from releves_mailer.collect.connections import set_account_active
from releves_mailer.collect.errors import describe_error
from releves_mailer.db.models import (
    BankAccount,
    BankConnection,
    BankEvent,
    ConnectionState,
    PortalAccount,
    Redevable,
    SecureLink,
    Statement,
)
from releves_mailer.partner.links import STATE_LABELS, LinkService, LinkState, link_state
from releves_mailer.portfolio.periodicity import Schedule
from releves_mailer.web.portal.common import (
    PREFIX,
    Pagination,
    PortalRequest,
    flag,
    int_param,
    open_link_page,
    page,
    path_id,
    send_link_page,
)
from releves_mailer.web.portal.scope import bank_account_or_404, listed_account_ids
from releves_mailer.web.portal.statements import statement_row

__all__ = ["AccountRow", "account_rows", "setup"]

CONNECTION_FILTERS = {"succes": ConnectionState.OK, "erreur": ConnectionState.ERROR}
LINK_FILTERS = ("valide", "expire", "utilise")


@dataclass(frozen=True)
class AccountRow:
    """One line of a bank accounts table."""

    id: int
    login: str
    siren: str
    nic: str
    company: str
    bank_name: str
    label: str
    type: str
    iban: str
    active: bool
    connection_id: int
    connection_ok: bool
    connection_state: str
    connection_error: str
    last_check_at: dt.datetime | None
    collection_ok: bool
    last_collected_at: dt.datetime | None
    link_state: str
    link_label: str
    link_at: dt.datetime | None


def _latest_link_id() -> Any:
    return (
        select(SecureLink.id)
        .where(SecureLink.connection_id == BankAccount.connection_id)
        .order_by(SecureLink.created_at.desc(), SecureLink.id.desc())
        .limit(1)
        .correlate(BankAccount)
        .scalar_subquery()
    )


def _base_query() -> Select[BankAccount, BankConnection, Redevable, str, SecureLink]:
    return (
        select(BankAccount, BankConnection, Redevable, PortalAccount.login, SecureLink)
        .join(BankConnection, BankConnection.id == BankAccount.connection_id)
        .join(Redevable, Redevable.id == BankAccount.redevable_id)
        .join(PortalAccount, PortalAccount.id == Redevable.account_id)
        .outerjoin(SecureLink, SecureLink.id == _latest_link_id())
    )


def _row(
    account: BankAccount,
    connection: BankConnection,
    redevable: Redevable,
    login: str,
    link: SecureLink | None,
    now: dt.datetime,
) -> AccountRow:
    state = link_state(link, now) if link is not None else None
    link_at = None
    if link is not None:
        link_at = {
            LinkState.USED: link.used_at,
            LinkState.EXPIRED: link.expires_at,
        }.get(state or LinkState.VALID, link.created_at)
    error = describe_error(connection.error_code).message if connection.error_code else ""
    check = connection.last_check_at
    collected = account.last_collected_at
    return AccountRow(
        id=account.id,
        login=login,
        siren=redevable.siren,
        nic=redevable.nic,
        company=redevable.full_company_name,
        bank_name=connection.bank_name,
        label=account.label,
        type=account.type,
        iban=account.iban or "",
        active=account.active and redevable.active,
        connection_id=connection.id,
        connection_ok=connection.state is ConnectionState.OK,
        connection_state=connection.state.value,
        connection_error=error,
        last_check_at=check,
        collection_ok=collected is not None and (check is None or collected >= check),
        last_collected_at=collected,
        link_state=state.value if state is not None else "",
        link_label=STATE_LABELS[state] if state is not None else "",
        link_at=link_at,
    )


async def account_rows(
    session: AsyncSession, now: dt.datetime, redevable_id: int
) -> list[AccountRow]:
    """Every bank account of one redevable (the "Comptes bancaires" tab)."""
    rows = await session.execute(
        _base_query()
        .where(BankAccount.redevable_id == redevable_id)
        .order_by(BankAccount.active.desc(), BankAccount.id)
    )
    return [_row(a, c, r, login, link, now) for a, c, r, login, link in rows]


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
    now = portal.clock.now()
    async with portal.database.session() as session:
        ids = await listed_account_ids(session, request.user, bool(criteria["secondaires"]))
        query = _base_query().where(Redevable.account_id.in_(ids))
        siret = criteria["siret"].replace(" ", "")
        if siret:
            query = query.where(
                (Redevable.siren + Redevable.nic).startswith(siret, autoescape=True)
            )
        if criteria["nom"]:
            full = func.lower(Redevable.company_name + " " + Redevable.company_name_2)
            query = query.where(full.contains(criteria["nom"].lower(), autoescape=True))
        iban = criteria["iban"].replace(" ", "").upper()
        if iban:
            query = query.where(BankAccount.iban.contains(iban, autoescape=True))
        if criteria["connexion"]:
            query = query.where(BankConnection.state == CONNECTION_FILTERS[criteria["connexion"]])
        if criteria["jeton"] == "valide":
            query = query.where(SecureLink.used_at.is_(None), SecureLink.expires_at > now)
        elif criteria["jeton"] == "utilise":
            query = query.where(SecureLink.used_at.is_not(None))
        elif criteria["jeton"] == "expire":
            query = query.where(SecureLink.used_at.is_(None), SecureLink.expires_at <= now)
        if not criteria["desactives"]:
            query = query.where(BankAccount.active.is_(True), Redevable.active.is_(True))
        total = int(await session.scalar(select(func.count()).select_from(query.subquery())) or 0)
        pagination = Pagination(int_param(request.query, "page"), total, criteria)
        rows = [
            _row(a, c, r, login, link, now)
            for a, c, r, login, link in await session.execute(
                query.order_by(Redevable.company_name, Redevable.siren, BankAccount.id)
                .limit(pagination.size)
                .offset(pagination.offset)
            )
        ]
    return portal.render(
        request,
        "comptes",
        {
            "title": "Gestion des comptes bancaires",
            "nav": "comptes",
            "criteria": criteria,
            "rows": rows,
            "pagination": pagination,
            "show_login": bool(criteria["secondaires"]) and request.user.is_primary,
        },
    )


@dataclass(frozen=True)
class EventRow:
    at: dt.datetime
    message: str
    old_value: str | None
    new_value: str | None
    ok: bool


async def detail_page(request: PortalRequest) -> web.StreamResponse:
    portal = request.portal
    now = portal.clock.now()
    async with portal.database.session() as session:
        account, redevable = await bank_account_or_404(session, request.user, path_id(request))
        row = await account_rows(session, now, redevable.id)
        current = next(item for item in row if item.id == account.id)
        connection = await session.get(BankConnection, account.connection_id)
        assert connection is not None
        events = (
            await session.scalars(
                select(BankEvent)
                .where(
                    or_(
                        BankEvent.account_id == account.id,
                        and_(
                            BankEvent.account_id.is_(None),
                            BankEvent.connection_id == account.connection_id,
                        ),
                    )
                )
                .order_by(BankEvent.at, BankEvent.id)
                .limit(500)
            )
        ).all()
        links = [
            link
            for link in await LinkService.recent(session, redevable.id, now)
            if link.connection_id in (None, account.connection_id)
        ]
        statements: Sequence[Statement] = (
            await session.scalars(
                select(Statement)
                .where(Statement.account_id == account.id)
                .order_by(Statement.due_date.desc())
                .limit(10)
            )
        ).all()
    event_rows = [
        EventRow(
            at=event.at,
            message=event.message or event.kind.value,
            old_value=event.old_value,
            new_value=event.new_value,
            ok=not event.kind.value.endswith("error")
            and event.kind.value not in ("iban_conflict", "iban_rejected", "balance_mismatch"),
        )
        for event in events
    ]
    schedule = Schedule.for_redevable(redevable)
    return portal.render(
        request,
        "compte",
        {
            "title": "Détail d'un compte bancaire",
            "nav": "comptes",
            "account": account,
            "row": current,
            "connection": connection,
            "redevable": redevable,
            "schedule": schedule.describe(),
            "events": event_rows,
            "links": links,
            "statements": [statement_row(statement, redevable, "") for statement in statements],
        },
    )


async def deactivate_confirm(request: PortalRequest) -> web.StreamResponse:
    async with request.portal.database.session() as session:
        account, redevable = await bank_account_or_404(session, request.user, path_id(request))
    return request.portal.render(
        request,
        "compte_desactiver",
        {
            "title": "Désactiver un compte bancaire",
            "nav": "comptes",
            "account": account,
            "redevable": redevable,
        },
    )


async def _switch(request: PortalRequest, active: bool) -> web.StreamResponse:
    portal = request.portal
    async with portal.database.session() as session:
        account, _ = await bank_account_or_404(session, request.user, path_id(request))
    await set_account_active(portal.database, account.id, active, clock=portal.clock)
    code = "compte_reactive" if active else "compte_desactive"
    raise web.HTTPSeeOther(f"{PREFIX}/comptes/{account.id}?msg={code}")


async def deactivate(request: PortalRequest) -> web.StreamResponse:
    return await _switch(request, False)


async def reactivate(request: PortalRequest) -> web.StreamResponse:
    return await _switch(request, True)


async def send_update_link(request: PortalRequest) -> web.StreamResponse:
    """ "Mettre à jour les identifiants": mail a secure update link to the redevable."""
    async with request.portal.database.session() as session:
        account, redevable = await bank_account_or_404(session, request.user, path_id(request))
    return await send_link_page(
        request,
        redevable.id,
        connection_id=account.connection_id,
        nav="comptes",
        done=f"{PREFIX}/comptes/{account.id}?msg=lien",
    )


async def open_update_link(request: PortalRequest) -> web.StreamResponse:
    """The holder updates the credentials himself (his own company): show the link."""
    async with request.portal.database.session() as session:
        account, redevable = await bank_account_or_404(session, request.user, path_id(request))
    return await open_link_page(
        request, redevable.id, connection_id=account.connection_id, nav="comptes"
    )


def setup(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/comptes", page(list_page))
    app.router.add_get(f"{PREFIX}/comptes/{{id}}", page(detail_page))
    app.router.add_get(f"{PREFIX}/comptes/{{id}}/desactiver", page(deactivate_confirm))
    app.router.add_post(f"{PREFIX}/comptes/{{id}}/desactiver", page(deactivate))
    app.router.add_post(f"{PREFIX}/comptes/{{id}}/reactiver", page(reactivate))
    app.router.add_post(f"{PREFIX}/comptes/{{id}}/lien", page(send_update_link))
    app.router.add_post(f"{PREFIX}/comptes/{{id}}/ouvrir", page(open_update_link))

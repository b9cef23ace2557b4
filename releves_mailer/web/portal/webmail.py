"""The portal's webmail pages: the account's boxes, folders, message list, search, reading.

The boxes are read over IMAP (``releves_mailer.webmail``) with the account's password kept
encrypted for the session's life; nothing here touches the message store directly, so the
same pages work when another IMAP server holds the boxes. The actions (mark, move, delete,
downloads) are in :mod:`releves_mailer.web.portal.webmail_actions`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from releves_mailer.errors import UserError
from releves_mailer.portfolio.boxes import box_address
from releves_mailer.services.portfolio import ReceptionMode
from releves_mailer.services.sessions import session_id_of
from releves_mailer.web.portal.common import PREFIX, Pagination, PortalRequest, int_param, page
from releves_mailer.web.portal.session import COOKIE_NAME
from releves_mailer.webmail import Webmail
from releves_mailer.webmail.imap import ImapBox, Search, WebmailError
from releves_mailer.webmail.reading import read_message

__all__ = ["WEBMAIL", "Box", "forget_session", "remember_password", "setup"]

WEBMAIL = web.AppKey("webmail", Webmail)
NAV = "webmail"
#: Confirmations after an action (Post/Redirect/Get), by the code in ``?msg=``.
NOTICES = {
    "lu": "Message(s) marqué(s) comme lu(s).",
    "non_lu": "Message(s) marqué(s) comme non lu(s).",
    "deplace": "Message(s) déplacé(s).",
    "supprime": "Message(s) placé(s) dans la corbeille.",
}
FIRST_DATE = dt.date(2000, 1, 1)
LAST_DATE = dt.date(2099, 12, 31)


@dataclass(frozen=True, slots=True)
class Box:
    """One box of the logged-in account, named in URLs by ``key``."""

    key: str
    label: str
    address: str


def boxes_of(request: PortalRequest) -> list[Box]:
    user, domain = request.user, request.portal.settings.domain
    dedicated = Box(
        "releves",
        "Boîte des relevés",
        box_address(user.login, domain, dedicated=True),
    )
    own = Box("principale", "Boîte principale", box_address(user.login, domain))
    return [dedicated, own] if user.reception_mode is ReceptionMode.DEDICATED else [own, dedicated]


def box_of(request: PortalRequest) -> Box:
    key = request.request.match_info.get("boite", "")
    for box in boxes_of(request):
        if box.key == key:
            return box
    raise web.HTTPNotFound()


def webmail_of(request: PortalRequest) -> Webmail:
    found = request.request.app.get(WEBMAIL)
    if found is None:
        raise UserError("Le webmail n'est pas configuré sur ce portail.")
    return found


def session_id(request: PortalRequest) -> str:
    return session_id_of(request.request.cookies.get(COOKIE_NAME, ""))


@asynccontextmanager
async def open_box(request: PortalRequest, box: Box) -> AsyncIterator[ImapBox]:
    async with webmail_of(request).pool.box(session_id(request), box.address) as imap:
        yield imap


def remember_password(app: web.Application, cookie_value: str, password: str) -> None:
    """At the portal login: keep the password (encrypted) for the session's webmail."""
    webmail = app.get(WEBMAIL)
    if webmail is not None:
        webmail.pool.vault.remember(session_id_of(cookie_value), password)


async def password_changed(app: web.Application, stored_session_id: str, password: str) -> None:
    """The account changed its password in this session: the webmail's IMAP connections,
    opened with the old one, close, and the new one opens the next."""
    webmail = app.get(WEBMAIL)
    if webmail is not None:
        await webmail.pool.end_session(stored_session_id)
        webmail.pool.vault.remember(stored_session_id, password)


async def forget_session(app: web.Application, stored_session_id: str) -> None:
    """At logout: forget the password and close the session's IMAP connections."""
    webmail = app.get(WEBMAIL)
    if webmail is not None:
        await webmail.pool.end_session(stored_session_id)


def problem(request: PortalRequest, title: str, message: str, status: int = 502) -> web.Response:
    return request.portal.render(
        request, "erreur", {"title": title, "nav": NAV, "errors": [message]}, status=status
    )


def folder_param(values: Mapping[str, Any]) -> str:
    folder = str(values.get("dossier", "") or "INBOX")
    if len(folder) > 200 or any(ord(c) < 32 for c in folder):
        raise UserError("Nom de dossier invalide.", field="dossier")
    return folder


def _date(values: Mapping[str, Any], name: str, label: str) -> dt.date | None:
    text = str(values.get(name, "")).strip()
    if not text:
        return None
    for pattern in ("%Y-%m-%d", "%d/%m/%Y"):
        try:
            found = dt.datetime.strptime(text, pattern).date()
            break
        except ValueError:
            continue
    else:
        raise UserError(f"La date « {label} » n'est pas une date (JJ/MM/AAAA) : {text}", field=name)
    if not FIRST_DATE <= found <= LAST_DATE:
        raise UserError(
            f"La date « {label} » doit être entre le {FIRST_DATE:%d/%m/%Y} et le "
            f"{LAST_DATE:%d/%m/%Y}.",
            field=name,
        )
    return found


def search_of(values: Mapping[str, Any], max_length: int) -> tuple[Search, dict[str, str]]:
    """The search criteria of a query or form, and their text for the page's fields."""
    texts: dict[str, str] = {}
    labels = {"objet": "Objet", "expediteur": "Expéditeur", "piece": "Pièce jointe"}
    for name, label in labels.items():
        value = str(values.get(name, "")).strip()
        if len(value) > max_length:
            raise UserError(f"Le champ « {label} » dépasse {max_length} caractères.", field=name)
        if any(ord(c) < 32 for c in value):
            raise UserError(f"Le champ « {label} » contient un caractère interdit.", field=name)
        texts[name] = value
    since = _date(values, "du", "Reçu du")
    before = _date(values, "au", "au")
    if since and before and before < since:
        raise UserError(
            f"La date de fin ({before:%d/%m/%Y}) est antérieure à la date de début "
            f"({since:%d/%m/%Y}).",
            field="au",
        )
    texts["du"] = since.isoformat() if since else ""
    texts["au"] = before.isoformat() if before else ""
    search = Search(texts["objet"], texts["expediteur"], since, before, texts["piece"])
    return search, texts


async def home_page(request: PortalRequest) -> web.StreamResponse:
    """Every box of the account with its folders and unread counts."""
    try:
        webmail_of(request)
        shown = []
        for box in boxes_of(request):
            async with open_box(request, box) as imap:
                shown.append((box, await imap.folders()))
    except (UserError, WebmailError) as error:
        return problem(request, "Messagerie indisponible", error.message)
    return request.portal.render(
        request, "webmail_boites", {"title": "Webmail", "nav": NAV, "boxes": shown}
    )


async def list_page(request: PortalRequest) -> web.StreamResponse:
    box = box_of(request)
    try:
        webmail = webmail_of(request)
        folder = folder_param(request.query)
        search, texts = search_of(request.query, webmail.limits.search_max_length)
    except UserError as error:
        return problem(request, "Recherche impossible", error.message, status=400)
    probe = Pagination(
        int_param(request.query, "page"),
        0,
        {"dossier": folder, **texts},
        size=webmail.limits.page_size,
    )
    try:
        async with open_box(request, box) as imap:
            folders = await imap.folders()
            if folder not in {f.name for f in folders}:
                raise web.HTTPNotFound()
            uids = await imap.search(folder, search)
            newest_first = uids[::-1][probe.offset : probe.offset + probe.size]
            rows = await imap.summaries(folder, newest_first)
    except WebmailError as error:
        return problem(request, "Messagerie indisponible", error.message)
    pagination = dataclasses.replace(probe, total=len(uids))
    current = next(f for f in folders if f.name == folder)
    return request.portal.render(
        request,
        "webmail_liste",
        {
            "title": f"{box.label} — {current.label}",
            "nav": NAV,
            "box": box,
            "boxes": boxes_of(request),
            "folder": current,
            "folders": folders,
            "rows": rows,
            "criteria": texts,
            "searching": not search.empty,
            "pagination": pagination,
            "message": NOTICES.get(request.query.get("msg", ""), ""),
            "limits": webmail.limits,
        },
    )


def uid_of(request: PortalRequest) -> int:
    raw = request.request.match_info.get("uid", "")
    if not raw.isdigit() or len(raw) > 10:
        raise web.HTTPNotFound()
    return int(raw)


async def message_page(request: PortalRequest) -> web.StreamResponse:
    box = box_of(request)
    uid = uid_of(request)
    try:
        webmail = webmail_of(request)
        folder = folder_param(request.query)
    except UserError as error:
        return problem(request, "Message introuvable", error.message, status=400)
    too_big = False
    try:
        async with open_box(request, box) as imap:
            if folder not in {name for name, _ in await imap.folder_names()}:
                raise web.HTTPNotFound()
            summary = await imap.summary(folder, uid)
            if summary is None:
                raise web.HTTPNotFound()
            raw = None
            if summary.size <= webmail.limits.message_max_bytes:
                raw = await imap.raw(folder, uid)
            else:
                too_big = True
            folders = await imap.folders()  # after the reading, which marked it read
    except WebmailError as error:
        return problem(request, "Messagerie indisponible", error.message)
    view = None
    if raw is not None:
        view = await asyncio.to_thread(
            read_message, raw, webmail.trusted, request.portal.clock.now()
        )
    current = next(f for f in folders if f.name == folder)
    return request.portal.render(
        request,
        "webmail_message",
        {
            "title": summary.subject or "(sans objet)",
            "nav": NAV,
            "box": box,
            "folder": current,
            "folders": folders,
            "summary": summary,
            "view": view,
            "too_big": too_big,
            "limits": webmail.limits,
        },
    )


def setup(app: web.Application) -> None:
    from releves_mailer.web.portal import webmail_actions

    app.router.add_get(f"{PREFIX}/webmail/", page(home_page))
    app.router.add_get(f"{PREFIX}/webmail", page(home_page))
    app.router.add_get(f"{PREFIX}/webmail/{{boite}}", page(list_page))
    app.router.add_get(f"{PREFIX}/webmail/{{boite}}/{{uid}}", page(message_page))
    webmail_actions.setup(app)

"""The webmail's actions: mark read or unread, move, delete (to the Trash), download one
attachment with its exact bytes, or the attachments of a selection as one ZIP."""

from __future__ import annotations

import asyncio
import io
import re
import zipfile
from collections.abc import Sequence
from urllib.parse import quote, urlencode

from aiohttp import web

from releves_mailer.errors import UserError
from releves_mailer.web.portal.common import PREFIX, PortalRequest, flag, page
from releves_mailer.web.portal.webmail import (
    Box,
    box_of,
    folder_param,
    open_box,
    problem,
    search_of,
    uid_of,
    webmail_of,
)
from releves_mailer.webmail.imap import TRASH, Attachment, ImapBox, WebmailError

__all__ = ["setup"]

ACTIONS = ("lu", "non_lu", "deplacer", "supprimer", "zip")
_UNSAFE = re.compile(r'[\\/:*?"<>|\x00-\x1f]')


def safe_name(name: str) -> str:
    """A file name that is one plain name in a ZIP or a download (no folder, no control)."""
    cleaned = _UNSAFE.sub("_", name).strip(" .") or "piece-jointe"
    return cleaned[:200]


def attachment_response(name: str, content: bytes, content_type: str) -> web.Response:
    response = web.Response(body=content, content_type=content_type or "application/octet-stream")
    fallback = name.encode("ascii", "replace").decode("ascii").replace("?", "_")
    response.headers["Content-Disposition"] = (
        f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name)}"
    )
    return response


async def download_attachment(request: PortalRequest) -> web.StreamResponse:
    box = box_of(request)
    uid = uid_of(request)
    section = request.request.match_info.get("section", "")
    if not re.fullmatch(r"[0-9]{1,3}(\.[0-9]{1,3}){0,8}", section):
        raise web.HTTPNotFound()
    try:
        webmail = webmail_of(request)
        folder = folder_param(request.query)
        async with open_box(request, box) as imap:
            summary = await imap.summary(folder, uid)
            attachments = summary.attachments if summary is not None else ()
            found = next((a for a in attachments if a.section == section), None)
            if found is None:
                raise web.HTTPNotFound()
            if found.size > webmail.limits.message_max_bytes:
                return problem(
                    request, "Pièce jointe trop volumineuse", "Taille maximale dépassée.", 413
                )
            content = await imap.part(folder, uid, found)
    except UserError as error:
        return problem(request, "Pièce jointe introuvable", error.message, status=400)
    except WebmailError as error:
        return problem(request, "Messagerie indisponible", error.message)
    if content is None:
        raise web.HTTPNotFound()
    return attachment_response(safe_name(found.name), content, found.content_type)


def _selected(request: PortalRequest, limit: int) -> list[int]:
    assert request.form is not None
    wanted = sorted(
        {
            int(value)
            for value in request.form.getall("uids", [])
            if isinstance(value, str) and value.isdigit() and len(value) <= 10
        }
    )
    if len(wanted) > limit:
        raise UserError(f"Sélectionnez au plus {limit} messages à la fois.")
    return wanted


def _unique(names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    result = []
    for name in names:
        count = seen.get(name.lower(), 0) + 1
        seen[name.lower()] = count
        if count == 1:
            result.append(name)
        else:
            stem, dot, extension = name.rpartition(".")
            result.append(f"{stem} ({count}).{extension}" if dot and stem else f"{name} ({count})")
    return result


def _zip(files: Sequence[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files:
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), content)
    return buffer.getvalue()


async def _zip_response(
    request: PortalRequest, imap: ImapBox, folder: str, uids: Sequence[int]
) -> web.StreamResponse:
    limits = webmail_of(request).limits
    summaries = await imap.summaries(folder, list(uids))
    wanted: list[tuple[int, Attachment]] = [
        (row.uid, item) for row in summaries for item in row.attachments
    ]
    if not wanted:
        return problem(
            request,
            "Aucune pièce jointe",
            "Les messages sélectionnés n'ont aucune pièce jointe.",
            status=404,
        )
    if sum(item.size for _, item in wanted) > limits.zip_max_bytes:
        return problem(
            request,
            "Archive trop volumineuse",
            f"Les pièces jointes sélectionnées dépassent {limits.zip_max_bytes // (1024 * 1024)} "
            "Mo : sélectionnez moins de messages.",
            status=413,
        )
    files = []
    total = 0
    for uid, item in wanted:
        content = await imap.part(folder, uid, item)
        if content is None:
            continue
        total += len(content)
        if total > limits.zip_max_bytes:
            return problem(
                request, "Archive trop volumineuse", "Sélectionnez moins de messages.", 413
            )
        files.append((safe_name(item.name), content))
    names = _unique([name for name, _ in files])
    body = await asyncio.to_thread(_zip, list(zip(names, [c for _, c in files], strict=True)))
    stamp = request.portal.clock.now().strftime("%Y%m%d_%H%M%S")
    return attachment_response(f"Pieces_jointes_{stamp}.zip", body, "application/zip")


async def _act(
    request: PortalRequest, box: Box, folder: str, action: str, uids: list[int]
) -> web.StreamResponse:
    assert request.form is not None
    async with open_box(request, box) as imap:
        if flag(request.form, "tout"):
            webmail = webmail_of(request)
            search, _ = search_of(request.form, webmail.limits.search_max_length)
            uids = (await imap.search(folder, search))[::-1][: webmail.limits.max_selection]
        if not uids:
            raise UserError("Sélectionnez au moins un message.")
        if action == "zip":
            return await _zip_response(request, imap, folder, uids)
        if action in ("lu", "non_lu"):
            await imap.set_seen(folder, uids, action == "lu")
            notice = action
        elif action == "deplacer":
            target = request.text("cible")
            if target not in {name for name, _ in await imap.folder_names()} or target == folder:
                raise UserError("Choisissez le dossier de destination.")
            await imap.move(folder, uids, target)
            notice = "deplace"
        else:
            if folder == TRASH:
                raise UserError("Ces messages sont déjà dans la corbeille.")
            await imap.ensure_folder(TRASH)
            await imap.move(folder, uids, TRASH)
            notice = "supprime"
    query = {"dossier": folder, "msg": notice}
    raise web.HTTPSeeOther(f"{PREFIX}/webmail/{box.key}?{urlencode(query)}")


async def actions(request: PortalRequest) -> web.StreamResponse:
    box = box_of(request)
    action = request.text("action")
    try:
        if action not in ACTIONS:
            raise UserError("Action inconnue.")
        webmail = webmail_of(request)
        folder = folder_param(request.form or {})
        uids = _selected(request, webmail.limits.max_selection)
        return await _act(request, box, folder, action, uids)
    except UserError as error:
        return problem(request, "Action impossible", error.message, status=400)
    except WebmailError as error:
        return problem(request, "Messagerie indisponible", error.message)


def setup(app: web.Application) -> None:
    app.router.add_post(f"{PREFIX}/webmail/{{boite}}/actions", page(actions))
    app.router.add_get(
        f"{PREFIX}/webmail/{{boite}}/{{uid}}/pieces/{{section}}", page(download_attachment)
    )

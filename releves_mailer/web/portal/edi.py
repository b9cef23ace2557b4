"""EDI screens of "Paramétrage": upload deposit files, "Remonter mes redevables EDI".

The analysis runs as a task of the daemon (:class:`AnalysisJobs`), not inside the request:
the button starts it and redirects to the manual's waiting page, which reloads itself (no
JavaScript) until the report is ready, then shows it with the way back to Paramétrage.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from releves_mailer.errors import UserError
from releves_mailer.services.edi import MAX_FILES, AnalysisJobs, Discovery, EdiService
from releves_mailer.web.portal.common import PREFIX, PortalRequest, page, path_id

__all__ = ["EDI", "EdiPortal", "edi_option", "set_edi_option", "setup"]

#: Seconds between two reloads of the waiting page.
REFRESH_SECONDS = 2


@dataclass
class EdiPortal:
    service: EdiService
    jobs: AnalysisJobs


EDI = web.AppKey("edi", EdiPortal)


def _edi(request: PortalRequest) -> EdiPortal:
    return request.request.app[EDI]


async def _page(
    request: PortalRequest,
    *,
    results: list[Any] | None = None,
    report: Discovery | None = None,
    errors: list[str] | None = None,
    status: int = 200,
) -> web.Response:
    overview = await _edi(request).service.overview(request.user.id)
    return request.portal.render(
        request,
        "edi",
        {
            "title": "Remonter mes redevables EDI",
            "nav": "redevables",
            "overview": overview,
            "results": results,
            "report": report,
            "errors": errors or [],
            "max_files": MAX_FILES,
        },
        status=status,
    )


async def edi_option(request: PortalRequest) -> bool | None:
    """The subscription option "création automatique" (None: EDI screens not installed)."""
    edi = request.request.app.get(EDI)
    if edi is None:
        return None
    return (await edi.service.overview(request.user.id)).auto_discovery


async def set_edi_option(request: PortalRequest, enabled: bool) -> None:
    edi = request.request.app.get(EDI)
    if edi is not None:
        await edi.service.set_auto_discovery(request.user.id, enabled)


async def show(request: PortalRequest) -> web.StreamResponse:
    return await _page(request)


async def upload(request: PortalRequest) -> web.StreamResponse:
    assert request.form is not None
    files = [f for f in request.form.getall("fichiers", []) if isinstance(f, web.FileField)]
    files = [f for f in files if f.filename]
    if not files:
        return await _page(request, errors=["Choisissez au moins un fichier de dépôt."], status=422)
    if len(files) > MAX_FILES:
        return await _page(request, errors=[f"{MAX_FILES} fichiers au plus par envoi."], status=422)
    contents = [(f.filename, await asyncio.to_thread(f.file.read)) for f in files]
    results = await _edi(request).service.file_deposits(request.user.id, contents, source="upload")
    status = 200 if all(r.ok for r in results) else 422
    return await _page(request, results=results, status=status)


async def start(request: PortalRequest) -> web.StreamResponse:
    number = _edi(request).jobs.start(request.user.id)
    raise web.HTTPSeeOther(f"{PREFIX}/edi/analyse/{number}")


async def follow(request: PortalRequest) -> web.StreamResponse:
    outcome = _edi(request).jobs.result(request.user.id, path_id(request))
    if outcome is None:
        response = request.portal.render(
            request,
            "edi_attente",
            {"title": "Remonter mes redevables EDI", "nav": "redevables"},
        )
        response.headers["Refresh"] = str(REFRESH_SECONDS)
        return response
    if isinstance(outcome, UserError):
        message = outcome.message[:1].upper() + outcome.message[1:] + "."
        return await _page(request, errors=[message], status=409)
    return await _page(request, report=outcome)


def setup(app: web.Application, *, service: EdiService, jobs: AnalysisJobs) -> None:
    """Add the EDI screens (after the portal's own setup: they use its sessions)."""
    app[EDI] = EdiPortal(service, jobs)
    app.router.add_get(f"{PREFIX}/edi", page(show))
    app.router.add_post(f"{PREFIX}/edi/depots", page(upload, upload=True))
    app.router.add_post(f"{PREFIX}/edi/analyse", page(start))
    app.router.add_get(f"{PREFIX}/edi/analyse/{{id}}", page(follow))

"""What every portal screen shares: services, the logged-in request, rendering, pagination."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from multidict import MultiDictProxy

from releves_mailer.clock import Clock
from releves_mailer.errors import UserError
from releves_mailer.partner.mails import PartnerSettings
from releves_mailer.portfolio.importer import DEFAULT_MAX_LINES
from releves_mailer.portfolio.logins import LoginGuard
from releves_mailer.services import Services
from releves_mailer.services.portfolio import AccountView
from releves_mailer.web.app import Pages
from releves_mailer.web.portal.csrf import CSRF_FIELD, check_token
from releves_mailer.web.portal.session import COOKIE_NAME

__all__ = [
    "MESSAGES",
    "PAGE_SIZE",
    "PORTAL",
    "Form",
    "Pagination",
    "Portal",
    "PortalRequest",
    "confirm_page",
    "flag",
    "int_param",
    "open_link_page",
    "page",
    "path_id",
    "send_link_page",
]

PAGE_SIZE = 50
#: Largest upload (the Annexe 1 import file).
MAX_UPLOAD = 5 * 1024 * 1024
PREFIX = "/portail"

Form = MultiDictProxy[str | bytes | bytearray | web.FileField]

#: Confirmations shown after an action (Post/Redirect/Get), by the code in ``?msg=``.
MESSAGES = {
    "souscrit": "Votre souscription au service est enregistrée.",
    "cree": "Le redevable a été créé.",
    "cree_lien": (
        "Le redevable a été créé. Le lien sécurisé de saisie des identifiants bancaires lui a "
        "été transmis par email (valide 72 heures)."
    ),
    "modifie": "Le redevable a été modifié.",
    "modifie_lien": (
        "Le redevable a été modifié. Le lien sécurisé de saisie des identifiants bancaires lui "
        "a été transmis par email (valide 72 heures)."
    ),
    "desactive": "Le redevable a été désactivé.",
    "reactive": "Le redevable a été réactivé.",
    "lien": "Le lien sécurisé a été transmis au redevable par email (valide 72 heures).",
    "compte_desactive": "La réception des relevés sur ce compte bancaire est désactivée.",
    "compte_reactive": "La réception des relevés sur ce compte bancaire est réactivée.",
    "mot_de_passe": (
        "Votre mot de passe a été changé : il vaut dès maintenant pour le portail et pour "
        "vos boîtes aux lettres ; vos autres sessions du portail ont été fermées."
    ),
    "secondaire_cree": "Le compte secondaire a été créé.",
    "secondaire_desactive": "Le compte secondaire a été désactivé ; ses sessions sont fermées.",
    "secondaire_reactive": "Le compte secondaire a été réactivé.",
    "secondaire_mot_de_passe": "Le mot de passe du compte secondaire a été changé.",
}


@dataclass
class Portal:
    """The services the portal's handlers use (one per application)."""

    services: Services
    settings: PartnerSettings
    pages: Pages
    #: The login guard shared with IMAP and SMTP AUTH.
    guard: LoginGuard
    #: Lines read at most from an import file (``portal.import_max_lines``).
    import_max_lines: int = DEFAULT_MAX_LINES

    @property
    def clock(self) -> Clock:
        return self.services.clock

    @property
    def secure_cookies(self) -> bool:
        return self.settings.public_url.startswith("https://")

    def render(
        self, request: PortalRequest | None, name: str, context: Mapping[str, Any], **kw: Any
    ) -> web.Response:
        full: dict[str, Any] = {
            "user": request.user if request is not None else None,
            "csrf": request.csrf if request is not None else "",
            "nav": "",
            "message": "",
            "errors": [],
            **context,
        }
        if request is not None and not full["message"]:
            full["message"] = MESSAGES.get(request.request.query.get("msg", ""), "")
        return self.pages.render(f"portal/{name}", full, **kw)


PORTAL = web.AppKey("portal", Portal)


@dataclass
class PortalRequest:
    """A request of a logged-in user, its form already checked against CSRF."""

    request: web.Request
    portal: Portal
    user: AccountView
    csrf: str
    form: Form | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: The server-side id of the request's session (kept when the password changes).
    session_id: str = ""

    @property
    def services(self) -> Services:
        return self.portal.services

    @property
    def query(self) -> Mapping[str, str]:
        return self.request.query

    def text(self, name: str) -> str:
        """A text field of the form (empty when absent or a file)."""
        value = self.form.get(name, "") if self.form is not None else ""
        return value if isinstance(value, str) else ""


Handler = Callable[[PortalRequest], Awaitable[web.StreamResponse]]


def page(
    handler: Handler, *, subscribed: bool = True, upload: bool = False
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Wrap a handler: login required, CSRF checked on POST, subscription required."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        portal = request.app[PORTAL]
        found = await portal.services.sessions.find(request.cookies.get(COOKIE_NAME, ""))
        if found is None:
            if request.method != "GET":
                raise web.HTTPForbidden(
                    text="Session expirée : reconnectez-vous.", content_type="text/plain"
                )
            target = urlencode({"suite": request.path_qs})
            raise web.HTTPFound(f"{PREFIX}/connexion?{target}")
        form = None
        if request.method == "POST":
            source = request.clone(client_max_size=MAX_UPLOAD) if upload else request
            form = await source.post()
            check_token(found.csrf_token, form.get(CSRF_FIELD))
        if subscribed and not found.account.subscribed:
            raise web.HTTPFound(f"{PREFIX}/souscription")
        return await handler(
            PortalRequest(
                request,
                portal,
                found.account,
                found.csrf_token,
                form,
                session_id=found.session_id,
            )
        )

    return wrapped


def path_id(request: PortalRequest, name: str = "id") -> int:
    raw = request.request.match_info.get(name, "")
    if not raw.isdigit() or len(raw) > 18:
        raise web.HTTPNotFound(text="Page introuvable.", content_type="text/plain")
    return int(raw)


def flag(values: Mapping[str, Any], name: str) -> bool:
    return str(values.get(name, "")) in ("1", "on", "true")


def int_param(values: Mapping[str, str], name: str, default: int = 1) -> int:
    raw = values.get(name, "")
    return int(raw) if raw.isdigit() and len(raw) < 9 and int(raw) > 0 else default


@dataclass(frozen=True)
class Pagination:
    """The page numbers of a list and the links to its neighbours."""

    page: int
    total: int
    base_query: Mapping[str, str]
    size: int = PAGE_SIZE

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.size))

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size

    def url(self, number: int) -> str:
        query = {key: value for key, value in self.base_query.items() if key != "page"}
        query["page"] = str(number)
        return "?" + urlencode(query)

    @property
    def previous(self) -> str | None:
        return self.url(self.page - 1) if self.page > 1 else None

    @property
    def next(self) -> str | None:
        return self.url(self.page + 1) if self.page < self.pages else None


async def send_link_page(
    request: PortalRequest, redevable_id: int, *, connection_id: int | None, nav: str, done: str
) -> web.StreamResponse:
    """Mail a secure link to the redevable, then go to ``done`` (or show why not)."""
    portal = request.portal
    try:
        await portal.services.links.send(redevable_id, connection_id=connection_id)
    except UserError as error:
        return portal.render(
            request,
            "erreur",
            {"title": "Lien non transmis", "nav": nav, "errors": [error.message]},
            status=409,
        )
    raise web.HTTPSeeOther(done)


async def open_link_page(
    request: PortalRequest, redevable_id: int, *, connection_id: int | None, nav: str
) -> web.StreamResponse:
    """Show the holder a link to enter the credentials himself (his own company)."""
    portal = request.portal
    try:
        issued = await portal.services.links.open_for_holder(
            redevable_id, connection_id=connection_id
        )
    except UserError as error:
        return portal.render(
            request,
            "erreur",
            {"title": "Saisie directe impossible", "nav": nav, "errors": [error.message]},
            status=409,
        )
    return portal.render(
        request,
        "lien_ouvert",
        {"title": "Lien sécurisé", "nav": nav, "url": issued.url, "link": issued},
    )


def confirm_page(
    request: PortalRequest,
    *,
    title: str,
    nav: str,
    question: str,
    action: str,
    confirm_label: str,
    back: str,
    hidden: Mapping[str, str] | None = None,
) -> web.Response:
    """Ask before an action that cannot be taken back lightly: the form posts to ``action``."""
    return request.portal.render(
        request,
        "confirmer",
        {
            "title": title,
            "nav": nav,
            "question": question,
            "action": action,
            "confirm_label": confirm_label,
            "back": back,
            "hidden": dict(hidden or {}),
        },
    )

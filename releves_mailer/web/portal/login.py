"""Login with the portal account's login and mailbox password, and logout."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select

from releves_mailer.db.models import PortalAccount
from releves_mailer.portfolio.passwords import verify_password
from releves_mailer.web.portal.common import PORTAL, PREFIX, Portal, PortalRequest, page
from releves_mailer.web.portal.csrf import CSRF_FIELD, LOGIN_COOKIE, check_token, login_token
from releves_mailer.web.portal.session import COOKIE_NAME, MAX_AGE

__all__ = ["setup"]

# Checked when the login is unknown, so that a wrong login costs as much time as a wrong
# password and does not reveal which logins exist (same parameters as real hashes).
DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$GTrNd/7bt0vnHR3JajWZMA$"
    "WyB5L8ikVIGFkA/0uSbvOFgpxZKtDX+gt9V0Ni2/vS0"
)


def _next_page(value: str) -> str:
    """Where to go after the login: a page of the portal only (no open redirect)."""
    if value.startswith(f"{PREFIX}/") and not value.startswith("//") and "\\" not in value:
        return value
    return f"{PREFIX}/"


def _login_page(
    portal: Portal, request: web.Request, *, login: str = "", error: str = "", status: int = 200
) -> web.Response:
    token, is_new = login_token(request)
    response = portal.render(
        None,
        "connexion",
        {
            "title": "Connexion",
            "login": login,
            "error": error,
            "login_csrf": token,
            "suite": _next_page(request.query.get("suite", "")),
        },
        status=status,
    )
    if is_new:
        response.set_cookie(
            LOGIN_COOKIE,
            token,
            path=f"{PREFIX}/connexion",
            httponly=True,
            samesite="Strict",
            secure=portal.secure_cookies,
        )
    return response


async def login_form(request: web.Request) -> web.Response:
    return _login_page(request.app[PORTAL], request)


async def login_submit(request: web.Request) -> web.Response:
    portal = request.app[PORTAL]
    form = await request.post()
    check_token(request.cookies.get(LOGIN_COOKIE, ""), form.get(CSRF_FIELD))
    raw_login = form.get("login", "")
    password = form.get("password", "")
    login = raw_login.strip().lower() if isinstance(raw_login, str) else ""
    password = password if isinstance(password, str) else ""
    address = f"ip:{request.remote or ''}"
    if portal.throttle.blocked(f"login:{login}", address):
        return _login_page(
            portal,
            request,
            login=login,
            error="Trop de tentatives de connexion échouées : réessayez dans 15 minutes.",
            status=429,
        )
    async with portal.database.session() as session:
        account = await session.scalar(select(PortalAccount).where(PortalAccount.login == login))
    valid = await verify_password(
        account.password_hash if account is not None else DUMMY_HASH, password
    )
    if account is None or not valid or not password:
        portal.throttle.failed(f"login:{login}", address)
        return _login_page(
            portal, request, login=login, error="Identifiant ou mot de passe incorrect.", status=401
        )
    portal.throttle.succeeded(f"login:{login}")
    value = await portal.sessions.create(account.id)
    suite = form.get("suite", "")
    response = web.HTTPFound(_next_page(suite if isinstance(suite, str) else ""))
    response.set_cookie(
        COOKIE_NAME,
        value,
        path=PREFIX,
        httponly=True,
        samesite="Lax",
        secure=portal.secure_cookies,
        max_age=int(MAX_AGE.total_seconds()),
    )
    response.del_cookie(LOGIN_COOKIE, path=f"{PREFIX}/connexion")
    raise response


async def logout(request: PortalRequest) -> web.StreamResponse:
    found = await request.portal.sessions.find(request.request.cookies.get(COOKIE_NAME, ""))
    if found is not None:
        await request.portal.sessions.end(found.session_id)
    response = web.HTTPFound(f"{PREFIX}/connexion")
    response.del_cookie(COOKIE_NAME, path=PREFIX)
    raise response


async def home(request: PortalRequest) -> web.StreamResponse:
    raise web.HTTPFound(f"{PREFIX}/redevables")


def setup(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/connexion", login_form)
    app.router.add_post(f"{PREFIX}/connexion", login_submit)
    app.router.add_post(f"{PREFIX}/deconnexion", page(logout, subscribed=False))
    app.router.add_get(f"{PREFIX}/", page(home))
    app.router.add_get(PREFIX, page(home))

"""Login with the portal account's login and mailbox password, and logout."""

from __future__ import annotations

from aiohttp import web

from releves_mailer.portfolio.logins import LoginThrottled
from releves_mailer.web.portal import webmail
from releves_mailer.web.portal.common import PORTAL, PREFIX, Portal, PortalRequest, page
from releves_mailer.web.portal.csrf import CSRF_FIELD, LOGIN_COOKIE, check_token, login_token
from releves_mailer.web.portal.session import COOKIE_NAME, MAX_AGE

__all__ = ["setup"]


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
    try:
        account = await portal.guard.attempt(
            request.remote or "",
            login,
            lambda: portal.services.portfolio.verify_login(login, password),
        )
    except LoginThrottled:
        return _login_page(
            portal,
            request,
            login=login,
            error="Trop de tentatives de connexion échouées : réessayez dans quelques minutes.",
            status=429,
        )
    if account is None:
        return _login_page(
            portal, request, login=login, error="Identifiant ou mot de passe incorrect.", status=401
        )
    value = await portal.services.sessions.create(account.id)
    webmail.remember_password(request.app, value, password)
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
    sessions = request.services.sessions
    found = await sessions.find(request.request.cookies.get(COOKIE_NAME, ""))
    if found is not None:
        await sessions.end(found.session_id)
        await webmail.forget_session(request.request.app, found.session_id)
    response = web.HTTPFound(f"{PREFIX}/connexion")
    response.del_cookie(COOKIE_NAME, path=PREFIX)
    raise response


def setup(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/connexion", login_form)
    app.router.add_post(f"{PREFIX}/connexion", login_submit)
    app.router.add_post(f"{PREFIX}/deconnexion", page(logout, subscribed=False))

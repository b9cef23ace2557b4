"""CSRF protection: a synchronizer token per session, checked on every form sent by POST.

Logged-in forms carry the session's token (stored server-side with the session). The login
form, which has no session yet, uses a double-submit token: a random value in a SameSite=Strict
cookie that the form must repeat.
"""

from __future__ import annotations

import hmac
import secrets

from aiohttp import web

__all__ = ["CSRF_FIELD", "LOGIN_COOKIE", "check_token", "login_token", "new_token"]

#: Name of the hidden field of every form.
CSRF_FIELD = "csrf"
#: Cookie of the login form's double-submit token.
LOGIN_COOKIE = "releves_login_csrf"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def check_token(expected: str, sent: object) -> None:
    """Refuse (403) a form whose token is missing or differs from ``expected``."""
    if (
        not expected
        or not isinstance(sent, str)
        or not hmac.compare_digest(expected.encode(), sent.encode())
    ):
        raise web.HTTPForbidden(
            text="Formulaire expiré ou invalide : rechargez la page et recommencez.",
            content_type="text/plain",
        )


def login_token(request: web.Request) -> tuple[str, bool]:
    """The login form's token: ``(value, is_new)`` (a new one must be set as cookie)."""
    current = request.cookies.get(LOGIN_COOKIE, "")
    if 20 <= len(current) <= 100:
        return current, False
    return new_token(), True

"""The portal pages: login, subscription, redevables, accounts, reception, webmail, sent mails.

Plain server-rendered HTML under ``/portail``, no JavaScript. Every page needs a login
(the portal account's login and mailbox password); every form carries a CSRF token; every
object is read through :mod:`releves_mailer.web.portal.scope` (the family rules).
"""

from __future__ import annotations

from aiohttp import web

from releves_mailer.config import AuthSection
from releves_mailer.partner.mails import PartnerSettings
from releves_mailer.portfolio.auth import PasswordGuard
from releves_mailer.portfolio.importer import DEFAULT_MAX_LINES
from releves_mailer.portfolio.logins import LoginGuard
from releves_mailer.services import Services
from releves_mailer.web.app import PAGES
from releves_mailer.web.portal import (
    accounts,
    home,
    login,
    myaccount,
    redevables,
    sent,
    statements,
    subscription,
    webmail,
)
from releves_mailer.web.portal.common import PORTAL, Portal
from releves_mailer.web.portal.errors import portal_errors
from releves_mailer.webmail import Webmail

__all__ = ["PORTAL", "Portal", "setup_portal"]


def setup_portal(
    app: web.Application,
    *,
    services: Services,
    settings: PartnerSettings,
    guard: LoginGuard | None = None,
    import_max_lines: int = DEFAULT_MAX_LINES,
    webmail_engine: Webmail | None = None,
) -> None:
    """Add the portal's routes to ``app`` (built by :func:`releves_mailer.web.app.create_app`).

    For ``create_app(setups=[...])``: ``functools.partial(setup_portal, services=...,
    settings=..., guard=...)``; ``services`` carry the link service. ``guard`` is the login
    guard shared with IMAP and SMTP AUTH; without it the portal gets one of its own, with
    default limits. ``webmail_engine`` reads the boxes for the webmail pages (without it,
    they say the webmail is not configured).
    """
    app[PORTAL] = Portal(
        services=services,
        settings=settings,
        pages=app[PAGES],
        guard=guard or PasswordGuard(services.clock, AuthSection(), settings.domain),
        import_max_lines=import_max_lines,
    )
    app.middlewares.append(portal_errors)
    login.setup(app)
    subscription.setup(app)
    redevables.setup(app)
    statements.setup(app)
    accounts.setup(app)
    home.setup(app)
    myaccount.setup(app)
    if webmail_engine is not None:
        app[webmail.WEBMAIL] = webmail_engine
        engine = webmail_engine

        async def close_webmail(app: web.Application) -> None:
            await engine.pool.close()

        app.on_cleanup.append(close_webmail)
    webmail.setup(app)
    sent.setup(app)

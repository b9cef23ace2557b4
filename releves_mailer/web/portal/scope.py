"""Access control of the portal, in one place: which objects a logged-in user may reach.

A secondary account sees only its own data. A primary account may see its secondaries'
data too; its lists show them only when asked ("Afficher ... secondaires"). Every handler
reads objects through the helpers below, which answer 404 (not 403) for an object outside
the user's scope, so that guessing ids reveals nothing.
"""

from __future__ import annotations

from aiohttp import web

from releves_mailer.services.banks import BankAccountEntry
from releves_mailer.services.portfolio import RedevableView
from releves_mailer.services.statements import StatementDetail
from releves_mailer.web.portal.common import PortalRequest

__all__ = ["bank_account_or_404", "redevable_or_404", "statement_or_404"]


def _not_found() -> web.HTTPNotFound:
    return web.HTTPNotFound(text="Page introuvable.", content_type="text/plain")


async def redevable_or_404(request: PortalRequest, redevable_id: int) -> RedevableView:
    found = await request.services.portfolio.redevable_in_scope(request.user, redevable_id)
    if found is None:
        raise _not_found()
    return found


async def bank_account_or_404(request: PortalRequest, account_id: int) -> BankAccountEntry:
    found = await request.services.banks.in_scope(request.user, account_id)
    if found is None:
        raise _not_found()
    return found


async def statement_or_404(request: PortalRequest, statement_id: int) -> StatementDetail:
    found = await request.services.statements.in_scope(request.user, statement_id)
    if found is None:
        raise _not_found()
    return found

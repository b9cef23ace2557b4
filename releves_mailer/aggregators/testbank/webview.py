"""The test bank's own webview: bank choice, terms, credentials, accounts, contact details.

It imitates the pages of the aggregator's webview (seed 4.1.2 to 4.1.4 and 4.2.2) so that the
whole round trip works in the demo without Powens. Each step is a form posted to
``/testbank/webview/etape``; the session (kept by :class:`TestBankPartner`) says which step is
expected, so steps cannot be skipped. At the end the client is sent back (303) to the
``redirect_uri`` with ``connection_id`` and ``state``, or with ``error`` when he cancels.
"""

from __future__ import annotations

from aiohttp import web

from releves_mailer.aggregators.testbank.partner import Step, TestBankPartner, WebviewSession
from releves_mailer.partner.modes import WebviewFlow
from releves_mailer.web.app import PAGES, Pages

__all__ = ["TestBankWebview", "setup"]

_EXPIRED = (
    "Cette session de connexion a expiré ou a déjà été utilisée. "
    "Revenez au lien reçu par email pour recommencer."
)


class TestBankWebview:
    __test__ = False

    def __init__(self, partner: TestBankPartner, pages: Pages) -> None:
        self.partner = partner
        self.pages = pages

    async def _page(
        self, session: WebviewSession, *, error: str = "", status: int = 200
    ) -> web.Response:
        accounts = []
        if session.step is Step.ACCOUNTS:
            accounts = [
                {
                    "id": account.provider_id,
                    "label": account.label,
                    "balance": account.balance,
                    "currency": account.currency,
                    "checked": account.type == "checking",
                }
                for account in await self.partner.accounts(session)
            ]
        return self.pages.render(
            "testbank_webview",
            {
                "title": self.partner.display_name,
                "bank_name": self.partner.display_name,
                "session": session,
                "step": session.step.value,
                "reconnect": session.flow is WebviewFlow.RECONNECT,
                "accounts": accounts,
                "error": error,
            },
            status=status,
        )

    def _gone(self) -> web.Response:
        return self.pages.render(
            "lien_refuse",
            {"title": "Session expirée", "message": _EXPIRED, "retry": False},
            status=410,
        )

    async def start(self, request: web.Request) -> web.Response:
        session = self.partner.session(request.query.get("code", ""))
        if (
            session is None
            or request.match_info["flow"] != session.flow.value
            or request.query.get("state") != session.state
            or request.query.get("redirect_uri") != session.redirect_uri
        ):
            return self._gone()
        return await self._page(session)

    async def step(self, request: web.Request) -> web.Response:
        form = await request.post()
        session = self.partner.session(str(form.get("code", "")))
        if session is None:
            return self._gone()
        if str(form.get("step", "")) != session.step.value:
            return await self._page(session, error="Étape inattendue : reprenez ici.", status=409)
        if form.get("action") == "annuler":
            error = "tos_declined" if session.step is Step.TERMS else "access_denied"
            raise web.HTTPSeeOther(self.partner.redirect_error(session, error))
        if session.step is Step.BANK:
            if form.get("bank") != self.partner.name:
                return await self._page(session, error="Sélectionnez votre banque.")
            session.step = Step.TERMS
        elif session.step is Step.TERMS:
            session.step = Step.CREDENTIALS
        elif session.step is Step.CREDENTIALS:
            if not str(form.get("login", "")).strip() or not str(form.get("password", "")):
                return await self._page(
                    session, error="Saisissez votre identifiant et votre code personnel."
                )
            if session.flow is WebviewFlow.RECONNECT:
                raise web.HTTPSeeOther(self.partner.redirect_success(session))
            session.step = Step.ACCOUNTS
        elif session.step is Step.ACCOUNTS:
            known = {account.provider_id for account in await self.partner.accounts(session)}
            chosen = frozenset(str(value) for value in form.getall("account", [])) & known
            if not chosen:
                return await self._page(session, error="Choisissez au moins un compte.")
            session.selected = chosen
            session.step = Step.CONTACT
        elif session.step is Step.CONTACT:
            name = str(form.get("name", "")).strip()
            company = str(form.get("company", "")).strip()
            if not name or not company:
                return await self._page(session, error="Le nom et la société sont obligatoires.")
            session.contact_name, session.contact_company = name[:100], company[:100]
            raise web.HTTPSeeOther(self.partner.redirect_success(session))
        return await self._page(session)


def setup(app: web.Application, partner: TestBankPartner) -> None:
    """Mount the webview's pages, rendered with the application's :data:`PAGES`."""
    handlers = TestBankWebview(partner, app[PAGES])
    app.router.add_get("/testbank/webview/{lang}/{flow}", handlers.start)
    app.router.add_post("/testbank/webview/etape", handlers.step)

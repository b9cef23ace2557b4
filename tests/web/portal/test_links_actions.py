"""The portal's secure-link buttons: mail a link to the redevable, or refuse to open it."""

from __future__ import annotations

from sqlalchemy import select

from releves_mailer.db.models.partner import SecureLink
from tests.web.portal.conftest import PortalHarness, csrf_of


async def test_send_and_open_links_from_the_pages(portal: PortalHarness) -> None:
    redevable = portal.primary.redevable_ids[0]
    account = portal.primary.bank_account_ids[0]
    async with portal.logged_in(portal.primary.login) as client:
        page = await client.get(f"/portail/redevables/{redevable}")
        assert page.status_code == 200
        token = csrf_of(page.text)
        sent = await client.post(f"/portail/redevables/{redevable}/lien", data={"csrf": token})
        assert sent.status_code == 303
        assert sent.headers["location"].endswith(f"/redevables/{redevable}?onglet=jetons&msg=lien")
        update = await client.post(f"/portail/comptes/{account}/lien", data={"csrf": token})
        assert update.status_code == 303, update.text
        # The redevable is not the account's own company: no direct entry for the holder.
        refused = await client.post(f"/portail/redevables/{redevable}/ouvrir", data={"csrf": token})
        assert refused.status_code == 409
        assert "Saisie directe impossible" in refused.text
    async with portal.database.session() as session:
        links = (await session.scalars(select(SecureLink).order_by(SecureLink.id))).all()
    assert [(link.redevable_id, link.connection_id is not None) for link in links] == [
        (redevable, False),
        (redevable, True),
    ]

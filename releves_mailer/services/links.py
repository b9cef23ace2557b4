"""Secure links for the portal and the command line: mail one, open one, list the last ones."""

from __future__ import annotations

import dataclasses
import datetime as dt

from releves_mailer.clock import Clock
from releves_mailer.db import Database
from releves_mailer.partner.links import IssuedLink, LinkRow, LinkService

__all__ = ["IssuedView", "LinkRow", "Links", "issued_view"]


@dataclasses.dataclass(frozen=True, slots=True)
class IssuedView:
    """A link just created: where it goes, until when, and the only copy of its URL."""

    id: int
    recipient: str
    expires_at: dt.datetime
    url: str


def issued_view(issued: IssuedLink) -> IssuedView:
    link = issued.link
    return IssuedView(link.id, link.recipient, link.expires_at, issued.url)


class Links:
    """The secure links of a redevable, as the adapters use them."""

    def __init__(self, database: Database, clock: Clock, service: LinkService | None) -> None:
        self.database = database
        self.clock = clock
        self._service = service

    @property
    def service(self) -> LinkService:
        if self._service is None:
            raise RuntimeError("these services were built without a link service")
        return self._service

    async def send(self, redevable_id: int, *, connection_id: int | None = None) -> IssuedView:
        """Mail a link (an update link when a connection is named, else an add link)."""
        return issued_view(await self.service.send(redevable_id, connection_id=connection_id))

    async def open_for_holder(
        self, redevable_id: int, *, connection_id: int | None = None
    ) -> IssuedView:
        """A link the account holder opens himself (the redevable is his own company)."""
        return issued_view(
            await self.service.open_for_holder(redevable_id, connection_id=connection_id)
        )

    async def recent(self, redevable_id: int) -> list[LinkRow]:
        """The last links of a redevable, newest first."""
        async with self.database.session() as session:
            return list(await LinkService.recent(session, redevable_id, self.clock.now()))

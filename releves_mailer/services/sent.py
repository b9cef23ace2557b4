"""The mails the daemon sent for a portal account to outside addresses ("Messages envoyés").

Secure links mailed to the account's redevables, broken-connection alerts and notifications
to the account holder: read from the outbox with their state (en attente, envoyé, en
échec), attempts and last error, and their text with every secret token masked.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import String, cast, func, literal, or_, select
from sqlalchemy.sql.elements import ColumnElement

from releves_mailer.db import Database
from releves_mailer.db.models import OutboxMessage, OutboxState, Redevable, SecureLink
from releves_mailer.notify.masking import mask_text, readable_text
from releves_mailer.portfolio.boxes import box_address
from releves_mailer.services.portfolio import AccountView

__all__ = ["SentMail", "SentMailDetail", "SentMails"]

KIND_LABELS = {
    "secure_link": "Lien sécurisé",
    "alert": "Alerte de connexion",
    "accounts_added": "Comptes bancaires ajoutés",
}
STATE_LABELS = {
    OutboxState.PENDING: "En attente",
    OutboxState.SENT: "Envoyé",
    OutboxState.FAILED: "En échec",
}


@dataclasses.dataclass(frozen=True, slots=True)
class SentMail:
    id: int
    created_at: dt.datetime
    sent_at: dt.datetime | None
    kind: str
    kind_label: str
    recipient: str
    subject: str
    state: str
    state_label: str
    attempts: int
    last_error: str
    next_attempt_at: dt.datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class SentMailDetail:
    mail: SentMail
    #: The mail's text with its tokens masked; empty when it was not kept.
    text: str


def _view(row: OutboxMessage) -> SentMail:
    return SentMail(
        id=row.id,
        created_at=row.created_at,
        sent_at=row.sent_at,
        kind=row.kind,
        kind_label=KIND_LABELS.get(row.kind, row.kind),
        recipient=row.recipient,
        subject=row.subject,
        state=str(row.state),
        state_label=STATE_LABELS.get(row.state, str(row.state)),
        attempts=row.attempts,
        # A relay's error may quote the mail (and so a token): it is masked too.
        last_error=mask_text(row.last_error or ""),
        next_attempt_at=row.next_attempt_at if row.state is OutboxState.PENDING else None,
    )


class SentMails:
    """Reads the outbox rows of one account."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def _of(self, user: AccountView, domain: str) -> ColumnElement[bool]:
        links = (
            select(literal("secure_link:", String).concat(cast(SecureLink.id, String)))
            .join(Redevable, Redevable.id == SecureLink.redevable_id)
            .where(Redevable.account_id == user.id)
        )
        return or_(
            OutboxMessage.fallback_address == box_address(user.login, domain),
            OutboxMessage.dedup_key.in_(links),
        )

    async def search(
        self, user: AccountView, domain: str, *, limit: int, offset: int
    ) -> tuple[list[SentMail], int]:
        """The account's mails, newest first, and their total."""
        where = self._of(user, domain)
        async with self.database.session() as session:
            total = await session.scalar(select(func.count()).where(where)) or 0
            rows = await session.scalars(
                select(OutboxMessage)
                .where(where)
                .order_by(OutboxMessage.created_at.desc(), OutboxMessage.id.desc())
                .limit(limit)
                .offset(offset)
            )
            return [_view(row) for row in rows], total

    async def detail(self, user: AccountView, domain: str, mail_id: int) -> SentMailDetail | None:
        """One of the account's mails with its masked text; ``None`` when not the account's."""
        async with self.database.session() as session:
            row = await session.scalar(
                select(OutboxMessage).where(OutboxMessage.id == mail_id, self._of(user, domain))
            )
            if row is None:
                return None
            return SentMailDetail(_view(row), readable_text(row.raw))

"""The EDI mail path: a mail to ``edi.<login>@<domain>`` files its attachments as deposits.

The SMTP server (``mailbox/smtp.py``) accepts such a recipient only from an authenticated
sender of the same account family, then hands the message here. Every attachment is read
and filed like an upload; when one is not a readable interchange (or the mail has none),
a French reply saying why lands in the account's default box ``<login>@<domain>``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid

from sqlalchemy import select

from releves_mailer.clock import Clock
from releves_mailer.db.models import PortalAccount
from releves_mailer.mailbox.sink import MailDelivery, MessageSink
from releves_mailer.portfolio.boxes import box_address
from releves_mailer.services.edi import MAX_FILES, EdiService, FiledFile

__all__ = ["EDI_PREFIX", "EdiMailbox", "EdiRecipient", "attachments_of"]

#: Local-part prefix of the EDI deposit addresses.
EDI_PREFIX = "edi."


@dataclasses.dataclass(frozen=True, slots=True)
class EdiRecipient:
    account_id: int
    login: str
    #: The primary account of the account's family.
    family_id: int


def attachments_of(raw: bytes) -> list[tuple[str, bytes]]:
    """(file name, bytes) of every attachment of a mail (parts with a file name)."""
    message = BytesParser(policy=email.policy.default).parsebytes(raw)
    found = []
    for part in message.walk():
        if part.is_multipart():
            continue
        name = part.get_filename()
        if not name:
            continue
        payload = part.get_payload(decode=True)
        found.append((name, payload if isinstance(payload, bytes) else b""))
    return found


class EdiMailbox:
    """Files the deposits mailed to ``edi.<login>@<domain>`` and answers refusals."""

    def __init__(self, service: EdiService, sink: MessageSink, domain: str, clock: Clock) -> None:
        self.service = service
        self.sink = sink
        self.domain = domain.lower()
        self.clock = clock

    def login_of(self, address: str) -> str | None:
        """``login`` when ``address`` is ``edi.<login>@<domain>``, else None."""
        local, _, domain = address.strip().lower().rpartition("@")
        if domain != self.domain or not local.startswith(EDI_PREFIX):
            return None
        return local[len(EDI_PREFIX) :] or None

    async def recipient(self, address: str) -> EdiRecipient | None:
        login = self.login_of(address)
        if login is None:
            return None
        async with self.service.database.session() as session:
            account = await session.scalar(
                select(PortalAccount).where(PortalAccount.login == login)
            )
            if account is None:
                return None
            return EdiRecipient(account.id, account.login, account.family_id)

    async def family_of(self, address: str) -> int | None:
        found = await self.recipient(address)
        return None if found is None else found.family_id

    async def file(self, address: str, raw: bytes) -> list[FiledFile]:
        """File the attachments of ``raw`` for the account of ``address``; reply on refusal."""
        target = await self.recipient(address)
        if target is None:
            return []
        attachments = await asyncio.to_thread(attachments_of, raw)
        if not attachments:
            await self._reply(target, raw, ["le message ne contient aucune pièce jointe."])
            return []
        if len(attachments) > MAX_FILES:
            await self._reply(
                target, raw, [f"{len(attachments)} pièces jointes : {MAX_FILES} au plus."]
            )
            return []
        results = await self.service.file_deposits(target.account_id, attachments, source="mail")
        refused = [r.error for r in results if not r.ok]
        if refused:
            await self._reply(target, raw, refused, filed=len(results) - len(refused))
        return results

    async def _reply(
        self, target: EdiRecipient, original: bytes, reasons: list[str], *, filed: int = 0
    ) -> None:
        headers = BytesParser(policy=email.policy.default).parsebytes(original, headersonly=True)
        subject = str(headers.get("Subject", "") or "")
        reply = EmailMessage()
        reply["From"] = f"portail@{self.domain}"
        reply["Reply-To"] = f"noreply@{self.domain}"
        reply["To"] = box_address(target.login, self.domain)
        reply["Subject"] = "Dépôt EDI refusé" + (f" : {subject}"[:200] if subject else "")
        reply["Date"] = format_datetime(self.clock.now())
        message_id = make_msgid("edi", domain=self.domain)
        reply["Message-ID"] = message_id
        original_id = str(headers.get("Message-ID", "") or "")
        if original_id:
            reply["In-Reply-To"] = original_id
        lines = [
            "Bonjour,",
            "",
            f"Votre envoi à {EDI_PREFIX}{target.login}@{self.domain} n'a pas pu être "
            "enregistré en entier :",
            "",
            *(f"- {reason}" for reason in reasons),
            "",
        ]
        if filed:
            lines += [f"{filed} autre(s) fichier(s) de ce message ont été enregistrés.", ""]
        lines += [
            "Seuls les échanges EDIFACT (messages INFENT) transmis à la DGFiP sont acceptés, "
            "un fichier par pièce jointe. Un fichier refusé n'est pas conservé : corrigez-le "
            "puis renvoyez-le.",
            "",
            "Ce message est envoyé automatiquement, merci de ne pas y répondre.",
        ]
        reply.set_content("\n".join(lines))
        raw = reply.as_bytes(policy=email.policy.SMTP)
        await self.sink.deliver_many(
            [MailDelivery(box_address(target.login, self.domain), raw, message_id)]
        )

"""Secure links ("jetons"): creation, mailing, lookup by token, states and history.

A link is ``secrets.token_urlsafe(32)`` (256 random bits); only its SHA-256 is stored, so a
database leak gives no usable link. It is valid 72 hours from its creation (by the injected
clock: valid at 71:59:59, expired at 72:00:00) and can be used once. Its state (valide /
utilisé / expiré) derives from its dates. A token that does not match any stored hash, a
tampered one included, is simply unknown.

The mail that carries a link is queued in the outbox in the same transaction as the link row,
so a link is never stored without its mail, nor mailed without being stored. That mail, the
only other copy of the clear token, leaves the database once sent: the outbox then drops
message bodies and keeps only their sending history.

Annexe 1 field 9 = 1 (remote entry) mails a ``saisie`` link when a redevable is created that
way, or switched to it, by any entry point: :meth:`LinkService.send_remote_entry_links`.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from releves_mailer.collect.errors import describe_error
from releves_mailer.db import Database
from releves_mailer.db.models import (
    BankAccount,
    BankConnection,
    BankEvent,
    BankEventKind,
    ConnectionState,
    PortalAccount,
    Redevable,
    SecureLink,
)
from releves_mailer.errors import UserError
from releves_mailer.notify.outbox import Outbox
from releves_mailer.partner.mails import MailComposer
from releves_mailer.portfolio.redevables import Written

__all__ = [
    "LINK_LIFETIME",
    "REMOTE_ENTRY_REASON",
    "IssuedLink",
    "LinkKind",
    "LinkOrigin",
    "LinkService",
    "LinkState",
    "hash_token",
    "kind_label",
    "link_state",
]

LINK_LIFETIME = dt.timedelta(hours=72)
#: How many links the history shows per redevable (seed: "les 10 derniers jetons").
HISTORY_SIZE = 10
#: ``secure_link.reason`` of the link mailed because Annexe 1 field 9 was set to 1.
REMOTE_ENTRY_REASON = "remote_entry"


class LinkKind(enum.StrEnum):
    ENTRY = "entry"  # add bank accounts: "saisie" (seed 4.1.2)
    UPDATE = "update"  # update the credentials of a connection: "mise à jour" (seed 4.2.1)


class LinkOrigin(enum.StrEnum):
    AUTO = "auto"  # broken connection, consent renewal, or field 9 = 1 on creation/import
    MANUAL = "manual"  # the account holder sent it
    LOGIN = "login"  # the account holder opens the webview himself (nothing mailed)


class LinkState(enum.StrEnum):
    VALID = "valid"
    USED = "used"
    EXPIRED = "expired"


STATE_LABELS = {
    LinkState.VALID: "Jeton valide",
    LinkState.USED: "Jeton utilisé",
    LinkState.EXPIRED: "Jeton expiré",
}


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def link_state(link: SecureLink, now: dt.datetime) -> LinkState:
    if link.used_at is not None:
        return LinkState.USED
    if now >= link.expires_at:
        return LinkState.EXPIRED
    return LinkState.VALID


def kind_label(link: SecureLink, bank_name: str | None = None) -> str:
    """The seed's "Type de jeton" column."""
    if link.kind == LinkKind.ENTRY:
        return "Ajout de nouveaux comptes bancaires"
    label = "Mise à jour des identifiants de la connexion"
    return f"{label} {bank_name}" if bank_name else label


@dataclass(frozen=True, slots=True)
class IssuedLink:
    """A link just created: the row and the only copy of its clear token and URL."""

    link: SecureLink
    token: str
    url: str


@dataclass(frozen=True, slots=True)
class LinkRow:
    """One line of the tokens tab."""

    id: int
    kind: LinkKind
    kind_label: str
    connection_id: int | None
    created_at: dt.datetime
    expires_at: dt.datetime
    used_at: dt.datetime | None
    recipient: str
    state: LinkState
    created_by: str
    reason: str

    @property
    def state_label(self) -> str:
        return STATE_LABELS[self.state]


def _account_label(account: BankAccount, bank_name: str) -> str:
    return f"{account.label.upper()} ({bank_name.upper()})"


class LinkService:
    """Creates, mails, finds and lists secure links."""

    def __init__(self, database: Database, outbox: Outbox, composer: MailComposer) -> None:
        self.database = database
        self.outbox = outbox
        self.composer = composer

    def url_for(self, link: SecureLink, token: str) -> str:
        base = self.composer.settings.public_url
        if link.kind == LinkKind.ENTRY:
            return f"{base}/releves/saisie?{urlencode({'token': token})}"
        query = urlencode({"idConnexion": str(link.connection_id), "token": token})
        return f"{base}/releves/maj?{query}"

    async def issue(
        self,
        session: AsyncSession,
        redevable: Redevable,
        *,
        kind: LinkKind,
        origin: LinkOrigin,
        connection: BankConnection | None = None,
        reason: str = "",
        template: str = "link",
        extra: dict[str, object] | None = None,
    ) -> IssuedLink:
        """Create a link and, unless ``origin`` is ``login``, queue the mail that carries it.

        Refused (:class:`UserError`, French) for an inactive redevable, a redevable without
        e-mail (mailed links), a closed connection or one of another redevable.
        """
        now = self.composer.clock.now()
        if not redevable.active:
            raise UserError(f"le redevable {redevable.siret} est désactivé")
        holder = await session.get(PortalAccount, redevable.account_id)
        assert holder is not None
        if kind is LinkKind.UPDATE:
            if connection is None:
                raise UserError("un lien de mise à jour concerne une connexion bancaire")
            if connection.redevable_id != redevable.id:
                raise UserError(
                    f"la connexion {connection.id} n'appartient pas au redevable {redevable.siret}"
                )
            if connection.state is ConnectionState.CLOSED or not connection.active:
                raise UserError(f"la connexion {connection.id} est fermée")
        if origin is LinkOrigin.LOGIN:
            recipient = holder.email
        else:
            recipient = redevable.email
            if not recipient:
                raise UserError(
                    f"le redevable {redevable.siret} n'a pas d'adresse email : "
                    "impossible de lui transmettre un lien sécurisé",
                    field="email",
                )
        token = secrets.token_urlsafe(32)
        link = SecureLink(
            redevable_id=redevable.id,
            connection_id=connection.id if connection is not None else None,
            kind=kind.value,
            token_hash=hash_token(token),
            created_by=origin.value,
            reason=reason,
            recipient=recipient,
            created_at=now,
            expires_at=now + LINK_LIFETIME,
            sent_at=None if origin is LinkOrigin.LOGIN else now,
        )
        session.add(link)
        await session.flush()
        url = self.url_for(link, token)
        if origin is not LinkOrigin.LOGIN:
            context = await self._mail_context(session, redevable, holder, connection, reason)
            context.update(extra or {})
            context["url"] = url
            context["expires_at"] = link.expires_at
            message = self.composer.compose(
                template if kind is LinkKind.UPDATE else "link", recipient, context
            )
            await self.outbox.enqueue(
                session, message, kind="secure_link", dedup_key=f"secure_link:{link.id}"
            )
        if connection is not None:
            what = "renouvellement du consentement" if reason == "consent" else "mise à jour"
            session.add(
                BankEvent(
                    at=now,
                    kind=BankEventKind.LINK_SENT,
                    connection_id=connection.id,
                    new_value=recipient[:200],
                    message=(
                        f"Lien sécurisé de {what} des identifiants transmis à {recipient}"
                        if origin is not LinkOrigin.LOGIN
                        else "Lien sécurisé de mise à jour ouvert par le titulaire du compte"
                    ),
                )
            )
        return IssuedLink(link, token, url)

    async def _mail_context(
        self,
        session: AsyncSession,
        redevable: Redevable,
        holder: PortalAccount,
        connection: BankConnection | None,
        reason: str,
    ) -> dict[str, object]:
        accounts: list[str] = []
        if connection is not None:
            rows = (
                await session.scalars(
                    select(BankAccount)
                    .where(BankAccount.connection_id == connection.id)
                    .where(BankAccount.active.is_(True))
                    .order_by(BankAccount.id)
                )
            ).all()
            accounts = [_account_label(row, connection.bank_name) for row in rows]
        # Only an update link explains an error; "consent" and field 9 are no error.
        error = (
            describe_error(reason).message
            if connection is not None and reason and reason != "consent"
            else ""
        )
        return {
            "kind": "maj" if connection is not None else "saisie",
            "company": redevable.full_company_name,
            "siret": redevable.siret,
            "holder_company": holder.company_name,
            "holder_email": holder.email,
            "holder_phone": holder.phone,
            "bank_name": connection.bank_name if connection is not None else "",
            "accounts": accounts,
            "error_message": error,
        }

    async def send_remote_entry_links(
        self, session: AsyncSession, written: Iterable[Written]
    ) -> list[IssuedLink]:
        """Annexe 1 field 9 = 1: mail the ``saisie`` link to field 5's address.

        The seed: "saisie déportée des identifiants bancaires par le redevable lui-même
        (émission d'une notification vers l'adresse mail du redevable contenant une URL
        temporaire sécurisée)". The one rule of every entry point (portal form and import,
        ``redevables add``, ``import`` and ``edit``): a link for each redevable whose field 9
        has just become 1 (created with it, or switched from 0 by an update), unless "ne pas
        générer automatiquement le jeton" is set or the redevable is inactive. Writes that
        leave field 9 as it was (a re-import, an e-mail change) send nothing: the holder
        sends a new link himself. Queued in the caller's transaction, so the redevable and
        its mail are stored together or not at all.
        """
        issued: list[IssuedLink] = []
        for item in written:
            redevable = item.redevable
            if (
                item.was_remote
                or not redevable.remote_entry
                or redevable.no_auto_link
                or not redevable.active
            ):
                continue
            issued.append(
                await self.issue(
                    session,
                    redevable,
                    kind=LinkKind.ENTRY,
                    origin=LinkOrigin.AUTO,
                    reason=REMOTE_ENTRY_REASON,
                )
            )
        return issued

    async def send(
        self,
        redevable_id: int,
        *,
        connection_id: int | None = None,
        origin: LinkOrigin = LinkOrigin.MANUAL,
    ) -> IssuedLink:
        """Create and mail a link (``maj`` when a connection is named, else ``saisie``)."""
        async with self.database.session() as session:
            redevable = await session.get(Redevable, redevable_id)
            if redevable is None:
                raise UserError(f"redevable {redevable_id} introuvable")
            connection = None
            if connection_id is not None:
                connection = await session.get(BankConnection, connection_id)
                if connection is None:
                    raise UserError(f"connexion bancaire {connection_id} introuvable")
            kind = LinkKind.UPDATE if connection is not None else LinkKind.ENTRY
            reason = (connection.error_code or "") if connection is not None else ""
            return await self.issue(
                session, redevable, kind=kind, origin=origin, connection=connection, reason=reason
            )

    async def open_for_holder(
        self, redevable_id: int, *, connection_id: int | None = None
    ) -> IssuedLink:
        """A link for the account holder himself, allowed when the redevable is his company.

        Seed 4.1.1: the holder enters bank credentials directly only when the redevable's
        SIREN is the SIREN of his own portal account. Nothing is mailed.
        """
        async with self.database.session() as session:
            redevable = await session.get(Redevable, redevable_id)
            if redevable is None:
                raise UserError(f"redevable {redevable_id} introuvable")
            holder = await session.get(PortalAccount, redevable.account_id)
            assert holder is not None
            if holder.siret[:9] != redevable.siren:
                raise UserError(
                    f"le SIREN du redevable ({redevable.siren}) n'est pas celui du compte "
                    f"{holder.login} ({holder.siret[:9]}) : le lien doit être envoyé "
                    "au redevable"
                )
            connection = None
            if connection_id is not None:
                connection = await session.get(BankConnection, connection_id)
                if connection is None:
                    raise UserError(f"connexion bancaire {connection_id} introuvable")
            kind = LinkKind.UPDATE if connection is not None else LinkKind.ENTRY
            return await self.issue(
                session, redevable, kind=kind, origin=LinkOrigin.LOGIN, connection=connection
            )

    @staticmethod
    async def find(
        session: AsyncSession, token: str, kind: LinkKind, connection_id: int | None = None
    ) -> SecureLink | None:
        """The link of ``token``; None when unknown, tampered or of another kind/connection."""
        if not token or len(token) > 200:
            return None
        link = await session.scalar(
            select(SecureLink).where(SecureLink.token_hash == hash_token(token))
        )
        if link is None or link.kind != kind.value:
            return None
        if kind is LinkKind.UPDATE and link.connection_id != connection_id:
            return None
        return link

    @staticmethod
    async def recent(
        session: AsyncSession, redevable_id: int, now: dt.datetime, limit: int = HISTORY_SIZE
    ) -> Sequence[LinkRow]:
        """The latest ``limit`` links of a redevable, newest first."""
        rows = (
            await session.execute(
                select(SecureLink, BankConnection.bank_name)
                .outerjoin(BankConnection, BankConnection.id == SecureLink.connection_id)
                .where(SecureLink.redevable_id == redevable_id)
                .order_by(SecureLink.created_at.desc(), SecureLink.id.desc())
                .limit(limit)
            )
        ).all()
        return [
            LinkRow(
                id=link.id,
                kind=LinkKind(link.kind),
                kind_label=kind_label(link, bank_name),
                connection_id=link.connection_id,
                created_at=link.created_at,
                expires_at=link.expires_at,
                used_at=link.used_at,
                recipient=link.recipient,
                state=link_state(link, now),
                created_by=link.created_by,
                reason=link.reason,
            )
            for link, bank_name in rows
        ]

"""Composition of the statement mail: headers, French body from templates, attachments.

Structure of a composed mail (before signing)::

    multipart/mixed                       boundary "=_releve-<id>-mixte"
    ├── multipart/alternative             boundary "=_releve-<id>-alternative"
    │   ├── text/plain; charset=utf-8     quoted-printable   (mail/statement.txt)
    │   └── text/html; charset=utf-8      quoted-printable   (mail/statement.html)
    ├── application/octet-stream          base64  Releve_<IBAN>_<AAAAMMJJ>-<AAAAMMJJ>.cfonb
    └── text/csv; charset=utf-8           base64  Transactions_supprimees_<IBAN>_<...>.csv
                                                   (only when the bank deleted transactions)

When the files weigh more than 2 Mo together they are replaced by one
``Releve_<IBAN>_<AAAAMMJJ>-<AAAAMMJJ>.zip``. Every part is 7-bit (quoted-printable or
base64) so that the S/MIME signature survives any transport.

The output is a pure function of the :class:`StatementMail`: the Date header is the
statement's ``created_at`` (the injectable clock's time, never ``now()``), the Message-ID and
the MIME boundaries derive from the statement id, the zip timestamps from ``created_at``. A
re-delivery after a crash therefore produces the same bytes, the signature apart.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime
from typing import Any, Final

from releves_mailer.cfonb import minor_unit
from releves_mailer.cfonb.account import iban_for_file_name
from releves_mailer.clock import PARIS
from releves_mailer.delivery import mime
from releves_mailer.render import Renderer
from releves_mailer.signing.archive import ZIP_LIMIT, Attachment, bundle_attachments
from releves_mailer.signing.smime import SmimeSigner

__all__ = [
    "CFONB_MIME_TYPE",
    "CSV_MIME_TYPE",
    "PERIODICITY_LABELS",
    "StatementMail",
    "build_signed_statement_mail",
    "compose_statement_bytes",
    "compose_statement_mail",
    "periodicity_label",
    "statement_attachments",
    "statement_context",
]

#: Annexe 1 periodicity -> the word of the subject ("Relevé QUOTIDIEN du compte bancaire ..."),
#: agreeing with the masculine "relevé" as in the seed's example.
PERIODICITY_LABELS: Final[dict[str, str]] = {
    "JOURNALIERE": "QUOTIDIEN",
    "HEBDOMADAIRE": "HEBDOMADAIRE",
    "MENSUELLE": "MENSUEL",
    "TRIMESTRIELLE": "TRIMESTRIEL",
    "SEMESTRIELLE": "SEMESTRIEL",
    "ANNUELLE": "ANNUEL",
}

#: The CFONB file travels as opaque bytes: no client may touch its line ends.
CFONB_MIME_TYPE: Final = "application/octet-stream"
CSV_MIME_TYPE: Final = "text/csv; charset=utf-8"
TEMPLATE_NAME: Final = "statement"

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def periodicity_label(periodicity: str) -> str:
    """``"JOURNALIERE"`` -> ``"QUOTIDIEN"``; a label already in that form is kept."""
    code = str(periodicity).upper()
    if code in PERIODICITY_LABELS:
        return PERIODICITY_LABELS[code]
    if code in PERIODICITY_LABELS.values():
        return code
    raise ValueError(f"unknown periodicity: {periodicity!r}")


def _is_int(value: object) -> bool:
    return type(value) is int


@dataclass(frozen=True, slots=True)
class StatementMail:
    """Everything a statement mail says, already decided upstream (no database here).

    Amounts are ``int`` minor units of ``currency``. ``bank_balance`` is the closing balance
    the bank reports for ``period_end`` (``None`` when it gave none); a difference with
    ``closing_balance`` is shown as a warning in the mail, never hidden.
    """

    statement_id: int | str
    #: Annexe 1 code (``JOURNALIERE``...) or subject word (``QUOTIDIEN``...).
    periodicity: str
    company_name: str
    #: SIRET (14 digits), or the SIREN alone (9 digits) when the redevable has no NIC.
    siret: str
    bank_name: str
    account_label: str
    iban: str
    period_start: dt.date
    period_end: dt.date
    #: The date the statement was due (may differ from ``period_end``: week-ends, holidays).
    due_date: dt.date
    movement_count: int
    opening_balance: int
    closing_balance: int
    currency: str
    cfonb: bytes
    #: Delivery address (the account's INBOX or its ``releves.<login>@`` box).
    recipient: str
    domain: str
    portal_name: str
    #: When the statement was produced, from the clock; becomes the Date header.
    created_at: dt.datetime
    #: Deleted-transactions CSV (UTF-8), ``None`` when the bank deleted nothing.
    deleted_csv: bytes | None = None
    bank_balance: int | None = None
    support_email: str = ""
    support_phone: str = ""

    def __post_init__(self) -> None:
        if not _SAFE_ID.fullmatch(str(self.statement_id)) or isinstance(self.statement_id, bool):
            raise ValueError(f"statement id unusable in a Message-ID: {self.statement_id!r}")
        periodicity_label(self.periodicity)
        if not (self.siret.isascii() and self.siret.isdigit() and len(self.siret) in (9, 14)):
            raise ValueError(f"siret must be 14 digits (or a 9-digit SIREN): {self.siret!r}")
        for name in ("movement_count", "opening_balance", "closing_balance"):
            if not _is_int(getattr(self, name)):
                raise TypeError(f"{name} must be an int, not {type(getattr(self, name)).__name__}")
        if self.bank_balance is not None and not _is_int(self.bank_balance):
            raise TypeError("bank_balance must be an int of minor units or None")
        if self.movement_count < 0:
            raise ValueError("movement_count must not be negative")
        minor_unit(self.currency)
        if self.period_start > self.period_end:
            raise ValueError("period_start is after period_end")
        if self.created_at.tzinfo is None:
            raise ValueError("created_at must be timezone-aware")
        if "@" not in self.recipient or any(c in self.recipient for c in "\r\n<> "):
            raise ValueError(f"invalid recipient address: {self.recipient!r}")
        if not self.domain or any(c in self.domain for c in "\r\n@<> "):
            raise ValueError(f"invalid domain: {self.domain!r}")
        if not isinstance(self.cfonb, bytes):
            raise TypeError("cfonb must be bytes")

    @property
    def compact_iban(self) -> str:
        return "".join(self.iban.split()).upper()

    @property
    def balance_mismatch(self) -> bool:
        """The reconciliation flag: the bank's balance differs from the computed one."""
        return self.bank_balance is not None and self.bank_balance != self.closing_balance

    @property
    def balance_gap(self) -> int | None:
        """Bank's balance minus computed closing balance (minor units), when known."""
        return None if self.bank_balance is None else self.bank_balance - self.closing_balance

    @property
    def file_stem(self) -> str:
        """``<IBAN>_<AAAAMMJJ>-<AAAAMMJJ>``: what every attachment name carries (an IBAN
        unfit for a file name is replaced by the statement's number)."""
        account = iban_for_file_name(self.iban) or f"releve{self.statement_id}"
        return f"{account}_{self.period_start:%Y%m%d}-{self.period_end:%Y%m%d}"

    @property
    def message_id(self) -> str:
        return f"<releve-{self.statement_id}@{self.domain}>"

    @property
    def sender(self) -> str:
        return f"portail@{self.domain}"


def statement_attachments(mail: StatementMail) -> list[Attachment]:
    """The statement's files, before any zipping: the CFONB file, then the CSV if any."""
    files = [Attachment(f"Releve_{mail.file_stem}.cfonb", mail.cfonb, CFONB_MIME_TYPE)]
    if mail.deleted_csv is not None:
        files.append(
            Attachment(
                f"Transactions_supprimees_{mail.file_stem}.csv", mail.deleted_csv, CSV_MIME_TYPE
            )
        )
    return files


_DESCRIPTIONS: Final = {
    ".cfonb": "relevé au format CFONB120",
    ".csv": "transactions supprimées par la banque, au format CSV",
}


def statement_context(
    mail: StatementMail, files: list[Attachment], sent: list[Attachment]
) -> dict[str, Any]:
    """The variables of the ``statement`` templates (documented in ``docs/mails.md``)."""
    zipped = sent != files
    return {
        "statement_id": mail.statement_id,
        "periodicite": periodicity_label(mail.periodicity),
        "company": mail.company_name,
        "company_id": mail.siret,
        "company_id_kind": "SIREN" if len(mail.siret) == 9 else "SIRET",
        "bank": mail.bank_name,
        "account_label": mail.account_label,
        "iban": mail.compact_iban,
        "period_start": mail.period_start,
        "period_end": mail.period_end,
        "due_date": mail.due_date,
        "movement_count": mail.movement_count,
        "opening_balance": mail.opening_balance,
        "closing_balance": mail.closing_balance,
        "currency": mail.currency,
        "bank_balance": mail.bank_balance,
        "balance_mismatch": mail.balance_mismatch,
        "balance_gap": mail.balance_gap,
        "has_deleted": mail.deleted_csv is not None,
        "files": [
            {
                "name": item.name,
                "size": len(item.data),
                "description": _DESCRIPTIONS[item.name[item.name.rfind(".") :]],
            }
            for item in files
        ],
        "zipped": zipped,
        "zip_name": sent[0].name if zipped else None,
        "zip_size": len(sent[0].data) if zipped else None,
        "zip_limit": ZIP_LIMIT,
        "created_at": mail.created_at,
        "recipient": mail.recipient,
        "sender": mail.sender,
        "domain": mail.domain,
        "portal_name": mail.portal_name,
        "support_email": mail.support_email,
        "support_phone": mail.support_phone,
    }


def _zip_time(created_at: dt.datetime) -> tuple[int, int, int, int, int, int]:
    local = created_at.astimezone(PARIS)
    return (local.year, local.month, local.day, local.hour, local.minute, local.second)


def compose_statement_bytes(mail: StatementMail, renderer: Renderer) -> bytes:
    """The unsigned statement mail as canonical bytes (CRLF, 7-bit); same input, same bytes."""
    files = statement_attachments(mail)
    sent = bundle_attachments(
        files,
        zip_name=f"Releve_{mail.file_stem}.zip",
        date_time=_zip_time(mail.created_at),
    )
    rendered = renderer.render_mail(TEMPLATE_NAME, statement_context(mail, files, sent))
    body = mime.text_part(rendered.text, "plain")
    if rendered.html is not None:
        body = mime.multipart(
            "alternative",
            f"=_releve-{mail.statement_id}-alternative",
            [body, mime.text_part(rendered.html, "html")],
        )
    parts = [body, *(mime.attachment_part(*item) for item in sent)]
    content = mime.multipart("mixed", f"=_releve-{mail.statement_id}-mixte", parts)
    return b"".join(
        (
            mime.address_header("From", mail.portal_name, mail.sender),
            mime.header("To", mail.recipient),
            mime.header("Reply-To", f"noreply@{mail.domain}"),
            mime.header("Subject", rendered.subject),
            mime.header("Date", format_datetime(mail.created_at.astimezone(PARIS))),
            mime.header("Message-ID", mail.message_id),
            mime.header("Auto-Submitted", "auto-generated"),
            mime.header("MIME-Version", "1.0"),
            content,
            mime.CRLF,
        )
    )


def compose_statement_mail(mail: StatementMail, renderer: Renderer) -> EmailMessage:
    """The unsigned statement mail as an :class:`EmailMessage` (a parsed view of
    :func:`compose_statement_bytes`, for inspection; signing uses the bytes)."""
    message = BytesParser(policy=policy.SMTP).parsebytes(compose_statement_bytes(mail, renderer))
    assert isinstance(message, EmailMessage)
    return message


async def build_signed_statement_mail(
    mail: StatementMail, renderer: Renderer, signer: SmimeSigner
) -> bytes:
    """Compose and sign the statement mail in one worker thread (zipping and signing are
    CPU work that must stay off the event loop); return the bytes to deliver."""
    return await asyncio.to_thread(lambda: signer.sign(compose_statement_bytes(mail, renderer)))

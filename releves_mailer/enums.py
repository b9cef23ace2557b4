"""The domain's enumerations (states, kinds, periodicities): stored by the database models,
used by pure code (statement planning and building) without loading SQLAlchemy."""

from __future__ import annotations

import enum

__all__ = [
    "BankEventKind",
    "ConnectionState",
    "LineKind",
    "OutboxState",
    "Periodicity",
    "ReceptionMode",
    "StatementState",
    "TransactionStatus",
    "WindowKind",
]


class ReceptionMode(enum.StrEnum):
    """Where statement mails go (seed chapter 1)."""

    NONE = "none"  # download only
    DEFAULT = "default"  # INBOX of <login>@<domain>
    DEDICATED = "dedicated"  # releves.<login>@<domain>


class Periodicity(enum.StrEnum):
    """How often statements are cut (Annexe 1, field 6)."""

    JOURNALIERE = "JOURNALIERE"
    HEBDOMADAIRE = "HEBDOMADAIRE"
    MENSUELLE = "MENSUELLE"
    TRIMESTRIELLE = "TRIMESTRIELLE"
    SEMESTRIELLE = "SEMESTRIELLE"
    ANNUELLE = "ANNUELLE"


class ConnectionState(enum.StrEnum):
    """Health of a bank connection."""

    NEW = "new"  # created, never checked
    OK = "ok"  # last check succeeded
    ERROR = "error"  # last check failed; ``error_code`` says why
    CLOSED = "closed"  # no longer used (replaced by a reconnection or removed)


class TransactionStatus(enum.StrEnum):
    """Where a transaction is in its life, as last seen at the provider.

    ``pending`` rows are never reported; ``booked`` rows are reported once; ``deleted`` rows
    were withdrawn by the bank (whatever they were before); ``replaced`` rows were pending
    and the bank booked them under another provider id (``replaced_by_id``).
    """

    PENDING = "pending"
    BOOKED = "booked"
    DELETED = "deleted"
    REPLACED = "replaced"


class BankEventKind(enum.StrEnum):
    """What a bank event records (the history shown on an account's page)."""

    CONNECTION_CREATED = "connection_created"
    CONNECTION_OK = "connection_ok"
    CONNECTION_ERROR = "connection_error"
    CONNECTION_CLOSED = "connection_closed"
    ACCOUNT_ADDED = "account_added"
    ACCOUNT_REATTACHED = "account_reattached"
    ACCOUNT_GONE = "account_gone"
    ACCOUNT_DEACTIVATED = "account_deactivated"
    ACCOUNT_REACTIVATED = "account_reactivated"
    IBAN_CHANGED = "iban_changed"
    BIC_CHANGED = "bic_changed"
    LABEL_CHANGED = "label_changed"
    TYPE_CHANGED = "type_changed"
    CURRENCY_CHANGED = "currency_changed"
    IBAN_CONFLICT = "iban_conflict"
    #: The provider gave an IBAN with bad characters or check digits: not stored.
    IBAN_REJECTED = "iban_rejected"
    LINK_SENT = "link_sent"
    LINK_USED = "link_used"
    CREDENTIALS_UPDATED = "credentials_updated"
    ALERT_SENT = "alert_sent"
    #: A statement's computed closing balance differs from the bank's by an unexplained gap.
    BALANCE_MISMATCH = "balance_mismatch"


class StatementState(enum.StrEnum):
    """Where a statement is (the portal's "État de la collecte")."""

    #: The due date has passed, the night's collection has not brought fresh data yet
    #: (shown "en cours").
    WAITING = "waiting"
    #: Cut: files stored, transactions marked (shown "succès").
    PRODUCED = "produced"
    #: The collection window ended without fresh data (or the file could not be written);
    #: ``reason`` says why. The row is completed in place when fresh data arrives (shown
    #: "échec").
    FAILED = "failed"


class WindowKind(enum.StrEnum):
    """How the period start was chosen."""

    #: First statement of the account: (D - 1 month, D].
    FIRST = "first"
    #: The previous statement's due date to D (the chain).
    NEXT = "next"
    #: Like ``next``, after a deactivation of the account: covers the whole gap.
    RESUMED = "resumed"


class LineKind(enum.StrEnum):
    """What a statement line is."""

    #: A movement of the CFONB file (04 record).
    MOVEMENT = "movement"
    #: A line of the deleted-transactions CSV: withdraws an earlier movement line.
    CORRECTION = "correction"


class OutboxState(enum.StrEnum):
    PENDING = "pending"  # waiting for its next attempt
    SENT = "sent"  # accepted by the relay, or filed locally when no relay is configured
    FAILED = "failed"  # refused for good (recipient rejected, or retries exhausted)

"""French words of the English enum values: the one mapping users read.

The language rule (README, "Conventions"): stored enum values and identifiers are English;
what users read is French. The command line's JSON is for French users and their scripts:
its keys are French words, and so are its enumerated values, always taken from here.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Final

from releves_mailer.db.models import (
    BankEventKind,
    ConnectionState,
    ReceptionMode,
    StatementState,
    TransactionStatus,
)
from releves_mailer.partner.links import LinkKind, LinkOrigin, LinkState

__all__ = ["FRENCH", "french"]

#: For each enum, the French word of every value (a test checks that none is missing).
FRENCH: Final[Mapping[type[enum.Enum], Mapping[Any, str]]] = {
    StatementState: {
        StatementState.WAITING: "en cours",
        StatementState.PRODUCED: "succès",
        StatementState.FAILED: "échec",
    },
    ConnectionState: {
        ConnectionState.NEW: "nouvelle",
        ConnectionState.OK: "active",
        ConnectionState.ERROR: "en erreur",
        ConnectionState.CLOSED: "fermée",
    },
    TransactionStatus: {
        TransactionStatus.PENDING: "en attente",
        TransactionStatus.BOOKED: "comptabilisée",
        TransactionStatus.DELETED: "supprimée",
        TransactionStatus.REPLACED: "remplacée",
    },
    BankEventKind: {
        BankEventKind.CONNECTION_CREATED: "connexion créée",
        BankEventKind.CONNECTION_OK: "connexion réussie",
        BankEventKind.CONNECTION_ERROR: "connexion en erreur",
        BankEventKind.CONNECTION_CLOSED: "connexion fermée",
        BankEventKind.ACCOUNT_ADDED: "compte ajouté",
        BankEventKind.ACCOUNT_REATTACHED: "compte rattaché",
        BankEventKind.ACCOUNT_GONE: "compte disparu",
        BankEventKind.ACCOUNT_DEACTIVATED: "compte désactivé",
        BankEventKind.ACCOUNT_REACTIVATED: "compte réactivé",
        BankEventKind.IBAN_CHANGED: "IBAN modifié",
        BankEventKind.BIC_CHANGED: "BIC modifié",
        BankEventKind.LABEL_CHANGED: "libellé modifié",
        BankEventKind.TYPE_CHANGED: "type modifié",
        BankEventKind.CURRENCY_CHANGED: "devise modifiée",
        BankEventKind.IBAN_CONFLICT: "IBAN en conflit",
        BankEventKind.IBAN_REJECTED: "IBAN refusé",
        BankEventKind.LINK_SENT: "lien envoyé",
        BankEventKind.LINK_USED: "lien utilisé",
        BankEventKind.CREDENTIALS_UPDATED: "identifiants mis à jour",
        BankEventKind.ALERT_SENT: "alerte envoyée",
        BankEventKind.BALANCE_MISMATCH: "écart de solde",
    },
    ReceptionMode: {
        ReceptionMode.NONE: "aucune",
        ReceptionMode.DEFAULT: "par défaut",
        ReceptionMode.DEDICATED: "dédiée",
    },
    LinkKind: {
        LinkKind.ENTRY: "saisie",
        LinkKind.UPDATE: "maj",
    },
    LinkState: {
        LinkState.VALID: "valide",
        LinkState.USED: "utilisé",
        LinkState.EXPIRED: "expiré",
    },
    LinkOrigin: {
        LinkOrigin.AUTO: "automatique",
        LinkOrigin.MANUAL: "manuel",
        LinkOrigin.LOGIN: "connexion",
    },
}


def french(value: enum.Enum) -> str:
    """The French word of an enum value (``KeyError`` for a value without one)."""
    return FRENCH[type(value)][value]

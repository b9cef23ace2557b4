"""French names of the bank account types the aggregators report, for every page and command.

Apart from :mod:`releves_mailer.vocabulary` (which maps our own enums) because the codes are
the aggregators' free strings, and so that the renderer can use it without importing the
database models.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = ["ACCOUNT_TYPES", "account_type_fr"]


#: French names of the bank account types the aggregators report (Powens' ``type`` codes;
#: the test bank uses the same). Stored as received; shown in French.
ACCOUNT_TYPES: Final[Mapping[str, str]] = {
    "checking": "Compte courant",
    "savings": "Compte d'épargne",
    "deposit": "Compte à terme",
    "loan": "Prêt",
    "market": "Compte-titres",
    "joint": "Compte joint",
    "card": "Carte à débit différé",
    "lifeinsurance": "Assurance vie",
    "pea": "PEA",
    "pee": "Plan d'épargne entreprise",
    "perco": "PERCO",
    "per": "Plan d'épargne retraite",
    "perp": "PERP",
    "madelin": "Contrat Madelin",
    "article83": "Contrat article 83",
    "rsp": "Réserve spéciale de participation",
    "capitalisation": "Contrat de capitalisation",
    "crowdlending": "Financement participatif",
    "realEstate": "Immobilier",
    "unknown": "Type inconnu",
}


def account_type_fr(value: str) -> str:
    """The French name of a bank account type; an unknown code is shown as it came."""
    if not value:
        return "Type inconnu"
    return ACCOUNT_TYPES.get(value, ACCOUNT_TYPES.get(value.lower(), value))

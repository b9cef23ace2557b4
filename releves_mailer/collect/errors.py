"""Connection error codes of the aggregators: French message (seed wording) and class."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "ERROR_CODES",
    "UNKNOWN_ERROR",
    "ErrorClass",
    "ErrorCode",
    "describe_error",
    "normalise_error_code",
]


class ErrorClass(enum.StrEnum):
    """Who has to act for a broken connection to work again."""

    #: The client must act (new credentials, strong authentication, bank website...):
    #: a secure update link is worth sending.
    ACTION = "action"
    #: Nobody can act: the bank or the aggregator is unavailable or busy; retry later.
    TRANSIENT = "transient"


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """One connection state other than "synchronised"."""

    code: str
    message: str
    error_class: ErrorClass

    @property
    def needs_action(self) -> bool:
        return self.error_class is ErrorClass.ACTION


_CODES = (
    # Seed, chapter 4.2.3 "Erreurs possibles" (wording kept as in the seed).
    ErrorCode(
        "wrongpass",
        "L'authentification au site de la banque a échoué. "
        "Veuillez mettre à jour vos identifiants de connexion bancaire.",
        ErrorClass.ACTION,
    ),
    ErrorCode(
        "passwordExpired",
        "Votre mot de passe de connexion à la banque a expiré. Veuillez changer votre mot de "
        "passe par l'intermédiaire de votre banque en ligne.",
        ErrorClass.ACTION,
    ),
    ErrorCode(
        "additionalInformationNeeded",
        "Identifiant complémentaire manquant, Il manque un identifiant complémentaire "
        "(code pin) pour finaliser la connexion bancaire. Veuillez terminer la saisie de vos "
        "identifiants bancaires pour finaliser la connexion à la banque.",
        ErrorClass.ACTION,
    ),
    ErrorCode(
        "actionNeeded",
        "Une action de votre part sur le site web de la banque est nécessaire "
        "(validation CGU, mise à jour d'informations, ...).",
        ErrorClass.ACTION,
    ),
    ErrorCode(
        "SCARequired",
        "Un processus d'authentification forte est nécessaire "
        "(sans redirection vers le site de la banque).",
        ErrorClass.ACTION,
    ),
    ErrorCode(
        "webauthRequired",
        "Un processus d'authentification forte est nécessaire "
        "(avec une redirection vers le site de la banque).",
        ErrorClass.ACTION,
    ),
    ErrorCode(
        "decoupled",
        "Une action de votre part est nécessaire sur l'application de votre banque.",
        ErrorClass.ACTION,
    ),
    ErrorCode(
        "websiteUnavailable",
        "Le service est temporairement indisponible.",
        ErrorClass.TRANSIENT,
    ),
    ErrorCode("bug", "Une erreur inattendue s'est produite.", ErrorClass.TRANSIENT),
    # Powens states that are not in the seed's table (reference/powens.md, section 3).
    ErrorCode(
        "rateLimiting",
        "La banque limite temporairement le nombre de connexions ; "
        "une nouvelle tentative sera faite plus tard.",
        ErrorClass.TRANSIENT,
    ),
    ErrorCode(
        "validating",
        "La validation de la connexion bancaire est en cours de traitement.",
        ErrorClass.TRANSIENT,
    ),
)

#: Every known code, by its canonical spelling.
ERROR_CODES: Mapping[str, ErrorCode] = {entry.code: entry for entry in _CODES}

#: Older or alternative spellings met in the seed's table and in Powens' documentation.
_ALIASES = {
    "unavailable": "websiteUnavailable",
    "change": "passwordExpired",
    "wrongPass": "wrongpass",
}

#: What an unknown code (a code the aggregator added later) is reported as.
UNKNOWN_ERROR = ErrorCode("unknown", "Une erreur inattendue s'est produite.", ErrorClass.TRANSIENT)


def normalise_error_code(code: str) -> str | None:
    """The canonical spelling of ``code`` (case-insensitive), or None when unknown."""
    if code in ERROR_CODES:
        return code
    if code in _ALIASES:
        return _ALIASES[code]
    folded = code.casefold()
    for name in (*ERROR_CODES, *_ALIASES):
        if name.casefold() == folded:
            return _ALIASES.get(name, name)
    return None


def describe_error(code: str) -> ErrorCode:
    """The message and class of ``code``; unknown codes are transient "unexpected errors"."""
    canonical = normalise_error_code(code)
    if canonical is None:
        return ErrorCode(code, UNKNOWN_ERROR.message, UNKNOWN_ERROR.error_class)
    return ERROR_CODES[canonical]

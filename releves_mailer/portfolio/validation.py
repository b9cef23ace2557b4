"""Checks of identifiers and contact fields, with French reasons naming the field."""

from __future__ import annotations

import re

from stdnum.exceptions import ValidationError as StdnumError
from stdnum.fr import siren as siren_number
from stdnum.fr import siret as siret_number

from releves_mailer.errors import UserError
from releves_mailer.portfolio.boxes import DEDICATED_PREFIX

__all__ = [
    "RESERVED_LOGINS",
    "check_email",
    "check_login",
    "check_nic",
    "check_siren",
    "check_siret",
    "check_text",
]

#: Local parts the portal itself uses (the dedicated boxes' prefix is refused too).
RESERVED_LOGINS = frozenset({"portail", "noreply", "postmaster", "abuse", "root", "admin"})

_LOGIN = re.compile(r"[a-z0-9][a-z0-9._-]{1,62}")
# Deliberately simple: one @, no blanks, a dotted domain. Deliverability is proven by use.
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")


def check_siren(value: str, field: str = "siren") -> str:
    digits = value.strip().replace(" ", "")
    if not digits.isdigit() or len(digits) != 9:
        raise UserError(f"le SIREN doit comporter 9 chiffres (reçu « {value} »)", field=field)
    try:
        siren_number.validate(digits)
    except StdnumError:
        raise UserError(
            f"SIREN invalide « {digits} » : la clé de contrôle (Luhn) est fausse", field=field
        ) from None
    return digits


def check_nic(siren: str, value: str, field: str = "nic") -> str:
    """An empty NIC is allowed (``""``); a given one must make a valid SIRET with the SIREN."""
    digits = value.strip().replace(" ", "")
    if not digits:
        return ""
    if not digits.isdigit() or len(digits) != 5:
        raise UserError(f"le NIC doit comporter 5 chiffres (reçu « {value} »)", field=field)
    try:
        siret_number.validate(siren + digits)
    except StdnumError:
        raise UserError(
            f"NIC invalide « {digits} » : le SIRET {siren}{digits} a une clé de contrôle fausse",
            field=field,
        ) from None
    return digits


def check_siret(value: str, field: str = "siret") -> str:
    digits = value.strip().replace(" ", "")
    if not digits.isdigit() or len(digits) != 14:
        raise UserError(f"le SIRET doit comporter 14 chiffres (reçu « {value} »)", field=field)
    try:
        siret_number.validate(digits)
    except StdnumError:
        raise UserError(
            f"SIRET invalide « {digits} » : la clé de contrôle (Luhn) est fausse", field=field
        ) from None
    return digits


def check_email(value: str, *, required: bool, field: str = "email", max_length: int = 250) -> str:
    email = value.strip()
    if not email:
        if required:
            raise UserError("adresse e-mail obligatoire", field=field)
        return ""
    if len(email) > max_length:
        raise UserError(
            f"adresse e-mail trop longue ({len(email)} caractères, {max_length} au plus)",
            field=field,
        )
    if not _EMAIL.fullmatch(email):
        raise UserError(f"adresse e-mail invalide « {email} »", field=field)
    return email


def check_text(value: str, *, field: str, label: str, max_length: int, required: bool) -> str:
    text = " ".join(value.split())
    if required and not text:
        raise UserError(f"{label} obligatoire", field=field)
    if len(text) > max_length:
        raise UserError(
            f"{label} trop longue ({len(text)} caractères, {max_length} au plus)", field=field
        )
    return text


def check_login(value: str) -> str:
    login = value.strip().lower()
    if not _LOGIN.fullmatch(login):
        raise UserError(
            f"identifiant invalide « {value} » : 2 à 63 caractères parmi a-z, 0-9, « . », "
            "« _ », « - », commençant par une lettre ou un chiffre",
            field="login",
        )
    if login in RESERVED_LOGINS or login.startswith(DEDICATED_PREFIX):
        raise UserError(f"identifiant réservé « {login} »", field="login")
    return login

"""Bank, branch and account number of a CFONB statement, taken from an IBAN (RIB key checked).

CFONB120 only carries a French BBAN: bank code (5 digits), branch code (5 digits) and
account number (11 alphanumerics). For IBANs with the French 5/5/11/2 layout (``FR``,
``MC`` and the codes some systems use for the French overseas territories) the three
fields are taken as they are and the 2-digit RIB key is checked, then dropped.

Any other IBAN has no slot in the format. Our convention (documented in docs/cfonb.md):
bank code ``00000``, branch code ``00000`` and, as account number, the last 11 characters
of the BBAN (the IBAN without its country code and check digits). Importers match
statements on the 11-character account number, and the national account number sits at
the end of almost every BBAN, so these 11 characters identify the account; every BBAN is
at least 11 characters long (Norway, the shortest, has exactly 11).
"""

from __future__ import annotations

from typing import Final

from stdnum import iban as stdnum_iban
from stdnum.exceptions import ValidationError
from stdnum.iso7064 import mod_97_10

__all__ = [
    "FOREIGN_BANK_CODE",
    "FOREIGN_BRANCH_CODE",
    "FRENCH_LAYOUT_COUNTRIES",
    "bban_fields",
    "checked_iban",
    "iban_for_file_name",
    "rib_key",
]

#: Country codes whose IBAN has the French ``5!n5!n11!c2!n`` BBAN. Besides FR and MC,
#: the overseas codes are accepted because older systems issued IBANs with them.
FRENCH_LAYOUT_COUNTRIES: Final = frozenset("FR MC GF GP MQ RE YT PM BL MF PF NC WF TF".split())
FOREIGN_BANK_CODE: Final = "00000"
FOREIGN_BRANCH_CODE: Final = "00000"

# Letters of a French account number count as digits for the RIB key.
_RIB_LETTERS: Final = str.maketrans(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "12345678912345678923456789",
)


def checked_iban(value: str) -> str:
    """The compact upper-case IBAN ``value`` if it is one, else ``ValueError``.

    Checked: spaces aside, 15 to 34 ASCII letters and digits, the country's BBAN length and
    structure, the check digits (ISO 7064 mod 97-10). For IBANs that come from outside
    (an aggregator) before they are stored, shown, or name a file.
    """
    compact = "".join(value.split()).upper()
    if not (15 <= len(compact) <= 34 and compact.isascii() and compact.isalnum()):
        raise ValueError("not an IBAN: 15 to 34 letters and digits expected")
    try:
        return str(stdnum_iban.validate(compact, check_country=False))
    except ValidationError as exc:
        raise ValueError(f"invalid IBAN: {exc}") from None


def iban_for_file_name(iban: str | None) -> str | None:
    """The compact IBAN to put in a file or ZIP entry name; None when it holds anything
    but ASCII letters and digits (a value stored before IBANs were checked): the caller
    names the file otherwise."""
    compact = "".join((iban or "").split()).upper()
    if not compact or len(compact) > 34 or not (compact.isascii() and compact.isalnum()):
        return None
    return compact


def rib_key(bank_code: str, branch_code: str, account_number: str) -> str:
    """Compute the 2-digit French RIB key: 97 - ((89 bank + 15 branch + 3 account) mod 97)."""
    number = int(account_number.upper().translate(_RIB_LETTERS))
    return f"{97 - (89 * int(bank_code) + 15 * int(branch_code) + 3 * number) % 97:02d}"


def bban_fields(iban: str) -> tuple[str, str, str]:
    """Return ``(bank_code, branch_code, account_number)`` for the CFONB record.

    Raises ``ValueError`` (message in English) for an invalid IBAN or a wrong RIB key.
    """
    compact = "".join(iban.split()).upper()
    country = compact[:2]
    if country in FRENCH_LAYOUT_COUNTRIES:
        if len(compact) != 27 or not compact.isalnum() or not compact.isascii():
            raise ValueError(f"invalid IBAN {iban!r}: a {country} IBAN has 27 characters")
        try:
            mod_97_10.validate(compact[4:] + compact[:4])
        except ValidationError:
            raise ValueError(f"invalid IBAN {iban!r}: wrong check digits") from None
        bank, branch, account, key = compact[4:9], compact[9:14], compact[14:25], compact[25:]
        if not (bank.isdigit() and branch.isdigit() and key.isdigit()):
            raise ValueError(f"invalid IBAN {iban!r}: bank, branch and key must be digits")
        if rib_key(bank, branch, account) != key:
            raise ValueError(f"invalid IBAN {iban!r}: wrong RIB key {key}")
        return bank, branch, account
    try:
        # check_country=False: the country modules of python-stdnum also look bank codes up
        # in registries that age; the check digits and the BBAN structure are checked.
        compact = stdnum_iban.validate(compact, check_country=False)
    except ValidationError as exc:
        raise ValueError(f"invalid IBAN {iban!r}: {exc}") from None
    return FOREIGN_BANK_CODE, FOREIGN_BRANCH_CODE, compact[4:][-11:]

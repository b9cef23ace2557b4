"""French IBANs for the test bank: RIB key and IBAN check digits computed, never made up."""

from __future__ import annotations

from stdnum import iban as stdnum_iban

from releves_mailer.cfonb import rib_key

__all__ = ["french_iban"]

# IBAN check digits: A=10 .. Z=35.
_IBAN_LETTERS = {
    ord(letter): str(10 + index) for index, letter in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
}


def french_iban(bank_code: str, branch_code: str, account_number: str) -> str:
    """The compact French IBAN of a bank, branch and account number; checked with stdnum."""
    if len(bank_code) != 5 or len(branch_code) != 5 or len(account_number) != 11:
        raise ValueError("a French BBAN is bank(5) + branch(5) + account(11) + key(2)")
    bban = (
        bank_code + branch_code + account_number + rib_key(bank_code, branch_code, account_number)
    )
    check = 98 - int(bban.upper().translate(_IBAN_LETTERS) + "152700") % 97
    value = f"FR{check:02d}{bban}"
    return str(stdnum_iban.validate(value))

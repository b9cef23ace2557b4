"""Builders of ``05`` complements (qualifiers of the CFONB SEPA brochure, v2.0 2010, §4.2)."""

from __future__ import annotations

from decimal import Decimal
from typing import Final

from .amounts import AMOUNT_LIMIT, minor_unit
from .model import Complement
from .text import clean_text, clean_zone

__all__ = [
    "QUALIFIERS",
    "SEQUENCE_TYPES",
    "beneficiary_account",
    "beneficiary_name",
    "complement",
    "counterparty",
    "creditor_identifier",
    "end_to_end_reference",
    "entry_number_from_counter",
    "entry_number_from_id",
    "mandate",
    "original_amount",
    "payer_account",
    "payer_identifier",
    "payer_name",
    "payment_references",
    "remittance_information",
    "structured_remittance",
    "ultimate_creditor_name",
    "ultimate_debtor_name",
]

#: Qualifiers of [S1] §4.2 with their meaning (French, shown by ``cfonb show``).
QUALIFIERS: Final[dict[str, str]] = {
    "LIB": "libellé",
    "NPY": "nom du payeur",
    "IPY": "identifiant du payeur",
    "NBE": "nom du bénéficiaire",
    "IBE": "identifiant du bénéficiaire",
    "NPO": "nom du tiers débiteur",
    "IPO": "identifiant du tiers débiteur",
    "NBU": "nom du tiers créancier",
    "IBU": "identifiant du tiers créancier",
    "LCC": "motif (ligne 1)",
    "LC2": "motif (ligne 2)",
    "LCS": "référence structurée",
    "RCN": "référence de bout en bout",
    "REF": "références de l'opération",
    "MMO": "montant d'origine",
    "CBE": "compte du bénéficiaire",
    "RUM": "mandat",
    "CPY": "compte du payeur",
}
#: Qualifiers whose data zone is one 70-character text.
FREE_TEXT: Final = frozenset({"LIB", "NPY", "NBE", "NPO", "NBU", "LCC", "LC2"})
#: Qualifiers whose data zone is a 35-character field followed by blanks.
ONE_FIELD: Final = frozenset({"LCS", "CBE", "CPY"})
#: Qualifiers whose data zone is two 35-character fields.
TWO_FIELDS: Final = frozenset({"IPY", "IBE", "IPO", "IBU", "RCN", "REF"})
SEQUENCE_TYPES: Final = frozenset({"OOFF", "FRST", "RCUR", "FNAL"})


def complement(qualifier: str, data: str) -> Complement:
    """A complement with any qualifier; ``data`` is cleaned and must fit 70 characters."""
    data = clean_zone(data)
    if len(data) > 70:
        raise ValueError(f"complement data longer than 70 characters: {data!r}")
    return Complement(qualifier.upper(), data)


def _name(qualifier: str, name: str) -> Complement:
    # SEPA names are 70 characters at most: a longer one can only be cut.
    return Complement(qualifier, clean_text(name)[:70].rstrip())


def _field(value: str, what: str) -> str:
    value = clean_text(value)
    if len(value) > 35:
        raise ValueError(f"{what} longer than 35 characters: {value!r}")
    return value


def _two(qualifier: str, first: str, second: str, what: str) -> Complement:
    data = f"{_field(first, what):<35}{_field(second, what + ' type')}".rstrip()
    return Complement(qualifier, data)


def payer_name(name: str) -> Complement:
    """``NPY``: name of the payer (debtor), cut to 70 characters."""
    return _name("NPY", name)


def beneficiary_name(name: str) -> Complement:
    """``NBE``: name of the beneficiary (creditor), cut to 70 characters."""
    return _name("NBE", name)


def ultimate_debtor_name(name: str) -> Complement:
    """``NPO``: name of the ultimate debtor."""
    return _name("NPO", name)


def ultimate_creditor_name(name: str) -> Complement:
    """``NBU``: name of the ultimate creditor."""
    return _name("NBU", name)


def counterparty(name: str, amount: int) -> Complement:
    """The other party of a movement: payer (``NPY``) of a credit, beneficiary (``NBE``)
    of a debit."""
    return payer_name(name) if amount > 0 else beneficiary_name(name)


def remittance_information(text: str) -> tuple[Complement, ...]:
    """``LCC`` then ``LC2``: unstructured remittance information, 140 characters at most
    (the SEPA limit; anything beyond is cut)."""
    text = clean_text(text)[:140]
    lines = (text[:70].rstrip(), text[70:].rstrip())
    return tuple(Complement(q, line) for q, line in zip(("LCC", "LC2"), lines, strict=True) if line)


def structured_remittance(reference: str) -> Complement:
    """``LCS``: structured remittance information (creditor reference), 35 characters."""
    return Complement("LCS", _field(reference, "structured reference"))


def end_to_end_reference(end_to_end_id: str, purpose: str = "") -> Complement:
    """``RCN``: end-to-end identification and purpose code."""
    return _two("RCN", end_to_end_id, purpose, "end-to-end reference")


def payment_references(payment_information_id: str = "", instruction_id: str = "") -> Complement:
    """``REF``: remittance (payment information) reference and instruction reference."""
    return _two("REF", payment_information_id, instruction_id, "reference")


def creditor_identifier(identifier: str, identifier_type: str = "") -> Complement:
    """``IBE``: creditor identifier (for a SEPA direct debit, the ICS)."""
    return _two("IBE", identifier, identifier_type, "creditor identifier")


def payer_identifier(identifier: str, identifier_type: str = "") -> Complement:
    """``IPY``: payer (debtor) identifier and its type."""
    return _two("IPY", identifier, identifier_type, "payer identifier")


def mandate(reference: str, sequence_type: str = "") -> Complement:
    """``RUM``: SEPA mandate reference and sequence type (OOFF, FRST, RCUR, FNAL)."""
    sequence_type = sequence_type.upper()
    if sequence_type and sequence_type not in SEQUENCE_TYPES:
        raise ValueError(f"unknown SEPA sequence type {sequence_type!r}")
    data = f"{_field(reference, 'mandate reference'):<35}{sequence_type}".rstrip()
    return Complement("RUM", data)


def beneficiary_account(account: str) -> Complement:
    """``CBE``: account of the beneficiary of a transfer (35 characters)."""
    return Complement("CBE", _field(account, "beneficiary account"))


def payer_account(account: str) -> Complement:
    """``CPY``: account of the payer of a direct debit (35 characters)."""
    return Complement("CPY", _field(account, "payer account"))


def original_amount(currency: str, amount: int, rate: Decimal | None = None) -> Complement:
    """``MMO``: amount in the original currency (unsigned, its own minor units) and the
    exchange rate (at most 11 digits, at most 99 decimals)."""
    currency = currency.upper()
    decimals = minor_unit(currency)
    magnitude = abs(amount)
    if magnitude > AMOUNT_LIMIT:
        raise ValueError(f"original amount {amount} exceeds the CFONB limit")
    rate_zone = ""
    if rate is not None:
        sign, _digits, exponent = rate.normalize().as_tuple()
        if sign or not isinstance(exponent, int) or rate <= 0:
            raise ValueError(f"invalid exchange rate {rate}")
        scale = max(0, -exponent)
        value = int(rate.scaleb(scale))
        if value >= 10**11 or scale > 99:
            raise ValueError(f"exchange rate {rate} does not fit 11 digits")
        rate_zone = f"{scale:02d}{value:011d}"
    return Complement("MMO", f"{currency}{decimals}{magnitude:014d}{rate_zone}")


#: Entry numbers are 7 digits: a counter past 9,999,999 starts again at 0000000.
ENTRY_NUMBER_MODULUS: Final = 10_000_000


def entry_number_from_counter(counter: int) -> str:
    """The 7 digits of entry number ``counter`` (a counter per account that only goes up),
    zero-padded, modulo 10^7. Accounting importers de-duplicate on date, entry number,
    amount and label: 10 million movements apart, the dates tell the numbers apart."""
    if counter < 0:
        raise ValueError(f"negative entry number {counter}")
    return f"{counter % ENTRY_NUMBER_MODULUS:07d}"


def entry_number_from_id(transaction_id: int | str) -> str:
    """A 7-character entry number stable across statements: the last 7 alphanumerics of
    the aggregator's transaction id, zero-filled. Identical movements get distinct ids.
    Letters make it fail a reading that wants digits, and two ids may end alike: prefer
    :func:`entry_number_from_counter` when a counter per account can be kept."""
    text = "".join(c for c in str(transaction_id).upper() if c.isascii() and c.isalnum())
    return text[-7:].rjust(7, "0")

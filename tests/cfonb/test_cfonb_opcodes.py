"""Operation codes from Powens types, signs and labels (powens.md §9)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from releves_mailer.cfonb import OP_CODES, OpCodeMapper, classify_label, clean_text, op_code_for
from releves_mailer.cfonb.opcodes import DEFAULT_RULES, TypeRules


@pytest.mark.parametrize(
    ("kind", "amount", "label", "code"),
    [
        ("transfer", -100, "VIR SEPA FOURNISSEUR", "06"),
        ("transfer", 100, "VIR SEPA CLIENT", "05"),
        ("transfer", -100, "VIR INST vers Dupont", "C1"),
        ("transfer", 100, "Virement instantané reçu", "C2"),
        ("transfer", -100, "VIREMENT INTERNATIONAL USD", "44"),
        ("transfer", 100, "RETOUR VIR SEPA", "12"),
        ("order", -100, "PRLV SEPA EDF", "B1"),
        ("order", -100, "PRLV SEPA B2B ORANGE", "B2"),
        ("order", -100, "TIP CANAL", "22"),
        ("order", -100, "TELEREGLEMENT DGFIP", "96"),
        ("order", -100, "REJET PRLV CLIENT", "A3"),
        ("order", 100, "REMISE PRLV SEPA", "A1"),
        ("order", 100, "REMBT PRLV EDF", "B5"),
        ("check", -100, "CHEQUE 1234567", "01"),
        ("check", 100, "REMISE CHEQUES", "02"),
        ("check", -100, "CHQ IMPAYE", "03"),
        ("deposit", 100, "VERSEMENT ESPECES", "04"),
        ("deposit", 100, "REMISE CHQ 12", "02"),
        ("deposit", 100, "REMISE CB 12/01", "30"),
        ("withdrawal", -100, "RETRAIT DAB PARIS", "29"),
        ("loan_payment", -100, "ECHEANCE PRET", "72"),
        ("loan_repayment", -100, "ECHEANCE PRET", "72"),
        ("loan_payment", 100, "DEBLOCAGE PRET", "71"),
        ("bank", -100, "FRAIS TENUE COMPTE", "62"),
        ("bank", -100, "AGIOS TRIMESTRE", "61"),
        ("bank", -100, "INTERETS DEBITEURS", "61"),
        ("bank", -100, "COTISATION CARTE", "64"),
        ("fee", -100, "COMMISSION", "62"),
        ("bank", 100, "INTERETS CREDITEURS", "63"),
        ("card", -100, "CB CARREFOUR", "11"),
        ("card", 100, "CB AVOIR CARREFOUR", "11"),
        ("deferred_card", -100, "CARTE X1234", "11"),
        ("summary_card", -100, "FACTURE CARTE", "11"),
        ("card_summary", -100, "FACTURE CARTE", "11"),
        ("market_order", -100, "ACHAT TITRES", "51"),
        ("arbitrage", 100, "ARBITRAGE", "52"),
        ("market_fee", -100, "DROITS DE GARDE", "88"),
        ("profit", 100, "COUPON", "87"),
        ("payout", 100, "PAYOUT", "05"),
        ("payment", -100, "PAYMENT", "06"),
    ],
)
def test_type_and_label(kind: str, amount: int, label: str, code: str) -> None:
    assert op_code_for(kind, amount, label) == code


@pytest.mark.parametrize(
    ("kind", "amount", "label", "code"),
    [
        # The type alone says 99: the label says more.
        ("unknown", -100, "VIR SEPA LOYER", "06"),
        ("unknown", 100, "VIREMENT DE M. DUPONT", "05"),
        ("unknown", -100, "PRLV SEPA FREE", "B1"),
        ("unknown", -100, "CHQ 0001234", "01"),
        ("unknown", -100, "PAIEMENT CB 1201 FNAC", "11"),
        ("unknown", -100, "RETRAIT DAB 12/01", "29"),
        ("unknown", -100, "FRAIS SUR OPERATION", "62"),
        ("unknown", -100, "ECHEANCE PRET 1234", "72"),
        ("unknown", 100, "VERSEMENT ESPECES", "04"),
        (None, 100, "REMISE CHEQUES 5", "02"),
        ("something_new", -100, "PRELEVEMENT URSSAF", "B1"),
        ("payback", 100, "VIR REMBOURSEMENT ASSURANCE", "05"),
        ("deposit", -100, "FRAIS DE DEPOT", "62"),
        ("bank", 100, "VIR RETROCESSION", "05"),
        # ... unless it is a cancellation, or says nothing.
        ("unknown", -100, "ANNULATION VIR 12/01", "99"),
        ("unknown", 100, "REGULARISATION", "99"),
        ("unknown", 100, "OPERATION DIVERSE", "99"),
        ("payback", 100, "REMBOURSEMENT", "99"),
    ],
)
def test_label_refines_ninety_nine(kind: str | None, amount: int, label: str, code: str) -> None:
    assert op_code_for(kind, amount, label) == code


def test_card_flag_and_foreign_currency() -> None:
    assert op_code_for("payback", 100, "REMBOURSEMENT", card=True) == "11"
    assert op_code_for("transfer", -100, "VIR SEPA", foreign_currency=True) == "44"
    assert op_code_for("transfer", 100, "VIR", foreign_currency=True) == "45"


def test_words_are_not_matched_inside_other_words() -> None:
    assert classify_label("ENVIRONNEMENT ACBA") is None
    assert classify_label("Prélèvement") == "order"


def test_every_default_code_is_a_cfonb_code() -> None:
    assert "60" not in OP_CODES
    assert {"01", "59", "61", "99", "A1", "B6", "C5"} <= set(OP_CODES)


def test_custom_table() -> None:
    mapper = OpCodeMapper({"unknown": TypeRules("91", "91"), "card": TypeRules("28", "30")})
    assert mapper.code("card", -5, "CB") == "28"
    assert mapper.code("card", 5, "CB") == "30"
    assert mapper.code("weird", 5, "nothing") == "91"
    with pytest.raises(ValueError, match="unknown operation code"):
        OpCodeMapper({"unknown": TypeRules("60", "99")})


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.none(), st.sampled_from(sorted(DEFAULT_RULES)), st.text(max_size=12)),
    st.integers(-(10**14), 10**14),
    st.text(max_size=80),
    st.booleans(),
    st.booleans(),
)
def test_always_a_cfonb_code(
    kind: str | None, amount: int, label: str, card: bool, foreign: bool
) -> None:
    assert op_code_for(kind, amount, label, card=card, foreign_currency=foreign) in OP_CODES


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_clean_text_gives_upper_case_printable_ascii(text: str) -> None:
    cleaned = clean_text(text)
    assert cleaned.isascii() and cleaned.isprintable()
    assert cleaned == cleaned.upper() == cleaned.strip()
    assert "  " not in cleaned
    assert clean_text(cleaned) == cleaned

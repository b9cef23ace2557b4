"""Interbank operation codes (04/05 positions 33-34) and their choice from aggregator types.

The mapping follows the proposal of ``powens.md`` §9: the aggregator's transaction
``type`` gives the means of payment, the sign of the amount the direction (D/C) and the
upper-cased, transliterated label refines ambiguous cases (first matching rule wins).
When the type alone would give ``99`` (cancellations and adjustments), the label is
classified with woob-style patterns (``VIR`` -> transfer, ``PRLV`` -> direct debit, ``CB``
-> card...) before falling back to ``99``; a label saying ``ANNUL``/``REGUL``/``EXTOURNE``
keeps ``99``, which is what those are. The table is data: pass your own to
:class:`OpCodeMapper` to adapt it per company or bank.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from .text import clean_text

__all__ = [
    "DEFAULT_RULES",
    "OP_CODES",
    "OpCodeMapper",
    "Rule",
    "TypeRules",
    "classify_label",
    "op_code_for",
]

#: Every interbank operation code of the CFONB lists (S2, S1, S4) with its French meaning.
OP_CODES: Final[dict[str, str]] = {
    "01": "Chèques payés",
    "02": "Remises de chèques",
    "03": "Chèques impayés",
    "04": "Versements d'espèces",
    "05": "Virements reçus",
    "06": "Virements émis",
    "07": "LCR/BOR domiciliés",
    "08": "Prélèvements, TIP, télérèglements domiciliés",
    "09": "Prélèvements, TIP, télérèglements émis",
    "10": "Prélèvements, TIP rejetés ou impayés",
    "11": "Relevés de cartes (paiements, retraits)",
    "12": "Rejets et retours de virements",
    "13": "Virements de trésorerie reçus",
    "14": "Virements de trésorerie émis",
    "15": "Remises de chèques sur caisse",
    "16": "Remises de chèques sur rayon",
    "17": "Remises de chèques hors rayon",
    "18": "Autres virements reçus",
    "19": "Virements à échéance émis (E-2)",
    "20": "Virements à échéance émis (E-3)",
    "21": "Autres virements émis",
    "22": "TIP domiciliés",
    "23": "Prélèvements domiciliés",
    "24": "TIP émis",
    "25": "Prélèvements émis",
    "26": "TIP rejetés ou impayés",
    "27": "Prélèvements rejetés ou impayés",
    "28": "Factures cartes payées",
    "29": "Retraits DAB-GAB",
    "30": "Factures cartes remises",
    "31": "Effets remis à l'encaissement",
    "32": "Remises à l'escompte",
    "33": "Effets impayés",
    "34": "Incidents sur effets",
    "35": "LCR/BOR remis à l'encaissement",
    "36": "Factures cartes de crédit remises",
    "37": "LCR/BOR remis à l'escompte",
    "38": "Factures cartes de crédit impayées",
    "39": "Virements d'origine externe reçus",
    "40": "Virements EDI reçus",
    "41": "Transferts de ou vers l'étranger",
    "42": "Achats et ventes de devises",
    "43": "Autres opérations avec l'étranger",
    "44": "Virements internationaux émis",
    "45": "Virements internationaux reçus",
    "46": "Achats de devises au comptant",
    "47": "Ventes de devises au comptant",
    "48": "Livraisons de devises à terme (débit)",
    "49": "Livraisons de devises à terme (crédit)",
    "50": "Virements EDI émis",
    "51": "Achats et ventes de titres",
    "52": "Autres opérations sur titres",
    "53": "Achats et souscriptions VM/BF",
    "54": "Ventes VM/BF",
    "55": "Soldes de liquidation BF",
    "56": "Achats d'OPCVM",
    "57": "Ventes d'OPCVM",
    "58": "Achats de TCN",
    "59": "Ventes de TCN",
    "61": "Intérêts et agios",
    "62": "Commissions et frais divers",
    "63": "Produits financiers",
    "64": "Commissions TTC",
    "65": "Commissions HT",
    "66": "Commissions non soumises à TVA",
    "67": "Taxes",
    "68": "Autres opérations avec l'étranger (débit)",
    "69": "Autres opérations avec l'étranger (crédit)",
    "70": "Frais financiers",
    "71": "Tirages de crédits",
    "72": "Échéances de crédits",
    "73": "Émissions de titres",
    "74": "Émissions de créances",
    "75": "Remboursements",
    "76": "Placements à terme",
    "77": "Échéances de placements à terme",
    "78": "Virements référencés reçus",
    "79": "Virements référencés émis",
    "80": "Autres achats de titres de créances",
    "81": "Autres ventes de titres de créances",
    "82": "Contrats et options (débit)",
    "83": "Contrats et options (crédit)",
    "84": "Achats sur bourses étrangères",
    "85": "Ventes sur bourses étrangères",
    "86": "Opérations sur titres",
    "87": "Revenus sur titres",
    "88": "Droits de garde et commissions",
    "89": "Remboursements d'impôts étrangers",
    "90": "Factures acceptées à échéance émises",
    "91": "Opérations diverses",
    "92": "Centralisation des recettes",
    "93": "Centralisation des dépenses",
    "94": "Centralisation de trésorerie (crédit)",
    "95": "Centralisation de trésorerie (débit)",
    "96": "Télérèglements domiciliés",
    "97": "Télérèglements émis",
    "98": "Télérèglements rejetés",
    "99": "Annulations et régularisations",
    "A1": "Prélèvements SEPA CORE émis",
    "A2": "Prélèvements SEPA B2B émis",
    "A3": "Prélèvements SEPA CORE rejetés ou impayés (créancier)",
    "A4": "Prélèvements SEPA B2B rejetés ou impayés (créancier)",
    "A5": "Reversements SEPA CORE émis par le créancier",
    "A6": "Reversements SEPA B2B émis par le créancier",
    "B1": "Prélèvements SEPA CORE domiciliés",
    "B2": "Prélèvements SEPA B2B domiciliés",
    "B3": "Prélèvements SEPA CORE rejetés ou impayés reçus",
    "B4": "Prélèvements SEPA B2B rejetés ou impayés reçus",
    "B5": "Reversements SEPA CORE reçus par le débiteur",
    "B6": "Reversements SEPA B2B reçus par le débiteur",
    "C1": "Virements SEPA instantanés émis",
    "C2": "Virements SEPA instantanés reçus",
    "C3": "Rappel de virement instantané : crédit du donneur d'ordre",
    "C4": "Rappel de virement instantané : débit du bénéficiaire",
    "C5": "Rappel de virement instantané : recrédit du donneur d'ordre",
}

#: A refinement: a regular expression searched in the cleaned label, and its code.
Rule = tuple[str, str]


@dataclass(frozen=True, slots=True)
class TypeRules:
    """Codes of one aggregator type: default and refinements for debits and credits."""

    debit: str
    credit: str
    debit_rules: Sequence[Rule] = ()
    credit_rules: Sequence[Rule] = ()


# Word boundaries matter: "CB" must not match inside "ACBA", "VIR" inside "ENVIRON".
_INST = r"\bVIR(EMENT)?\.? ?(SEPA )?INST"
_CARD = r"\b(CB|CARTE|CARD)\b"

#: Default table, keyed by Powens ``type`` (aliases included).
DEFAULT_RULES: Final[dict[str, TypeRules]] = {
    "transfer": TypeRules(
        "06",
        "05",
        (
            (_INST, "C1"),
            (r"\bINTERNATIONAL|\bVIR(EMENT)? (INTL|ETRANGER|SWIFT)\b", "44"),
        ),
        (
            (_INST, "C2"),
            (r"\bINTERNATIONAL|\bVIR(EMENT)? (INTL|ETRANGER|SWIFT)\b", "45"),
            (r"\bREJET|\bRETOUR\b", "12"),
        ),
    ),
    "order": TypeRules(
        "B1",
        "B5",
        (
            (r"\bREJET|\bIMPAYE", "A3"),
            (r"\bB2B\b|INTERENTREPRISE|INTER-ENTREPRISE", "B2"),
            (r"\bTIP\b", "22"),
            (r"\bTELEREGLEMENT|\bTLR\b", "96"),
        ),
        (
            (r"\bREM(ISE)?\.? (DE )?PRLV|\bREM(ISE)?\.? (DE )?PRELEVEMENT", "A1"),
            (r"\bREJET|\bIMPAYE", "10"),
            (r"\bB2B\b|INTERENTREPRISE|INTER-ENTREPRISE", "B6"),
        ),
    ),
    "check": TypeRules(
        "01",
        "02",
        ((r"\bIMPAYE|\bREJET", "03"),),
    ),
    "deposit": TypeRules(
        "99",
        "04",
        (),
        (
            (r"\bCHQ\b|\bCHEQUE", "02"),
            (_CARD, "30"),
        ),
    ),
    "payback": TypeRules("99", "99", (), ((_CARD, "11"),)),
    "withdrawal": TypeRules("29", "99"),
    "loan_payment": TypeRules("72", "71"),
    "bank": TypeRules(
        "62",
        "99",
        (
            (r"\bAGIOS?\b|\bINTERETS? DEB|\bINT\.? DEB", "61"),
            (r"\bCOTIS", "64"),
        ),
        ((r"\bINTERETS?\b|\bINT\.? CRED", "63"),),
    ),
    "card": TypeRules("11", "11"),
    "deferred_card": TypeRules("11", "11"),
    "summary_card": TypeRules("11", "11"),
    "market_order": TypeRules("51", "51"),
    "arbitrage": TypeRules("52", "52"),
    "market_fee": TypeRules("88", "99"),
    "profit": TypeRules("87", "87"),
    "payout": TypeRules("06", "05"),
    "payment": TypeRules("06", "05"),
    "unknown": TypeRules("99", "99"),
}
DEFAULT_RULES["refund"] = DEFAULT_RULES["payback"]
DEFAULT_RULES["loan_repayment"] = DEFAULT_RULES["loan_payment"]
DEFAULT_RULES["fee"] = DEFAULT_RULES["bank"]
DEFAULT_RULES["card_summary"] = DEFAULT_RULES["summary_card"]

#: woob-style label classification, used when the type alone gives 99 (first match wins).
LABEL_TYPES: Final[tuple[tuple[str, str], ...]] = (
    (r"\bANNUL|\bREGUL|\bEXTOURNE|\bCONTRE-PASSATION", "unknown"),
    (r"\bRETRAIT|\bDAB\b|\bGAB\b", "withdrawal"),
    (r"\bVIR(EMENT)?\b|" + _INST, "transfer"),
    (r"\bPRLV\b|\bPRELEVEMENT|\bTIP\b|\bTELEREGLEMENT|\bTLR\b", "order"),
    (r"\bREM(ISE)?\.? (DE )?(CHQ|CHEQUE)", "deposit"),
    (r"\bCHQ\b|\bCHEQUE", "check"),
    (r"\bREM(ISE)?\.? (DE )?(CB|CARTE)", "deposit"),
    (r"\bECH(EANCE)?\.? PRET|\bREMB(OURSEMENT)?\.? PRET|\bECHEANCE CREDIT", "loan_payment"),
    (r"\bAGIOS?\b|\bFRAIS\b|\bCOMMISSIONS?\b|\bCOTIS|\bINTERETS?\b", "bank"),
    (r"\bVERSEMENT|\bVERS\.? ESP|\bDEPOT\b", "deposit"),
    (_CARD, "card"),
)


def _compile(rules: Sequence[Rule]) -> tuple[tuple[re.Pattern[str], str], ...]:
    return tuple((re.compile(pattern), code) for pattern, code in rules)


@dataclass(frozen=True, slots=True)
class _Compiled:
    debit: str
    credit: str
    debit_rules: tuple[tuple[re.Pattern[str], str], ...]
    credit_rules: tuple[tuple[re.Pattern[str], str], ...]


@dataclass(slots=True)
class OpCodeMapper:
    """Chooses the operation code of a movement from the aggregator's type and label."""

    rules: Mapping[str, TypeRules] = field(default_factory=lambda: dict(DEFAULT_RULES))
    label_types: Sequence[tuple[str, str]] = LABEL_TYPES
    _compiled: dict[str, _Compiled] = field(init=False, repr=False)
    _label_types: tuple[tuple[re.Pattern[str], str], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name, rules in self.rules.items():
            for code in (rules.debit, rules.credit, *(c for _, c in rules.debit_rules)):
                if code not in OP_CODES:
                    raise ValueError(f"type {name!r}: unknown operation code {code!r}")
            for _, code in rules.credit_rules:
                if code not in OP_CODES:
                    raise ValueError(f"type {name!r}: unknown operation code {code!r}")
        self._compiled = {
            name: _Compiled(r.debit, r.credit, _compile(r.debit_rules), _compile(r.credit_rules))
            for name, r in self.rules.items()
        }
        self._label_types = _compile(self.label_types)

    def classify(self, label: str) -> str | None:
        """Guess the aggregator type from a label, or ``None`` when it says nothing."""
        return self._classify(clean_text(label))

    def _classify(self, text: str) -> str | None:
        for pattern, kind in self._label_types:
            if pattern.search(text):
                return kind
        return None

    def _code(self, kind: str, debit: bool, text: str, card: bool) -> str:
        compiled = self._compiled.get(kind) or self._compiled["unknown"]
        for pattern, code in compiled.debit_rules if debit else compiled.credit_rules:
            if pattern.search(text):
                return code
        if card and kind in ("payback", "refund"):
            return "11"
        return compiled.debit if debit else compiled.credit

    def code(
        self,
        transaction_type: str | None,
        amount: int,
        label: str = "",
        *,
        card: bool = False,
        foreign_currency: bool = False,
    ) -> str:
        """Return the operation code of a movement.

        ``transaction_type`` is the aggregator's type (``None`` or unknown = ``"unknown"``),
        ``amount`` the signed amount (negative = debit), ``label`` the raw bank label
        (Powens ``original_wording``), ``card`` whether the transaction carries a card
        number, ``foreign_currency`` whether it was made in another currency than the
        account's (a transfer then becomes an international one, 44/45).
        """
        debit = amount < 0
        text = clean_text(label)
        kind = (transaction_type or "unknown").lower()
        if kind not in self._compiled:
            kind = "unknown"
        code = self._code(kind, debit, text, card)
        if code == "99":
            guessed = self._classify(text)
            if guessed is not None and guessed != "unknown" and guessed != kind:
                code = self._code(guessed, debit, text, card)
        if foreign_currency and code in ("05", "06"):
            code = "44" if debit else "45"
        return code


_DEFAULT_MAPPER: Final = OpCodeMapper()


def classify_label(label: str) -> str | None:
    """Guess the aggregator type of a label with the default patterns."""
    return _DEFAULT_MAPPER.classify(label)


def op_code_for(
    transaction_type: str | None,
    amount: int,
    label: str = "",
    *,
    card: bool = False,
    foreign_currency: bool = False,
) -> str:
    """Operation code from the default table; see :meth:`OpCodeMapper.code`."""
    return _DEFAULT_MAPPER.code(
        transaction_type, amount, label, card=card, foreign_currency=foreign_currency
    )

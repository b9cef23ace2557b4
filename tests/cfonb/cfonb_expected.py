"""The statements of the golden files, built by hand from what each record says."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path

from releves_mailer.cfonb import Account, Complement, Movement, Statement
from releves_mailer.cfonb import complements as c

GOLDEN = Path(__file__).parent / "golden"

ACCOUNT_A = Account("30006", "00001", "12345678901", "EUR")

EUR_BASIC = (
    Statement(
        ACCOUNT_A,
        date(2023, 12, 31),
        123456,
        date(2024, 1, 31),
        101852741,
        (
            Movement(
                date(2024, 1, 5),
                -1904,
                "PRLV SEPA EDF",
                "B1",
                value_date=date(2024, 1, 5),
                entry_number="0000001",
                complements=(
                    Complement("NBE", "EDF SA"),
                    Complement("RUM", "RUM123" + " " * 29 + "RCUR"),
                ),
            ),
            Movement(
                date(2024, 1, 6),
                101731189,
                "VIR SEPA CLIENT DUPONT",
                "05",
                value_date=date(2024, 1, 7),
                entry_number="0000002",
            ),
        ),
    ),
)

XPF = (
    Statement(
        Account("14889", "00010", "08123456789", "XPF"),
        date(2024, 6, 30),
        150000,
        date(2024, 7, 31),
        74494,
        (
            Movement(
                date(2024, 7, 1),
                -85000,
                "VIR LOYER JUILLET",
                "06",
                value_date=date(2024, 7, 1),
                entry_number="0000001",
            ),
            Movement(
                date(2024, 7, 3),
                -2507,
                "CB SUPERETTE NOUMEA",
                "11",
                value_date=date(2024, 7, 2),
                entry_number="0000002",
            ),
            Movement(
                date(2024, 7, 5),
                12001,
                "VIR CLIENT",
                "05",
                value_date=date(2024, 7, 5),
                entry_number="0000003",
            ),
        ),
    ),
)

KWD = (
    Statement(
        Account("00000", "00000", "01234560101", "KWD"),
        date(2024, 12, 31),
        1234,
        date(2025, 1, 31),
        2000857,
        (
            Movement(
                date(2025, 1, 2),
                -500,
                "FRAIS TENUE DE COMPTE",
                "62",
                value_date=date(2025, 1, 2),
                entry_number="0000001",
            ),
            Movement(
                date(2025, 1, 15),
                2000123,
                "INTL TRANSFER RECEIVED",
                "45",
                value_date=date(2025, 1, 16),
                entry_number="0000002",
                complements=(Complement("MMO", "EUR2000000006000000600000333354"),),
            ),
        ),
    ),
)

LONG_LABEL_1 = (
    "VIREMENT SEPA EMIS VERS SARL LES JARDINS DE PROVENCE POUR LA FACTURE NUMERO"
    " 2024-0042 DU 15 AVRIL 2024 ECHEANCE 30 JOURS FIN DE MOIS"
)
REMITTANCE = (
    "FACTURE 2024-0042 DU 15 AVRIL 2024 - TRAVAUX D ENTRETIEN DES ESPACES VERTS DU SIEGE"
    " SOCIAL ET DES ENTREPOTS"
)
LONG_LABELS = (
    Statement(
        Account("10278", "06076", "00020156101", "EUR"),
        date(2024, 4, 30),
        -25000,
        date(2024, 5, 31),
        -123517999,
        (
            Movement(
                date(2024, 5, 2),
                -123456789,
                LONG_LABEL_1,
                "06",
                value_date=date(2024, 5, 2),
                entry_number="0001234",
                complements=(
                    Complement("NBE", "SARL LES JARDINS DE PROVENCE"),
                    Complement("LCC", REMITTANCE[:70]),
                    Complement("LC2", REMITTANCE[70:]),
                    Complement("RCN", "E2E-2024-0042" + " " * 22 + "SUPP"),
                    Complement("REF", "PMTINF-001" + " " * 25 + "INSTR-0042"),
                ),
            ),
            Movement(
                date(2024, 5, 3),
                -45000,
                "PRLV SEPA URSSAF",
                "B1",
                value_date=date(2024, 5, 3),
                entry_number="0000002",
                complements=(
                    Complement("NBE", "URSSAF ILE DE FRANCE"),
                    Complement("IBE", "FR63ZZZ008085"),
                    Complement("RUM", "URSSAF-2023-XYZ" + " " * 20 + "RCUR"),
                ),
            ),
            Movement(
                date(2024, 5, 4),
                8790,
                "REMBOURSEMENT NOTE DE FRAIS DE MARS 2024 MISSION LYON",
                "C2",
                value_date=date(2024, 5, 4),
                entry_number="0000003",
                complements=(Complement("NPY", "JEAN DUPONT"),),
            ),
        ),
    ),
)

EMPTY_PERIOD = (
    Statement(
        Account("30004", "00828", "00010661537", "EUR"),
        date(2024, 5, 31),
        50000000,
        date(2024, 6, 30),
        50000000,
    ),
)

_BAKERY = Movement(
    date(2024, 2, 2),
    -450,
    "CB BOULANGERIE",
    "11",
    value_date=date(2024, 2, 1),
    entry_number="0000001",
)
MULTI = (
    Statement(
        ACCOUNT_A,
        date(2024, 2, 1),
        10000,
        date(2024, 2, 2),
        9100,
        (_BAKERY, replace(_BAKERY, entry_number="0000002")),
    ),
    Statement(
        Account("10107", "00175", "0004011234H", "EUR"),
        date(2024, 2, 2),
        -1,
        date(2024, 2, 3),
        -100,
        (
            Movement(
                date(2024, 2, 3),
                -99,
                "AGIOS",
                "61",
                value_date=date(2024, 2, 3),
                entry_number="0000001",
            ),
        ),
    ),
    Statement(
        ACCOUNT_A,
        date(2024, 2, 2),
        9100,
        date(2024, 2, 3),
        209100,
        (
            Movement(
                date(2024, 2, 3),
                200000,
                "VIR SALAIRE",
                "05",
                value_date=date(2024, 2, 3),
                entry_number="0000001",
            ),
        ),
    ),
)

#: golden file -> its statements (files the writer must reproduce byte for byte).
WRITTEN = {
    "eur_basic.cfonb": EUR_BASIC,
    "xpf.cfonb": XPF,
    "kwd.cfonb": KWD,
    "long_labels.cfonb": LONG_LABELS,
    "empty_period.cfonb": EMPTY_PERIOD,
    "multi.cfonb": MULTI,
}

#: The MMO of kwd.cfonb, as the builder should produce it.
KWD_MMO = c.original_amount("EUR", 600000, Decimal("0.333354"))

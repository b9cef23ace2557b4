"""Reader: real-world variants, strict deviations with their places, fatal errors."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest
from cfonb_expected import EUR_BASIC, GOLDEN, LONG_LABELS, MULTI

from releves_mailer.cfonb import CfonbReadError, Deviation, check, parse, read


def text(name: str) -> str:
    with open(GOLDEN / name, encoding="ascii", newline="") as handle:
        return handle.read()


EUR = text("eur_basic.cfonb")


@pytest.mark.parametrize(
    "variant",
    [
        EUR.replace("\n", "\r\n"),
        EUR.replace("\n", "\r"),
        EUR.replace("\n", ""),  # no separator at all
        EUR[:-1],  # no terminator after the last record
    ],
    ids=["crlf", "cr", "no-separator", "no-final-newline"],
)
def test_separators_are_not_deviations(variant: str) -> None:
    assert check(variant) == ()
    assert read(variant, strict=True) == EUR_BASIC


def test_reads_an_open_file(tmp_path: object) -> None:
    with open(GOLDEN / "multi.cfonb", encoding="ascii") as handle:
        assert read(handle, strict=True) == MULTI


def test_no_separator_reports_record_numbers() -> None:
    glued = EUR.replace("\n", "")
    broken = glued[: 120 * 4 + 2] + "X" + glued[120 * 4 + 3 :]  # bank code of record 5
    assert check(broken) == (
        Deviation(
            5,
            3,
            "banque, guichet, devise ou compte différent de ceux de l'ancien solde (ligne 1)",
            fatal=True,
        ),
        Deviation(5, 3, "code banque 'X0006' : 5 chiffres attendus"),
        # The movement could not be kept: its 07 cannot add up, which is not reported again.
    )


def test_bank_variants_are_read_leniently() -> None:
    (statement,) = read(text("bank_variants.cfonb"))
    (expected,) = EUR_BASIC
    first = replace(expected.movements[0], label="Prlv Sepa Edf")
    assert statement == replace(expected, movements=(first, expected.movements[1]))


def test_bank_variants_deviations_are_located() -> None:
    found = [(d.line, d.column, d.fatal) for d in check(text("bank_variants.cfonb"))]
    assert found == [
        (1, 105, False),  # CM-CIC period in the reserved zone of the 01
        (2, 21, False),  # legacy "E"
        (2, 50, False),  # lowercase label ("Prlv")
        (2, 105, False),  # trailing blanks trimmed: 104 characters
        (3, 55, False),  # 54 characters
        (5, 21, False),
        (6, 105, False),
    ]
    with pytest.raises(CfonbReadError) as caught:
        read(text("bank_variants.cfonb"), strict=True)
    assert len(caught.value.deviations) == 7
    assert "ligne 2, colonne 21" in str(caught.value)


def test_invalid_file_deviations() -> None:
    result = parse(text("invalid.cfonb"))
    found = [(d.line, d.column, d.fatal) for d in result.deviations]
    assert found == [
        (2, 91, True),  # amount ending with Z (its 05 on line 3 still belongs to it)
        (4, 33, False),  # op code ZZ
        (4, 89, False),  # exemption index X
        (5, 1, True),  # record code 06
        # Line 6: no balance deviation, the movement of line 2 could not be read.
        (7, 1, False),  # blank line
        (8, 1, True),  # 04 outside a statement
        (9, 1, True),  # 01 never closed
        (9, 3, False),  # bank code 3000A
    ]
    messages = [d.message for d in result.deviations]
    assert "'ZZ'" in messages[1]
    with pytest.raises(CfonbReadError):
        read(text("invalid.cfonb"))
    # What could be read is still given.
    (statement,) = result.statements
    assert statement.closing_balance == 9600 and len(statement.movements) == 1


def record(code: str, rest: str) -> str:
    return (code + rest).ljust(120)


def test_label_rebuilt_from_lib_records() -> None:
    (statement,) = read(text("long_labels.cfonb"), strict=True)
    assert statement.movements[0].label == LONG_LABELS[0].movements[0].label
    # The cut fell on a blank: "... FRAIS DE " + "MARS 2024 ...".
    assert statement.movements[2].label.endswith("FRAIS DE MARS 2024 MISSION LYON")


def test_bank_lib_after_a_short_label_joins_with_one_blank() -> None:
    lines = EUR.split("\n")
    lib = lines[2][:45] + "LIB" + "FACTURE 12".ljust(70) + "  "
    (statement,) = read("\n".join([lines[0], lines[1], lib, *lines[2:]]), strict=True)
    assert statement.movements[0].label == "PRLV SEPA EDF FACTURE 12"


def test_unknown_qualifier_is_kept() -> None:
    lines = EUR.split("\n")
    extra = lines[2][:45] + "PDO" + "FR FRANCE".ljust(70) + "  "
    result = parse("\n".join([lines[0], lines[1], extra, *lines[2:]]))
    assert [(d.line, d.column) for d in result.deviations] == [(3, 46)]
    assert result.statements[0].movements[0].complements[0].data == "FR FRANCE"


def test_rum_sub_layout() -> None:
    lines = EUR.split("\n")
    rum = lines[3][:48] + "RUM123".ljust(35) + "XXXX" + "Y".rjust(31) + "  "
    found = [(d.line, d.column) for d in check("\n".join([*lines[:3], rum, *lines[4:]]))]
    assert found == [(4, 84), (4, 118)]


def test_decimals_and_currency_variants() -> None:
    lines = EUR.split("\n")
    # Blank decimals and a 3-decimal amount in the 04: converted to EUR cents.
    opening = lines[0][:19] + " " + lines[0][20:]
    debit = lines[1][:19] + "3" + lines[1][20:90] + "0000000001904}" + lines[1][104:]
    result = parse("\n".join([opening, debit, *lines[2:]]))
    # The 05 records no longer repeat their 04 at position 20.
    assert [(d.line, d.column) for d in result.deviations] == [(1, 20), (2, 20), (3, 20), (4, 20)]
    assert result.statements[0].movements[0].amount == -1904


def test_amount_not_representable_in_currency_decimals_is_fatal() -> None:
    lines = EUR.split("\n")
    debit = lines[1][:19] + "3" + lines[1][20:90] + "0000000001904J" + lines[1][104:]
    result = parse("\n".join([lines[0], debit, *lines[2:]]))
    assert (2, 91, True) in [(d.line, d.column, d.fatal) for d in result.deviations]


def test_complement_zones_must_repeat_its_movement() -> None:
    lines = EUR.split("\n")
    wrong = lines[2][:34] + "060124" + lines[2][40:]
    assert [(d.line, d.column) for d in check("\n".join([*lines[:2], wrong, *lines[3:]]))] == [
        (3, 36)  # 050124 -> 060124: the first different character
    ]


def test_account_change_inside_a_statement_is_fatal() -> None:
    lines = EUR.split("\n")
    wrong = lines[1][:31] + "2" + lines[1][32:]
    result = parse("\n".join([lines[0], wrong, *lines[2:]]))
    assert next((d.line, d.column, d.fatal) for d in result.deviations) == (2, 32, True)


def test_broken_chain_between_periods_is_reported() -> None:
    lines = text("multi.cfonb").split("\n")
    lines[7] = lines[7][:90] + "0000000000911{" + lines[7][104:]
    found = [(d.line, d.column) for d in check("\n".join(lines))]
    assert (8, 91) in found


def test_invalid_dates() -> None:
    lines = EUR.split("\n")
    bad = lines[0][:34] + "310223" + lines[0][40:]
    assert next((d.line, d.column, d.fatal) for d in check("\n".join([bad, *lines[1:]]))) == (
        1,
        35,
        True,
    )


def test_century_pivot() -> None:
    lines = EUR.split("\n")
    opening = lines[0][:34] + "311268" + lines[0][40:]
    closing = lines[5][:34] + "010169" + lines[5][40:]
    result = parse("\n".join([opening, *lines[1:5], closing, ""]))
    statement = result.statements[0]
    assert statement.opening_date == date(2068, 12, 31)
    assert statement.closing_date == date(1969, 1, 1)
    assert (6, 35) in [(d.line, d.column) for d in result.deviations]  # 07 before 01


def test_non_ascii_and_control_characters() -> None:
    lines = EUR.split("\n")
    accented = lines[1][:48] + "PRÉLÈVEMENT\tEDF".ljust(31) + lines[1][79:]
    found = [(d.line, d.column) for d in check("\n".join([lines[0], accented, *lines[2:]]))]
    assert found == [(2, 51)]


def test_empty_file() -> None:
    assert [(d.line, d.fatal) for d in check("")] == [(1, True)]
    assert check("\n\n")[0].message == "ligne vide"


def test_unclosed_statement_and_orphan_records() -> None:
    lines = EUR.split("\n")
    result = parse("\n".join(lines[:5]))
    assert [(d.line, d.column, d.fatal) for d in result.deviations] == [(1, 1, True)]
    assert result.statements == ()
    assert [(d.line, d.fatal) for d in check(lines[5])] == [(1, True)]


def test_bom_and_ctrl_z() -> None:
    result = parse("\ufeff" + EUR + "\x1a")
    assert [(d.line, d.column) for d in result.deviations] == [(1, 1), (7, 1)]
    assert result.statements == EUR_BASIC


def test_movement_booked_after_the_period_end() -> None:
    lines = EUR.split("\n")
    late = lines[4][:34] + "010224" + lines[4][40:]
    found = [(d.line, d.column) for d in check("\n".join([*lines[:4], late, *lines[5:]]))]
    assert found == [(5, 35)]


def test_closing_balance_that_is_not_opening_plus_movements() -> None:
    lines = EUR.split("\n")
    closing = lines[5][:90] + "0000010185275A" + lines[5][104:]
    result = parse("\n".join([*lines[:5], closing, ""]))
    assert [(d.line, d.column, d.fatal) for d in result.deviations] == [(6, 91, False)]
    assert result.deviations[0].message == (
        "nouveau solde 1018527,51 différent de l'ancien solde + mouvements = 1018527,41"
    )


def test_orphan_complement() -> None:
    lines = EUR.split("\n")
    result = parse("\n".join([lines[0], lines[2], lines[5], ""]))
    assert [(d.line, d.column, d.fatal) for d in result.deviations][:1] == [(2, 1, True)]
    assert [d.line for d in result.deviations].count(2) == 1


def _bad_movement(zone: slice, value: str) -> str:
    """EUR_BASIC with ``value`` written over ``zone`` of its first 04 only (the 05 records that
    follow it keep their zones)."""
    lines = EUR.split("\n")
    first = lines[1]
    lines[1] = first[: zone.start] + value + first[zone.stop :]
    assert len(lines[1]) == 120
    return "\n".join(lines)


@pytest.mark.parametrize(
    ("zone", "value", "column"),
    [
        (slice(90, 104), "0000000000190Z", 91),  # amount: no overpunch Z
        (slice(34, 40), "320124", 35),  # booking date (repeated by the 05 records)
        (slice(42, 48), "050A24", 43),  # value date
        (slice(19, 20), "X", 20),  # number of decimals
        (slice(31, 32), "2", 32),  # another account than the 01's
    ],
    ids=["amount", "booking-date", "value-date", "decimals", "account"],
)
def test_one_bad_field_in_a_movement_is_one_deviation(zone: slice, value: str, column: int) -> None:
    """The 05 records of an unreadable 04 still belong to it: neither orphans, nor compared
    with the 04 zone in doubt; the 07 balance, which cannot agree, is not reported either."""
    result = parse(_bad_movement(zone, value))
    assert [(d.line, d.column, d.fatal) for d in result.deviations] == [(2, column, True)]
    # The rest of the file is read: the statement with its other movement.
    (statement,) = result.statements
    assert [m.label for m in statement.movements] == ["VIR SEPA CLIENT DUPONT"]
    assert statement.closing_balance == EUR_BASIC[0].closing_balance


def test_complements_of_an_unreadable_movement_are_still_checked() -> None:
    lines = _bad_movement(slice(90, 104), "0000000000190Z").split("\n")
    lines[2] = lines[2][:45] + "XYZ" + lines[2][48:]  # unknown qualifier
    lines[3] = lines[3][:2] + "30007" + lines[3][7:]  # not the 04's bank code
    found = [(d.line, d.column) for d in parse("\n".join(lines)).deviations]
    assert found == [(2, 91), (3, 46), (4, 7)]

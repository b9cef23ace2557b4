"""Writer: record layout details, refusals, streaming."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal

import pytest

from releves_mailer.cfonb import (
    Account,
    CfonbWriteError,
    Complement,
    Movement,
    Statement,
    check,
    dumps,
    iter_records,
    read,
    stream_statement,
    write_statement,
)
from releves_mailer.cfonb import complements as c

ACCOUNT = Account("30006", "00001", "12345678901", "EUR")
OPENING, CLOSING = date(2024, 1, 31), date(2024, 2, 29)


def movement(**changes: object) -> Movement:
    base = Movement(date(2024, 2, 5), -1904, "PRLV SEPA EDF", "B1")
    return replace(base, **changes)  # type: ignore[arg-type]


def one(*movements: Movement, opening: int = 0) -> Statement:
    return Statement.build(ACCOUNT, OPENING, opening, CLOSING, movements)


def records(*movements: Movement) -> list[str]:
    return list(iter_records([one(*movements)]))


def test_transliterated_upper_case_label() -> None:
    record = records(movement(label="Café Müller\tÆrø — 北京"))[1]
    assert record[48:79] == "CAFE MULLER AERO - BEIJING".ljust(31)


def test_control_characters_and_blank_runs() -> None:
    record = records(movement(label="  A\n\n B\x00C\x7f  "))[1]
    assert record[48:79] == "A B C".ljust(31)


def test_long_label_continues_in_lib_records() -> None:
    label = "X" * 31 + "Y" * 70 + "Z" * 5
    lines = records(movement(label=label))
    assert [line[:2] for line in lines] == ["01", "04", "05", "05", "07"]
    assert lines[1][48:79] == "X" * 31
    assert lines[2][45:48] == "LIB" and lines[2][48:118] == "Y" * 70
    assert lines[3][45:48] == "LIB" and lines[3][48:118] == "Z" * 5 + " " * 65
    # 05 records repeat positions 3-40 of their 04 (bank, branch, account, op code, date).
    assert lines[2][2:40] == lines[1][2:40]
    assert lines[2][40:45] == "     " and lines[2][118:] == "  "


def test_optional_zones() -> None:
    record = records(
        movement(
            internal_code="ab12",
            reject_code="05",
            exempt=True,
            unavailable=False,
            reference="ICS FR12ZZZ",
            entry_number="42",
            value_date=date(2024, 2, 7),
        )
    )[1]
    assert record[7:11] == "AB12"
    assert record[40:42] == "05"
    assert record[42:48] == "070224"
    assert record[81:88] == "0000042"
    assert record[88:90] == "10"
    assert record[104:120] == "ICS FR12ZZZ     "


def test_reserved_zones_are_blank() -> None:
    for record in records(movement()):
        assert record[20] == " "
        if record[:2] in ("01", "07"):
            assert record[7:11] == "    " and record[32:34] == "  "
            assert record[40:90].strip() == "" and record[104:].strip() == ""
        else:
            assert record[79:81] == "  "


def test_identical_movements_of_a_day_get_distinct_entry_numbers() -> None:
    lines = records(movement(), movement(), movement())
    numbers = [line[81:88] for line in lines if line.startswith("04")]
    assert numbers == ["0000001", "0000002", "0000003"]


def test_entry_number_from_transaction_id() -> None:
    assert c.entry_number_from_id(123456789012) == "6789012"
    assert c.entry_number_from_id("ab-12") == "000AB12"


def test_zero_and_three_decimal_currencies() -> None:
    for currency, digit in (("XPF", "0"), ("JPY", "0"), ("KWD", "3"), ("TND", "3")):
        account = replace(ACCOUNT, currency=currency)
        statement = Statement.build(account, OPENING, 5, CLOSING, [movement(amount=-7)])
        for record in iter_records([statement]):
            assert record[16:20] == currency + digit
        assert read(dumps([statement]), strict=True) == (
            replace(
                statement,
                movements=(
                    replace(
                        statement.movements[0], value_date=date(2024, 2, 5), entry_number="0000001"
                    ),
                ),
            ),
        )


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (movement(amount=10**14), "limit"),
        (movement(amount=-(10**14)), "limit"),
        (movement(amount=19.04), "int"),
        (movement(op_code="60"), "operation code"),
        (movement(op_code="b1"), "operation code"),
        (movement(booking_date=date(1968, 12, 31)), "ambiguous"),
        (movement(value_date=date(1968, 12, 31)), "ambiguous"),
        (movement(booking_date=date(2024, 3, 1)), "after the period end"),
        (movement(booking_date=datetime(2024, 2, 5, 10, 30)), "datetime.date"),
        (movement(value_date=datetime(2024, 2, 5, 10, 30)), "datetime.date"),
        (movement(entry_number="12345678"), "entry number"),
        (movement(entry_number="12 34"), "entry number"),
        (movement(reject_code="5"), "reject"),
        (movement(internal_code="ABCDE"), "internal code"),
        (movement(reference="R" * 17), "reference"),
        (movement(complements=(Complement("LIB", "free text"),)), "LIB"),
        (movement(complements=(Complement("NB", "X"),)), "qualifier"),
        (movement(complements=(Complement("NBE", "X" * 71),)), "70"),
        (movement(complements=(Complement("RUM", "RUM1" + " " * 31 + "XXXX"),)), "RUM"),
        (movement(complements=(Complement("CPY", "X" * 36),)), "35"),
        (movement(complements=(Complement("PDO", "FR FRANCE"),)), "CFONB list"),
        (movement(complements=(Complement("MMO", "EUR2"),)), "MMO"),
        (movement(complements=(Complement("MMO", "EURX00000000600000"),)), "MMO"),
        (movement(complements=(Complement("MMO", "EUR200000000600000" + "1"),)), "MMO"),
    ],
)
def test_invalid_movement_is_refused(bad: Movement, message: str) -> None:
    with pytest.raises(CfonbWriteError, match=message):
        dumps([one(bad)])


@pytest.mark.parametrize(
    ("account", "message"),
    [
        (Account("3000", "00001", "12345678901", "EUR"), "bank code"),
        (Account("30006", "0000A", "12345678901", "EUR"), "branch code"),
        (Account("30006", "00001", "1234567890", "EUR"), "account number"),
        (Account("30006", "00001", "12345 78901", "EUR"), "account number"),
        (Account("30006", "00001", "12345678901", "XAU"), "currency"),
    ],
)
def test_invalid_account_is_refused(account: Account, message: str) -> None:
    with pytest.raises(CfonbWriteError, match=message):
        dumps([Statement.build(account, OPENING, 0, CLOSING)])


def test_unbalanced_statement_is_refused() -> None:
    statement = replace(one(movement()), closing_balance=0)
    with pytest.raises(CfonbWriteError, match="closing balance"):
        dumps([statement])


def test_opening_after_closing_is_refused() -> None:
    with pytest.raises(CfonbWriteError, match="after closing date"):
        dumps([Statement.build(ACCOUNT, CLOSING, 0, OPENING)])


def test_consecutive_periods_must_chain() -> None:
    first = one(movement())
    second = Statement.build(ACCOUNT, CLOSING, first.closing_balance + 1, date(2024, 3, 31))
    with pytest.raises(CfonbWriteError, match="does not continue"):
        dumps([first, second])
    chained = replace(second, opening_balance=first.closing_balance, closing_balance=-1904)
    assert check(dumps([first, chained])) == ()


def test_newline_choice() -> None:
    with pytest.raises(CfonbWriteError, match="LF or CRLF"):
        dumps([one()], newline="\r")
    text = dumps([one(movement())], newline="\r\n")
    assert text.count("\r\n") == 3 and "\n\n" not in text and text.endswith("\r\n")


def test_dumps_is_all_or_nothing_and_streams_write_whole_records() -> None:
    out = io.StringIO()
    with pytest.raises(CfonbWriteError, match="movement 2"):
        write_statement(out, one(movement(), movement(amount=10**15)))
    assert out.getvalue() == ""  # the batch with the bad movement was never written


class CountingStream:
    def __init__(self) -> None:
        self.writes = 0
        self.characters = 0
        self.biggest = 0

    def write(self, text: str) -> int:
        self.writes += 1
        self.characters += len(text)
        self.biggest = max(self.biggest, len(text))
        return len(text)


def test_stream_statement_consumes_a_generator_in_batches() -> None:
    produced = 0

    def movements() -> Iterator[Movement]:
        nonlocal produced
        for i in range(20_000):
            produced += 1
            yield movement(amount=i - 10_000, booking_date=date(2024, 2, 1 + i % 28))

    out = CountingStream()
    closing = stream_statement(out, ACCOUNT, OPENING, 100, CLOSING, movements())
    assert produced == 20_000
    assert closing == 100 + sum(i - 10_000 for i in range(20_000))
    assert out.characters == 121 * 20_002
    assert out.writes > 20  # batches, not one string
    assert out.biggest <= 121 * 1024


def test_stream_statement_output_reads_back() -> None:
    out = io.StringIO()
    pool = [movement(amount=a) for a in (5, -3, 12)]
    stream_statement(out, ACCOUNT, OPENING, 7, CLOSING, itertools.islice(itertools.cycle(pool), 9))
    (statement,) = read(out.getvalue(), strict=True)
    assert statement.closing_balance == 7 + 3 * (5 - 3 + 12)
    assert [m.entry_number for m in statement.movements] == [f"{i:07d}" for i in range(1, 10)]


def test_mmo_builder_output_is_accepted() -> None:
    mmo = c.original_amount("USD", -123456, Decimal("1.0825"))
    assert mmo.data == "USD2000000001234560400000010825"
    text = dumps([one(movement(complements=(mmo, c.original_amount("JPY", 5000))))])
    assert check(text) == ()


def test_period_end_beyond_2068_is_refused() -> None:
    with pytest.raises(CfonbWriteError, match="ambiguous"):
        dumps([Statement.build(ACCOUNT, OPENING, 0, date(2069, 1, 1))])

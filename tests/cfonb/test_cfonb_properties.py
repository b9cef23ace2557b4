"""Property-based round trip writer -> strict reader, cross-checked with python-cfonb."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal

import pytest
from cfonb.parser.statement import StatementReader
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from releves_mailer.cfonb import (
    AMOUNT_LIMIT,
    CURRENCIES,
    OP_CODES,
    Account,
    Complement,
    Movement,
    Statement,
    check,
    clean_text,
    dumps,
    read,
)
from releves_mailer.cfonb import complements as c
from releves_mailer.cfonb.text import clean_zone
from releves_mailer.cfonb.writer import FIRST_DATE, LAST_DATE

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DIGITS = "0123456789"
ALNUM = DIGITS + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Up to 15 movements of at most L/20 and an opening of at most L/4: every balance fits.
MAX_MOVEMENTS = 15

any_text = st.text(max_size=200)
# Labels: any script, and often long enough for one or more LIB continuations, with blanks
# falling anywhere around the 31/101/171 cuts.
labels = st.one_of(
    st.text(max_size=40),
    st.text(min_size=90, max_size=400),
    st.lists(st.text(ALNUM + "éß", min_size=1, max_size=9), min_size=5, max_size=40).map(" ".join),
)
identifier = st.text(ALNUM + "-/ ", max_size=35)
days = st.dates(FIRST_DATE, LAST_DATE)

complement = st.one_of(
    st.builds(c.payer_name, any_text),
    st.builds(c.beneficiary_name, any_text),
    st.builds(c.ultimate_debtor_name, any_text),
    st.builds(c.end_to_end_reference, identifier, st.text(ALNUM, max_size=4)),
    st.builds(c.payment_references, identifier, identifier),
    st.builds(c.mandate, identifier, st.sampled_from(["", "OOFF", "FRST", "RCUR", "FNAL"])),
    st.builds(c.creditor_identifier, identifier),
    st.builds(c.beneficiary_account, identifier),
    st.builds(c.payer_account, identifier),
)


@st.composite
def movements(draw: st.DrawFn, closing_date: date) -> Movement:
    booking = draw(st.dates(FIRST_DATE, closing_date))
    remittance = draw(st.one_of(st.just(()), st.builds(c.remittance_information, any_text)))
    return Movement(
        booking_date=booking,
        amount=draw(st.integers(-(AMOUNT_LIMIT // 20), AMOUNT_LIMIT // 20)),
        label=draw(labels),
        op_code=draw(st.sampled_from(sorted(OP_CODES))),
        value_date=draw(st.none() | days),
        entry_number=draw(st.just("") | st.text(ALNUM, min_size=1, max_size=7)),
        reject_code=draw(st.just("") | st.text(DIGITS, min_size=2, max_size=2)),
        internal_code=draw(st.just("") | st.text(ALNUM, min_size=1, max_size=4)),
        exempt=draw(st.none() | st.booleans()),
        unavailable=draw(st.none() | st.booleans()),
        reference=draw(st.just("") | st.text(ALNUM + " ", max_size=16)),
        complements=remittance + tuple(draw(st.lists(complement, max_size=4))),
    )


@st.composite
def statements(draw: st.DrawFn, account: Account) -> Statement:
    opening = draw(st.dates(FIRST_DATE, LAST_DATE - timedelta(days=400)))
    closing = opening + timedelta(days=draw(st.integers(0, 400)))
    return Statement.build(
        account,
        opening,
        draw(st.integers(-(AMOUNT_LIMIT // 4), AMOUNT_LIMIT // 4)),
        closing,
        draw(st.lists(movements(closing), max_size=MAX_MOVEMENTS)),
    )


accounts = st.builds(
    Account,
    st.text(DIGITS, min_size=5, max_size=5),
    st.text(DIGITS, min_size=5, max_size=5),
    st.text(ALNUM, min_size=11, max_size=11),
    st.sampled_from(sorted(CURRENCIES)),
)


@st.composite
def files(draw: st.DrawFn) -> tuple[Statement, ...]:
    # Distinct account numbers: python-cfonb merges statements by account number.
    chosen = draw(st.lists(accounts, min_size=1, max_size=3, unique_by=lambda a: a.number))
    result = []
    for account in chosen:
        first = draw(statements(account))
        result.append(first)
        if draw(st.booleans()) and first.closing_date < LAST_DATE - timedelta(days=40):
            # A consecutive period of the same account, chained to the first.
            end = first.closing_date + timedelta(days=draw(st.integers(0, 31)))
            more = draw(st.lists(movements(end), max_size=3))
            result.append(
                Statement.build(account, first.closing_date, first.closing_balance, end, more)
            )
    return tuple(result)


def expected_movement(m: Movement, position: int) -> Movement:
    """What the reader must give back for ``m`` written at ``position``."""
    entry = m.entry_number
    entry = (entry.zfill(7) if entry.isdigit() else entry) if entry else f"{position:07d}"
    return replace(
        m,
        label=clean_text(m.label),
        value_date=m.value_date or m.booking_date,
        entry_number=entry,
        reference=clean_text(m.reference),
        complements=tuple(Complement(x.qualifier, clean_zone(x.data)) for x in m.complements),
    )


def expected(statement: Statement) -> Statement:
    return replace(
        statement,
        movements=tuple(expected_movement(m, i) for i, m in enumerate(statement.movements, 1)),
    )


@SETTINGS
@given(files())
def test_round_trip_through_the_strict_reader(written: tuple[Statement, ...]) -> None:
    text = dumps(written)
    lines = text.split("\n")
    assert lines[-1] == ""
    for line in lines[:-1]:
        assert len(line) == 120
        assert line.isascii() and line.isprintable()
        assert not any(ch.islower() for ch in line)
    assert check(text) == ()
    back = read(text, strict=True)
    assert back == tuple(expected(s) for s in written)
    for statement in back:
        assert statement.opening_balance + sum(m.amount for m in statement.movements) == (
            statement.closing_balance
        )
    assert read(text.replace("\n", "\r\n"), strict=True) == back


@SETTINGS
@given(files())
def test_python_cfonb_reads_the_same_amounts(written: tuple[Statement, ...]) -> None:
    parsed = StatementReader().parse(io.StringIO(dumps(written)))
    by_number: dict[str, list[Statement]] = {}
    for statement in written:
        by_number.setdefault(statement.account.number, []).append(statement)
    assert len(parsed) == len(by_number)
    for theirs in parsed:
        ours = by_number[theirs.account_nb]
        assert len(theirs.lines) == sum(len(s.movements) for s in ours)
        assert theirs.header.bank_code == ours[0].account.bank_code
        assert theirs.header.desk_code == ours[0].account.branch_code
        assert theirs.header.currency_code == ours[0].account.currency
        assert theirs.header.prev_date == ours[0].opening_date.isoformat()
        assert theirs.footer.next_date == ours[-1].closing_date.isoformat()
        decimals = CURRENCIES[ours[0].account.currency]
        if decimals == 0:
            continue  # python-cfonb 2.13 bug, see test_python_cfonb_zero_decimal_bug
        amounts = [m.amount for s in ours for m in s.movements]
        assert [line.amount for line in theirs.lines] == [
            Decimal(a).scaleb(-decimals) for a in amounts
        ]
        assert theirs.header.prev_amount == Decimal(ours[0].opening_balance).scaleb(-decimals)
        assert theirs.footer.next_amount == Decimal(ours[-1].closing_balance).scaleb(-decimals)


def test_python_cfonb_zero_decimal_bug() -> None:
    """python-cfonb 2.13 ``parse_amount`` slices ``amount[:-0]`` (empty) when the
    decimals digit is 0, so every XPF/JPY amount comes out 10^14 too small. Our file is
    right (our reader and the golden xpf.cfonb agree); only this case is skipped above."""
    account = Account("14889", "00010", "08123456789", "XPF")
    statement = Statement.build(account, date(2024, 6, 30), 150000, date(2024, 7, 31))
    (theirs,) = StatementReader().parse(io.StringIO(dumps([statement])))
    assert theirs.header.prev_amount == Decimal(150000).scaleb(-14)
    assert read(dumps([statement]), strict=True)[0].opening_balance == 150000


@pytest.mark.parametrize("amount", [AMOUNT_LIMIT, -AMOUNT_LIMIT, 0, 1, -1])
def test_extreme_balances_round_trip(amount: int) -> None:
    account = Account("30006", "00001", "12345678901", "EUR")
    movement = Movement(date(2024, 1, 2), amount, "X", "91")
    statement = Statement.build(account, date(2024, 1, 1), 0, date(2024, 1, 2), [movement])
    text = dumps([statement])
    assert read(text, strict=True)[0].closing_balance == amount
    (theirs,) = StatementReader().parse(io.StringIO(text))
    assert theirs.lines[0].amount == Decimal(amount).scaleb(-2)

"""The test bank: deterministic, realistic calendar, every lifecycle case and error reachable."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict

import pytest
from stdnum import iban as stdnum_iban

from releves_mailer.aggregators.testbank import TestBank, TestBankToken, parse_scheduled_error
from releves_mailer.clock import PARIS, ManualClock
from releves_mailer.collect.calendar import is_business_day
from releves_mailer.collect.errors import ERROR_CODES
from releves_mailer.collect.provider import Provider, ProviderError, ProviderTransaction

START = dt.datetime(2026, 1, 5, 2, 0, tzinfo=dt.UTC)


def paris(day: dt.date, hour: int = 3) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), tzinfo=PARIS)


async def history(bank: TestBank, customer: str, days: int = 90) -> list[list[ProviderTransaction]]:
    """Daily full reads (window from the history start) over ``days`` nights."""
    access, token = bank.open_connection(customer)
    clock = bank.clock
    assert isinstance(clock, ManualClock)
    reads = []
    for _ in range(days):
        clock.advance(dt.timedelta(days=1))
        reads.append(list(await bank.fetch_transactions(access, min_date=token.epoch)))
    return reads


def test_is_a_provider() -> None:
    assert isinstance(TestBank(ManualClock(START)), Provider)


async def test_same_seed_same_clock_same_data() -> None:
    first = TestBank(ManualClock(START), seed=7)
    second = TestBank(ManualClock(START), seed=7)
    other = TestBank(ManualClock(START), seed=8)
    a = await history(first, "123456789", 20)
    b = await history(second, "123456789", 20)
    c = await history(other, "123456789", 20)
    assert a == b
    assert a != c
    assert len(a[-1]) > 50


async def test_accounts_are_valid_french_ibans_of_several_kinds() -> None:
    bank = TestBank(ManualClock(START))
    kinds: Counter[tuple[str, str]] = Counter()
    for customer in range(30):
        access, _ = bank.open_connection(f"c{customer}")
        accounts = await bank.list_accounts(access)
        assert accounts[0].type == "checking"
        assert accounts[0].currency == "EUR"
        for account in accounts:
            assert account.iban is not None
            assert stdnum_iban.is_valid(account.iban)
            assert account.iban.startswith("FR76" + "13026") or account.iban[:2] == "FR"
            assert account.iban[4:9] == "13026"
            assert isinstance(account.balance, int)
            kinds[(account.type, account.currency)] += 1
    assert set(kinds) == {
        ("checking", "EUR"),
        ("checking", "USD"),
        ("card", "EUR"),
        ("savings", "EUR"),
    }


async def test_no_posting_on_weekends_or_holidays_and_nothing_shown_before_its_time() -> None:
    clock = ManualClock(START)
    bank = TestBank(clock)
    reads = await history(bank, "555444333", 120)
    booked = {t.booking_date for read in reads for t in read}
    assert booked
    assert all(is_business_day(day) for day in booked)
    # Easter Monday 2026 (6 April) sits in the window and has nothing booked.
    assert dt.date(2026, 4, 6) not in booked
    # Card payments happen on weekends (real date) but are booked on business days.
    assert any(t.real_date and not is_business_day(t.real_date) for t in reads[-1])
    # Nothing dated in the future is shown, except pending items with their expected date.
    for read, night in zip(reads, range(1, 121), strict=True):
        today = (START + dt.timedelta(days=night)).astimezone(PARIS).date()
        assert all(t.coming or t.booking_date <= today for t in read)


async def test_lifecycles_pending_booked_deleted_late() -> None:
    clock = ManualClock(START)
    bank = TestBank(clock)
    seen: dict[str, list[ProviderTransaction]] = defaultdict(list)
    for customer in ("111111111", "222222222"):
        for read in await history(bank, customer, 100):
            for transaction in read:
                versions = seen[transaction.provider_id]
                if not versions or versions[-1] != transaction:
                    versions.append(transaction)
        clock.set(START)
    flips = [v for v in seen.values() if v[0].coming and any(not t.coming for t in v)]
    assert flips, "a pending row booked under the same id"
    assert any(v[0].amount != v[-1].amount for v in flips), "same id, another amount"
    pending_deleted = [v for v in seen.values() if v[0].coming and v[-1].deleted_at is not None]
    assert pending_deleted, "a pending row deleted (replaced or released)"
    booked_ids = {pid for pid, v in seen.items() if not v[-1].coming}
    replaced = [v for v in pending_deleted if v[0].provider_id + "b" in booked_ids]
    assert replaced, "a pending row replaced by a booked row under a new id"
    assert any(v[0].amount != seen[v[0].provider_id + "b"][-1].amount for v in replaced), (
        "a replacement with another amount"
    )
    deleted_after_booked = [
        v for v in seen.values() if not v[0].coming and v[-1].deleted_at is not None
    ]
    assert deleted_after_booked, "a booked row deleted after having been seen"


async def test_late_postings_are_back_dated_and_missed_by_a_cursor_alone() -> None:
    clock = ManualClock(START)
    bank = TestBank(clock)
    access, _ = bank.open_connection("999888777")
    cursor = clock.now()
    by_cursor: dict[str, ProviderTransaction] = {}
    for _ in range(60):
        clock.advance(dt.timedelta(days=1))
        for transaction in await bank.fetch_transactions(access, changed_since=cursor):
            by_cursor[transaction.provider_id] = transaction
        cursor = clock.now()
    full = {
        t.provider_id: t
        for t in await bank.fetch_transactions(access, min_date=START.date())
        if t.last_update > START
    }
    missed = set(full) - set(by_cursor)
    assert missed, "some rows carry a last_update older than when they appeared"
    for provider_id in missed:
        assert not full[provider_id].coming


async def test_changed_since_and_window_filters() -> None:
    clock = ManualClock(START + dt.timedelta(days=30))
    bank = TestBank(clock)
    access, _ = bank.open_connection("123123123")
    since = clock.now() - dt.timedelta(days=3)
    changed = await bank.fetch_transactions(access, changed_since=since)
    assert changed
    assert all(t.last_update > since for t in changed)
    low, high = dt.date(2026, 1, 20), dt.date(2026, 1, 25)
    window = await bank.fetch_transactions(access, min_date=low, max_date=high)
    assert window
    assert all(low <= t.booking_date <= high for t in window)
    with pytest.raises(ValueError, match="cursor or a date window"):
        await bank.fetch_transactions(access)


@pytest.mark.parametrize("code", sorted(ERROR_CODES))
async def test_every_error_code_can_be_scheduled(code: str) -> None:
    clock = ManualClock(paris(dt.date(2026, 3, 11)))
    bank = TestBank(clock)
    schedule = [parse_scheduled_error(f"{code}@2026-03-12..2026-03-13")]
    access, _ = bank.open_connection("123456789", errors=schedule)
    assert (await bank.connection_status(access)).ok
    assert await bank.list_accounts(access)
    for day in (12, 13):
        clock.set(paris(dt.date(2026, 3, day), 10))
        status = await bank.connection_status(access)
        assert status.state == code
        assert status.error is not None
        assert status.error.message == ERROR_CODES[code].message
        with pytest.raises(ProviderError) as caught:
            await bank.list_accounts(access)
        assert caught.value.code == code
        with pytest.raises(ProviderError):
            await bank.fetch_transactions(access, changed_since=clock.now())
    clock.set(paris(dt.date(2026, 3, 14)))
    assert (await bank.connection_status(access)).ok


async def test_bank_wide_errors_from_the_config() -> None:
    clock = ManualClock(paris(dt.date(2026, 3, 12)))
    bank = TestBank(clock, errors=[parse_scheduled_error("websiteUnavailable@2026-03-12")])
    access, _ = bank.open_connection("123456789")
    assert (await bank.connection_status(access)).state == "websiteUnavailable"


async def test_reconnection_keeps_ibans_and_history_under_new_ids() -> None:
    clock = ManualClock(START + dt.timedelta(days=10))
    bank = TestBank(clock)
    first, token = bank.open_connection("123456789")
    second, _ = bank.open_connection("123456789", generation=1, epoch=token.epoch)
    accounts_1 = await bank.list_accounts(first)
    accounts_2 = await bank.list_accounts(second)
    assert [a.iban for a in accounts_1] == [a.iban for a in accounts_2]
    assert not {a.provider_id for a in accounts_1} & {a.provider_id for a in accounts_2}
    rows_1 = await bank.fetch_transactions(first, min_date=token.epoch)
    rows_2 = await bank.fetch_transactions(second, min_date=token.epoch)
    assert [(t.booking_date, t.amount, t.raw_label) for t in rows_1] == [
        (t.booking_date, t.amount, t.raw_label) for t in rows_2
    ]
    assert not {t.provider_id for t in rows_1} & {t.provider_id for t in rows_2}


async def test_labels_and_ibans_change_over_time_for_some_accounts() -> None:
    clock = ManualClock(START)
    bank = TestBank(clock)
    label_changes = iban_changes = 0
    for customer in range(40):
        access, _ = bank.open_connection(f"k{customer}")
        clock.set(START)
        before = await bank.list_accounts(access)
        clock.set(START + dt.timedelta(days=400))
        after = await bank.list_accounts(access)
        for old, new in zip(before, after, strict=True):
            assert old.provider_id == new.provider_id
            label_changes += old.label != new.label
            iban_changes += old.iban != new.iban
            assert new.iban is not None
            assert stdnum_iban.is_valid(new.iban)
    assert label_changes > 0
    assert iban_changes > 0


def test_token_round_trip_and_bad_tokens() -> None:
    token = TestBankToken(
        3, "123456789", 2, dt.date(2026, 1, 1), (parse_scheduled_error("bug@2026-02-01"),)
    )
    assert TestBankToken.decode(token.encode()) == token
    for bad in ("", "tb1.???", "other"):
        with pytest.raises(ProviderError) as caught:
            TestBankToken.decode(bad)
        assert caught.value.code == "wrongpass"


async def test_balance_moves_with_the_booked_rows() -> None:
    clock = ManualClock(START)
    bank = TestBank(clock)
    access, token = bank.open_connection("123456789")

    async def snapshot() -> tuple[dict[str, int | None], dict[str, int]]:
        balances = {a.provider_id: a.balance for a in await bank.list_accounts(access)}
        sums: dict[str, int] = defaultdict(int)
        for t in await bank.fetch_transactions(access, min_date=token.epoch):
            if not t.coming and t.deleted_at is None:
                sums[t.account_provider_id] += t.amount
        return balances, sums

    before, sums_before = await snapshot()
    clock.advance(dt.timedelta(days=47, hours=5))
    after, sums_after = await snapshot()
    moved = 0
    for account, balance in after.items():
        old = before[account]
        assert balance is not None and old is not None
        assert balance - old == sums_after[account] - sums_before[account]
        moved += balance != old
    assert moved

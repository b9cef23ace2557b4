"""Transactions: query, pagination and its protection, amounts without float, coming/deleted
rows and the ``last_update`` cursor with its overlap."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from urllib.parse import parse_qsl

import pytest

from releves_mailer.aggregators.powens import PaginationError, PowensProvider, parse_amount
from releves_mailer.aggregators.powens.client import PowensClient
from releves_mailer.clock import ManualClock
from releves_mailer.collect.provider import ProviderAccess
from tests.fakes.powens_server import FakeAccount, FakeConnection, FakePowens

DAY = dt.date(2026, 2, 20)


@pytest.fixture
def checking(fake: FakePowens, connection: FakeConnection) -> FakeAccount:
    return fake.add_account(connection, name="Compte chèque", balance="5939.46")


def _query(fake: FakePowens) -> list[tuple[str, str]]:
    (call,) = fake.calls("GET", "/transactions")[:1]
    return parse_qsl(call.query, keep_blank_values=True)


async def test_query_asks_for_everything_explicitly(
    fake: FakePowens,
    checking: FakeAccount,
    provider: PowensProvider,
    access: ProviderAccess,
    clock: ManualClock,
) -> None:
    await provider.fetch_transactions(
        access, changed_since=clock.now(), min_date=dt.date(2026, 1, 1)
    )
    (call,) = fake.calls("GET", "/transactions")
    assert call.path == f"/2.0/users/me/connections/{access.connection_id}/transactions"
    assert call.has_token
    query = dict(parse_qsl(call.query, keep_blank_values=True))
    assert query == {
        "filter": "date",
        "min_date": "2026-01-01",
        "max_date": "2027-04-06",  # today + 400 days: coming rows can be dated ahead
        # 10:00 Paris minus the one-hour overlap, naive Paris time.
        "last_update": "2026-03-02 09:00:00",
        "all": "",
        "limit": "1000",
    }
    assert "&all&" in call.query  # a value-less flag, as Powens documents it


async def test_needs_a_cursor_or_a_window(provider: PowensProvider, access: ProviderAccess) -> None:
    with pytest.raises(ValueError):
        await provider.fetch_transactions(access)


async def test_pagination_follows_next_links_over_many_pages(
    fake: FakePowens, checking: FakeAccount, provider: PowensProvider, access: ProviderAccess
) -> None:
    for index in range(7):
        fake.add_transaction(checking, value=f"-{index + 1}.00", date=DAY - dt.timedelta(index))
    fake.page_size = 2
    rows = await provider.fetch_transactions(access, min_date=dt.date(2026, 1, 1))
    assert len(rows) == 7
    assert len({row.provider_id for row in rows}) == 7
    assert sorted(row.amount for row in rows) == [-700, -600, -500, -400, -300, -200, -100]
    assert len(fake.calls("GET", "/transactions")) == 4
    offsets = [
        dict(parse_qsl(c.query, keep_blank_values=True)).get("offset")
        for c in fake.calls("GET", "/transactions")
    ]
    assert offsets == [None, "2", "4", "6"]


async def test_absolute_links_on_the_api_host_are_followed(
    fake: FakePowens, checking: FakeAccount, provider: PowensProvider, access: ProviderAccess
) -> None:
    for index in range(5):
        fake.add_transaction(checking, value="1.00", date=DAY - dt.timedelta(index))
    fake.page_size = 2
    fake.absolute_links = True
    assert len(await provider.fetch_transactions(access, min_date=dt.date(2026, 1, 1))) == 5


async def test_pages_without_links_fall_back_to_offsets(
    fake: FakePowens,
    checking: FakeAccount,
    client: PowensClient,
    clock: ManualClock,
    access: ProviderAccess,
) -> None:
    for index in range(5):
        fake.add_transaction(checking, value="1.00", date=DAY - dt.timedelta(index))
    fake.omit_links = True
    provider = PowensProvider(client, clock, page_limit=2)
    assert len(await provider.fetch_transactions(access, min_date=dt.date(2026, 1, 1))) == 5


async def test_cyclic_next_link_is_refused(
    fake: FakePowens, checking: FakeAccount, provider: PowensProvider, access: ProviderAccess
) -> None:
    for index in range(5):
        fake.add_transaction(checking, value="1.00", date=DAY - dt.timedelta(index))
    fake.page_size = 2
    fake.cyclic_links = True
    with pytest.raises(PaginationError) as caught:
        await provider.fetch_transactions(access, min_date=dt.date(2026, 1, 1))
    assert caught.value.code == "unknown"
    assert "boucle" in caught.value.detail
    assert len(fake.calls("GET", "/transactions")) <= 5


async def test_a_self_repeating_next_link_is_refused(
    fake: FakePowens, checking: FakeAccount, provider: PowensProvider, access: ProviderAccess
) -> None:
    fake.add_transaction(checking, value="1.00", date=DAY)
    fake.cyclic_links = True  # one page whose next link is itself
    with pytest.raises(PaginationError):
        await provider.fetch_transactions(access, min_date=dt.date(2026, 1, 1))


async def test_too_many_pages_is_refused(
    fake: FakePowens,
    checking: FakeAccount,
    client: PowensClient,
    clock: ManualClock,
    access: ProviderAccess,
) -> None:
    for index in range(6):
        fake.add_transaction(checking, value="1.00", date=DAY - dt.timedelta(index))
    fake.page_size = 1
    client.max_pages = 3
    with pytest.raises(PaginationError, match="plus de 3 pages"):
        await PowensProvider(client, clock).fetch_transactions(access, min_date=dt.date(2026, 1, 1))


def test_links_to_another_host_are_refused(client: PowensClient) -> None:
    with pytest.raises(PaginationError):
        client.resolve_link("https://evil.example/2.0/users/me/transactions?offset=2")
    with pytest.raises(PaginationError):
        client.resolve_link("/other/users/me/transactions?offset=2")
    assert client.resolve_link("/2.0/users/me/transactions?offset=2").startswith(client.base_url)


@pytest.mark.parametrize(
    ("value", "currency", "minor"),
    [
        ("1234.56", "EUR", 123456),
        ("-0.1", "EUR", -10),
        ("0.29", "EUR", 29),  # 0.29 * 100 == 28.999999999999996 in float
        ("1.15", "EUR", 115),
        ("-4.35", "EUR", -435),
        ("1234", "JPY", 1234),
        ("1.234", "KWD", 1234),
        ("-0.005", "KWD", -5),
        ("99999999999.99", "EUR", 9999999999999),
    ],
)
async def test_amounts_are_exact(
    value: str,
    currency: str,
    minor: int,
    fake: FakePowens,
    connection: FakeConnection,
    provider: PowensProvider,
    access: ProviderAccess,
) -> None:
    account = fake.add_account(connection, currency=currency, balance=value)
    fake.add_transaction(account, value=value, date=DAY)
    fake.add_transaction(account, value=value, date=DAY, as_string=True)
    rows = await provider.fetch_transactions(access, min_date=DAY)
    assert [row.amount for row in rows] == [minor, minor]
    assert all(type(row.amount) is int and row.currency == currency for row in rows)
    (listed,) = await provider.list_accounts(access)
    assert listed.balance == minor and listed.currency == currency


def test_parse_amount_refuses_float_and_rounds_extra_decimals() -> None:
    with pytest.raises(TypeError):
        parse_amount(0.1, 2)
    assert parse_amount(Decimal("12.345"), 2) == 1234  # half-even
    assert parse_amount(Decimal("12.355"), 2) == 1236
    assert parse_amount(7, 2) == 700
    with pytest.raises(ValueError):
        parse_amount("abc", 2)


async def test_rows_are_read_per_the_reference(
    fake: FakePowens, checking: FakeAccount, provider: PowensProvider, access: ProviderAccess
) -> None:
    row = fake.add_transaction(
        checking,
        value="-1234.56",
        date=DAY,
        vdate=DAY + dt.timedelta(1),
        rdate=DAY - dt.timedelta(2),
        wording="PRLV SEPA URSSAF",
        type="order",
        counterparty={
            "label": "URSSAF",
            "account_scheme_name": "iban",
            "account_identification": "FR76 3000 6000 0112 3456 7890 189",
            "type": "creditor",
        },
    )
    (read,) = await provider.fetch_transactions(access, min_date=DAY)
    assert read.provider_id == str(row.id)
    assert read.account_provider_id == str(checking.id)
    assert (read.booking_date, read.value_date, read.real_date) == (
        DAY,
        DAY + dt.timedelta(1),
        DAY - dt.timedelta(2),
    )
    assert read.amount == -123456 and read.currency == "EUR"
    assert read.raw_label == "PRLV SEPA URSSAF"  # original_wording, not the user's wording
    assert read.type == "order"
    assert read.counterparty_label == "URSSAF"
    assert read.counterparty_iban == "FR7630006000011234567890189"
    assert read.last_update == fake.now()
    assert not read.coming and read.deleted_at is None
    assert read.raw["id"] == row.id


async def test_booking_date_bounds_not_application_date(
    fake: FakePowens, checking: FakeAccount, provider: PowensProvider, access: ProviderAccess
) -> None:
    inside = fake.add_transaction(checking, value="1.00", date=DAY, rdate=DAY - dt.timedelta(40))
    fake.add_transaction(checking, value="2.00", date=DAY - dt.timedelta(40), rdate=DAY)
    rows = await provider.fetch_transactions(access, min_date=DAY, max_date=DAY)
    assert [row.provider_id for row in rows] == [str(inside.id)]


async def test_coming_and_deleted_rows_come_back(
    fake: FakePowens,
    checking: FakeAccount,
    provider: PowensProvider,
    access: ProviderAccess,
    clock: ManualClock,
) -> None:
    coming = fake.add_transaction(checking, value="-42.10", date=DAY, coming=True, type="card")
    gone = fake.add_transaction(checking, value="-10.00", date=DAY)
    clock.advance(dt.timedelta(hours=2))
    fake.delete_transaction(gone)
    rows = {row.provider_id: row for row in await provider.fetch_transactions(access, min_date=DAY)}
    assert rows[str(coming.id)].coming
    assert rows[str(gone.id)].deleted_at == clock.now()
    assert rows[str(gone.id)].last_update == clock.now()


async def test_coming_booked_in_place_or_under_a_new_id(
    fake: FakePowens,
    checking: FakeAccount,
    provider: PowensProvider,
    access: ProviderAccess,
    clock: ManualClock,
) -> None:
    same = fake.add_transaction(checking, value="-42.10", date=DAY, coming=True, type="card")
    moved = fake.add_transaction(checking, value="-15.00", date=DAY, coming=True, type="card")
    cursor = clock.now()
    clock.advance(dt.timedelta(days=2))
    fake.book(same, date=DAY + dt.timedelta(2))
    replacement = fake.book(moved, new_id=True, date=DAY + dt.timedelta(2), value="-15.50")
    rows = {
        row.provider_id: row
        for row in await provider.fetch_transactions(access, changed_since=cursor)
    }
    assert set(rows) == {str(same.id), str(moved.id), str(replacement.id)}
    assert not rows[str(same.id)].coming
    assert rows[str(same.id)].booking_date == DAY + dt.timedelta(2)
    assert rows[str(moved.id)].coming and rows[str(moved.id)].deleted_at is not None
    assert not rows[str(replacement.id)].coming
    assert rows[str(replacement.id)].amount == -1550


async def test_cursor_overlap_catches_a_late_change(
    fake: FakePowens,
    checking: FakeAccount,
    client: PowensClient,
    clock: ManualClock,
    access: ProviderAccess,
) -> None:
    """A row committed after a pull but stamped before its cursor is caught by the overlap."""
    row = fake.add_transaction(checking, value="-10.00", date=DAY)
    first = await PowensProvider(client, clock).fetch_transactions(access, min_date=DAY)
    cursor = max(item.last_update for item in first)
    clock.advance(dt.timedelta(hours=3))
    # Powens stamps the change 20 minutes *before* the cursor (its write started earlier).
    fake.touch(row, last_update=cursor - dt.timedelta(minutes=20), value=Decimal("-12.00"))
    with_overlap = await PowensProvider(client, clock).fetch_transactions(
        access, changed_since=cursor
    )
    assert [(item.provider_id, item.amount) for item in with_overlap] == [(str(row.id), -1200)]
    without = await PowensProvider(
        client, clock, cursor_overlap=dt.timedelta(0)
    ).fetch_transactions(access, changed_since=cursor)
    assert without == []  # the overlap is what catches it


async def test_cursor_is_sent_in_paris_time_across_dst(
    provider: PowensProvider, clock: ManualClock
) -> None:
    # 2026-10-25 00:30 UTC is 02:30 CEST, the first of the two 02:30 of the night.
    query = dict(
        provider.transaction_query(
            changed_since=dt.datetime(2026, 10, 25, 1, 30, tzinfo=dt.UTC),
            min_date=None,
            max_date=None,
        )
    )
    # 01:30 UTC is 02:30 CET (second pass); minus one hour is 00:30 UTC = 02:30 CEST.
    assert query["last_update"] == "2026-10-25 02:30:00"
    assert query["min_date"] == "2000-01-01"

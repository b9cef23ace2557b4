"""Incremental sync against the test bank: nothing lost, nothing repeated, history kept."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from cryptography.fernet import Fernet
from sqlalchemy import func, select

from releves_mailer.aggregators.testbank import TestBank, TestBankToken, parse_scheduled_error
from releves_mailer.clock import PARIS, ManualClock
from releves_mailer.collect.connections import (
    connect_test_bank,
    rotate_tokens,
    set_account_active,
)
from releves_mailer.collect.provider import ProviderTransaction
from releves_mailer.collect.service import CollectionService
from releves_mailer.collect.sync import SyncSettings
from releves_mailer.collect.sync_rows import _payload_digest, _raw
from releves_mailer.db import Database
from releves_mailer.db.models import (
    BankAccount,
    BankConnection,
    BankEvent,
    BankEventKind,
    BankTransaction,
    BankTransactionVersion,
    ConnectionState,
    TransactionStatus,
)
from releves_mailer.signing.secrets import KeyRing

from .conftest import FIRST_KEY, Portfolio

DAY = dt.timedelta(days=1)


async def connect(
    database: Database,
    portfolio: Portfolio,
    bank: TestBank,
    keyring: KeyRing,
    clock: ManualClock,
    **options: object,
) -> int:
    connection = await connect_test_bank(
        database, portfolio.redevable_id, bank=bank, keyring=keyring, clock=clock, **options
    )
    return connection.id


async def refresh(
    database: Database,
    connection_id: int,
    bank: TestBank,
    keyring: KeyRing,
    clock: ManualClock,
    settings: SyncSettings | None = None,
):
    return await CollectionService(
        database, clock, {"testbank": bank}, keyring, settings=settings
    ).refresh_one(connection_id)


async def rows(database: Database) -> list[BankTransaction]:
    async with database.session() as session:
        return list((await session.scalars(select(BankTransaction))).all())


async def bank_truth(
    bank: TestBank, access_token: str, since: dt.date
) -> list[ProviderTransaction]:
    token = TestBankToken.decode(access_token)
    return list(await bank.fetch_transactions(bank.access_for(token), min_date=since))


async def token_of(database: Database, keyring: KeyRing, connection_id: int) -> str:
    async with database.session() as session:
        connection = await session.get(BankConnection, connection_id)
        assert connection is not None
        return keyring.decrypt(connection.token_encrypted)


async def daily(database, connection_id, bank, keyring, clock, days: int, settings=None) -> None:
    for _ in range(days):
        clock.advance(DAY)
        result = await refresh(database, connection_id, bank, keyring, clock, settings)
        assert result.ok, result


async def test_daily_sync_matches_the_bank_exactly(database, portfolio, bank, keyring, clock):
    connection_id = await connect(database, portfolio, bank, keyring, clock)
    first = await refresh(database, connection_id, bank, keyring, clock)
    assert first.ok and first.accounts >= 2 and first.inserted > 0
    await daily(database, connection_id, bank, keyring, clock, 45)
    stored = await rows(database)
    start = (clock.now() - dt.timedelta(days=60)).astimezone(PARIS).date()
    truth = await bank_truth(bank, await token_of(database, keyring, connection_id), start)
    # Every booked row the bank shows now is stored exactly once, booked, same values.
    live_booked = [t for t in truth if not t.coming and t.deleted_at is None]
    by_id = {row.provider_id: row for row in stored}
    assert len(by_id) == len(stored)
    for t in live_booked:
        row = by_id[t.provider_id]
        assert row.status is TransactionStatus.BOOKED
        assert (row.amount, row.booking_date, row.value_date, row.raw_label) == (
            t.amount,
            t.booking_date,
            t.value_date,
            t.raw_label,
        )
    # Nothing else is booked in our table for that period: no duplicate, no ghost.
    ours = {
        r.provider_id
        for r in stored
        if r.status is TransactionStatus.BOOKED and r.booking_date >= start
    }
    assert ours == {t.provider_id for t in live_booked}
    # Deleted and pending rows mirror the bank too.
    for t in truth:
        row = by_id[t.provider_id]
        if t.deleted_at is not None:
            assert row.status in (TransactionStatus.DELETED, TransactionStatus.REPLACED)
            assert row.deleted_at == t.deleted_at
        elif t.coming:
            assert row.status is TransactionStatus.PENDING
    # The bank's balance is kept per account with its date.
    async with database.session() as session:
        accounts = (await session.scalars(select(BankAccount))).all()
    assert all(a.balance is not None and a.balance_at == clock.now() for a in accounts)


async def test_window_reread_catches_what_the_cursor_misses(
    database, portfolio, bank, keyring, clock
):
    connection_id = await connect(database, portfolio, bank, keyring, clock)
    no_reread = SyncSettings(reread_days=0)
    await refresh(database, connection_id, bank, keyring, clock, no_reread)
    await daily(database, connection_id, bank, keyring, clock, 40, no_reread)
    start = (clock.now() - dt.timedelta(days=30)).astimezone(PARIS).date()
    truth = await bank_truth(bank, await token_of(database, keyring, connection_id), start)
    stored = {row.provider_id for row in await rows(database)}
    missed = {t.provider_id for t in truth} - stored
    assert missed, "the test bank back-dates some late postings"
    # One refresh with the default re-read window recovers those still in the window.
    await refresh(database, connection_id, bank, keyring, clock, SyncSettings(reread_days=40))
    stored = {row.provider_id for row in await rows(database)}
    assert {t.provider_id for t in truth} <= stored


async def test_refresh_twice_at_the_same_time_changes_nothing(
    database, portfolio, bank, keyring, clock
):
    connection_id = await connect(database, portfolio, bank, keyring, clock)
    await daily(database, connection_id, bank, keyring, clock, 10)

    async def snapshot():
        async with database.session() as session:
            counts = [
                await session.scalar(select(func.count()).select_from(model))
                for model in (BankTransaction, BankTransactionVersion, BankEvent, BankAccount)
            ]
            connection = await session.get(BankConnection, connection_id)
            assert connection is not None
            txs = sorted(
                (r.provider_id, r.status, r.amount, r.payload_hash, r.last_change_seen_at)
                for r in (await session.scalars(select(BankTransaction))).all()
            )
            return counts, connection.cursor, connection.last_check_at, txs

    before = await snapshot()
    again = await refresh(database, connection_id, bank, keyring, clock)
    assert again.ok and again.inserted == again.updated == again.deleted == 0
    assert await snapshot() == before


async def test_pending_rows_become_booked_same_id_new_id_and_changed_amount(
    database, portfolio, bank, keyring, clock
):
    connection_id = await connect(database, portfolio, bank, keyring, clock)
    await refresh(database, connection_id, bank, keyring, clock)
    await daily(database, connection_id, bank, keyring, clock, 50)
    stored = await rows(database)
    by_id = {row.id: row for row in stored}
    replaced = [r for r in stored if r.status is TransactionStatus.REPLACED]
    assert replaced, "pending rows replaced by a booked row under a new id"
    for old in replaced:
        assert old.coming and old.deleted_at is not None and old.replaced_by_id is not None
        new = by_id[old.replaced_by_id]
        assert new.status is TransactionStatus.BOOKED and new.replaces_id == old.id
        assert new.raw_label == old.raw_label
        # The test bank names the replacement "<pending id>b": the match found the right one.
        assert new.provider_id == old.provider_id + "b"
    assert any(by_id[r.replaced_by_id].amount != r.amount for r in replaced if r.replaced_by_id)
    # Same id: a row first stored pending, now booked, with a version for each state.
    async with database.session() as session:
        flipped = (
            await session.scalars(
                select(BankTransaction)
                .where(BankTransaction.status == TransactionStatus.BOOKED)
                .where(BankTransaction.type == "card")
                .where(
                    BankTransaction.id.in_(
                        select(BankTransactionVersion.transaction_id).where(
                            BankTransactionVersion.coming.is_(True)
                        )
                    )
                )
            )
        ).all()
        assert flipped
        changed = [
            r
            for r in flipped
            if len(
                {
                    v.amount
                    for v in (
                        await session.scalars(
                            select(BankTransactionVersion).where(
                                BankTransactionVersion.transaction_id == r.id
                            )
                        )
                    ).all()
                }
            )
            > 1
        ]
        assert changed, "same id booked with another amount, old amount kept in a version"
    # Every pending row released without replacement is deleted, never counted as booked.
    booked_per_label = Counter(
        (r.booking_date, r.raw_label) for r in stored if r.status is TransactionStatus.BOOKED
    )
    for old in replaced:
        assert booked_per_label[(by_id[old.replaced_by_id].booking_date, old.raw_label)] >= 1


async def test_deleted_after_reported_needs_a_correction(database, portfolio, bank, keyring, clock):
    connection_id = await connect(database, portfolio, bank, keyring, clock)
    await refresh(database, connection_id, bank, keyring, clock)
    for statement_id in range(1, 41):
        clock.advance(DAY)
        await refresh(database, connection_id, bank, keyring, clock)
        # Play the statement builder: report every booked row not reported yet.
        async with database.session() as session:
            to_report = (
                await session.scalars(
                    select(BankTransaction)
                    .where(BankTransaction.status == TransactionStatus.BOOKED)
                    .where(BankTransaction.reported_statement_id.is_(None))
                )
            ).all()
            for row in to_report:
                row.reported_statement_id = statement_id
                row.reported_amount = row.amount
    stored = await rows(database)
    corrections = [r for r in stored if r.correction_pending]
    assert corrections
    for row in corrections:
        assert row.reported_statement_id is not None
        assert row.status is TransactionStatus.DELETED or row.changed_at is not None
    # Rows deleted before ever being reported need no correction, reported rows that did
    # not change need none either.
    for row in stored:
        if row.reported_statement_id is None or (
            row.status is TransactionStatus.BOOKED and row.changed_at is None
        ):
            assert not row.correction_pending
    # Pending rows are never reported by construction of the query above.
    assert not any(r.reported_statement_id for r in stored if r.coming)


async def test_errors_are_recorded_counted_and_cleared(database, portfolio, bank, keyring, clock):
    errors = [
        parse_scheduled_error("wrongpass@2026-03-03..2026-03-04"),
        parse_scheduled_error("websiteUnavailable@2026-03-05"),
    ]
    connection_id = await connect(database, portfolio, bank, keyring, clock, errors=errors)
    assert (await refresh(database, connection_id, bank, keyring, clock)).ok
    seen = []
    for _ in range(4):
        clock.advance(DAY)
        result = await refresh(database, connection_id, bank, keyring, clock)
        again = await refresh(database, connection_id, bank, keyring, clock)
        assert again.ok == result.ok
        async with database.session() as session:
            connection = await session.get(BankConnection, connection_id)
            assert connection is not None
            seen.append((result.error_code, connection.state, connection.consecutive_failures))
    assert seen == [
        ("wrongpass", ConnectionState.ERROR, 1),
        ("wrongpass", ConnectionState.ERROR, 2),
        ("websiteUnavailable", ConnectionState.ERROR, 3),
        (None, ConnectionState.OK, 0),
    ]
    async with database.session() as session:
        events = (
            await session.scalars(
                select(BankEvent)
                .where(BankEvent.connection_id == connection_id)
                .order_by(BankEvent.id)
            )
        ).all()
    kinds = [e.kind for e in events if e.account_id is None]
    assert kinds == [
        BankEventKind.CONNECTION_CREATED,
        BankEventKind.CONNECTION_OK,
        BankEventKind.CONNECTION_ERROR,
        BankEventKind.CONNECTION_ERROR,
        BankEventKind.CONNECTION_OK,
    ]
    wrongpass = [e for e in events if e.error_code == "wrongpass"]
    assert wrongpass[0].message.endswith(
        "Veuillez mettre à jour vos identifiants de connexion bancaire."
    )


async def test_reconnection_reattaches_accounts_and_history(
    database, portfolio, bank, keyring, clock
):
    first_id = await connect(database, portfolio, bank, keyring, clock)
    await refresh(database, first_id, bank, keyring, clock)
    await daily(database, first_id, bank, keyring, clock, 20)
    async with database.session() as session:
        accounts_before = {
            a.iban: (a.id, a.provider_account_id)
            for a in (await session.scalars(select(BankAccount))).all()
        }
    rows_before = {(r.id, r.booking_date, r.amount, r.raw_label) for r in await rows(database)}
    clock.advance(DAY)
    second_id = await connect(database, portfolio, bank, keyring, clock)
    result = await refresh(database, second_id, bank, keyring, clock)
    assert result.ok and result.rekeyed > 0
    async with database.session() as session:
        accounts_after = {
            a.iban: (a.id, a.provider_account_id, a.connection_id)
            for a in (await session.scalars(select(BankAccount))).all()
        }
        old = await session.get(BankConnection, first_id)
        assert old is not None and old.state is ConnectionState.CLOSED and not old.active
        reattached = (
            await session.scalars(
                select(BankEvent).where(BankEvent.kind == BankEventKind.ACCOUNT_REATTACHED)
            )
        ).all()
    assert set(accounts_after) == set(accounts_before)
    for iban, (account_id, provider_id) in accounts_before.items():
        new_id, new_provider_id, connection_id = accounts_after[iban]
        assert new_id == account_id
        assert new_provider_id != provider_id
        assert connection_id == second_id
    assert len(reattached) == len(accounts_before)
    # The history was re-keyed, not inserted twice: every old row still exists once and no
    # booked (date, amount, label) appears more often than the bank shows it.
    after = await rows(database)
    assert rows_before <= {(r.id, r.booking_date, r.amount, r.raw_label) for r in after}
    truth = await bank_truth(
        bank,
        await token_of(database, keyring, second_id),
        clock.now().date() - dt.timedelta(days=60),
    )
    expected = Counter(
        (t.booking_date, t.amount, t.raw_label) for t in truth if not t.coming and not t.deleted_at
    )
    ours = Counter(
        (r.booking_date, r.amount, r.raw_label)
        for r in after
        if r.status is TransactionStatus.BOOKED and r.booking_date >= min(expected)[0]
    )
    assert ours == expected
    # The old connection is closed and no longer refreshed.
    assert not (await refresh(database, first_id, bank, keyring, clock)).ok


async def test_account_changes_are_events_with_old_and_new_values(
    database, portfolio, bank, keyring, clock
):
    # A seed whose customer (the redevable's SIREN) changes a label and an IBAN in 400 days.
    siren = "732829320"
    seed = next(
        s
        for s in range(1, 500)
        if any(p.label_change for p in bank.plans(s, siren))
        and any(p.iban_change for p in bank.plans(s, siren))
    )
    connection_id = await connect(database, portfolio, bank, keyring, clock, seed=seed)
    await refresh(database, connection_id, bank, keyring, clock)
    token = TestBankToken.decode(await token_of(database, keyring, connection_id))
    async with database.session() as session:
        before = {
            a.provider_account_id: (a.iban, a.label)
            for a in (await session.scalars(select(BankAccount))).all()
        }
    clock.advance(dt.timedelta(days=400))
    await refresh(database, connection_id, bank, keyring, clock)
    remote = {a.provider_id: a for a in await bank.list_accounts(bank.access_for(token))}
    async with database.session() as session:
        events = (await session.scalars(select(BankEvent).order_by(BankEvent.id))).all()
        accounts = {
            a.provider_account_id: a for a in (await session.scalars(select(BankAccount))).all()
        }
    labels_changed = ibans_changed = 0
    for provider_id, (old_iban, old_label) in before.items():
        account = accounts[provider_id]
        assert (account.iban, account.label) == (
            remote[provider_id].iban,
            remote[provider_id].label,
        )
        mine = [e for e in events if e.account_id == account.id]
        label_events = [e for e in mine if e.kind is BankEventKind.LABEL_CHANGED]
        iban_events = [e for e in mine if e.kind is BankEventKind.IBAN_CHANGED]
        if old_label != account.label:
            labels_changed += 1
            assert [(e.old_value, e.new_value) for e in label_events] == [
                (old_label, account.label)
            ]
            assert label_events[0].message == "Mise à jour du libellé du compte"
        else:
            assert not label_events
        if old_iban != account.iban:
            ibans_changed += 1
            assert [(e.old_value, e.new_value) for e in iban_events] == [(old_iban, account.iban)]
            assert iban_events[0].message == "Mise à jour de l'IBAN"
        else:
            assert not iban_events
    assert labels_changed and ibans_changed


async def test_deactivated_account_is_not_collected_then_backfilled(
    database, portfolio, bank, keyring, clock
):
    connection_id = await connect(database, portfolio, bank, keyring, clock)
    await refresh(database, connection_id, bank, keyring, clock)
    async with database.session() as session:
        checking = (
            await session.scalars(select(BankAccount).order_by(BankAccount.id).limit(1))
        ).one()
    await set_account_active(database, checking.id, False, clock=clock)
    count_before = len([r for r in await rows(database) if r.account_id == checking.id])
    await daily(database, connection_id, bank, keyring, clock, 20)
    count_off = len([r for r in await rows(database) if r.account_id == checking.id])
    assert count_off == count_before
    await set_account_active(database, checking.id, True, clock=clock)
    clock.advance(dt.timedelta(hours=1))
    await refresh(database, connection_id, bank, keyring, clock)
    stored = {r.provider_id for r in await rows(database) if r.account_id == checking.id}
    truth = await bank_truth(
        bank,
        await token_of(database, keyring, connection_id),
        (clock.now() - dt.timedelta(days=20)).date(),
    )
    assert {
        t.provider_id for t in truth if t.account_provider_id == checking.provider_account_id
    } <= stored
    async with database.session() as session:
        account = await session.get(BankAccount, checking.id)
        assert account is not None and account.active and account.backfill_from is None
        kinds = [
            e.kind
            for e in (
                await session.scalars(select(BankEvent).where(BankEvent.account_id == checking.id))
            ).all()
        ]
    assert BankEventKind.ACCOUNT_DEACTIVATED in kinds and BankEventKind.ACCOUNT_REACTIVATED in kinds


async def test_token_is_encrypted_at_rest_and_survives_key_rotation(
    database, portfolio, bank, keyring, clock
):
    connection_id = await connect(database, portfolio, bank, keyring, clock)
    token = await token_of(database, keyring, connection_id)
    async with database.session() as session:
        connection = await session.get(BankConnection, connection_id)
        assert connection is not None
        stored = connection.token_encrypted
    assert token.encode() not in stored
    assert TestBankToken.decode(token).customer.encode() not in stored
    new_key = Fernet.generate_key()
    rotated_ring = KeyRing([new_key, FIRST_KEY])
    assert await rotate_tokens(database, rotated_ring) == 1
    async with database.session() as session:
        connection = await session.get(BankConnection, connection_id)
        assert connection is not None
        assert connection.token_encrypted != stored
    only_new = KeyRing([new_key])
    assert await token_of(database, only_new, connection_id) == token
    assert (await refresh(database, connection_id, bank, only_new, clock)).ok


def test_payload_hash_is_stable_and_memoised_per_object() -> None:
    """Stored rows keep the hash computed when they were written: the hash of a payload must
    never change (every row would look changed), memoised or not."""

    def transaction() -> ProviderTransaction:
        return ProviderTransaction(
            provider_id="c1.0.20260302c1",
            account_provider_id="c1.0",
            booking_date=dt.date(2026, 3, 3),
            value_date=None,
            real_date=dt.date(2026, 3, 2),
            amount=-1234,
            currency="EUR",
            raw_label="CB MONOPRIX 0203",
            type="card",
            coming=True,
            deleted_at=None,
            last_update=dt.datetime(2026, 3, 2, 19, 5, tzinfo=dt.UTC),
            raw={
                "id": "c1.0.20260302c1",
                "value": "-12.34",
                "coming": True,
                "date": "2026-03-03",
                "nested": {"b": 1, "a": None},
                "when": dt.date(2026, 3, 2),
            },
        )

    first = transaction()
    expected = "8ac94f6ec46e857793a604e192a98d4cd618df6a35485f8a9d376b631c46326e"
    assert _raw(first) == (
        '{"coming":true,"date":"2026-03-03","id":"c1.0.20260302c1",'
        '"nested":{"a":null,"b":1},"value":"-12.34","when":"2026-03-02"}'
    )
    raws: dict[str, str] = {}
    assert _payload_digest(first, raws) == expected
    assert raws == {first.provider_id: _raw(first)}
    raws.clear()
    assert _payload_digest(first, raws) == expected  # from the memo
    assert raws == {}
    assert _payload_digest(transaction(), raws) == expected  # another object, same payload

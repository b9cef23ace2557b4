"""Deterministic life of the test bank's accounts: what each day brings and how rows evolve.

Every operation of an account is generated from ``(seed, customer, account index, day)``
alone, so any day can be computed independently and in any order. An operation becomes one or
more *rows* (what a provider shows), each with a timeline of states: a row is invisible before
its first state, then shows the latest state whose time has come. That is how pending items
turn booked (same id or a new one, sometimes with another amount), late postings appear days
after their booking date, and rows are deleted after having been seen.

Times are POSIX seconds (UTC); dates are Paris calendar dates. Amounts are minor units.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
from dataclasses import dataclass, field

from releves_mailer.clock import PARIS
from releves_mailer.collect.calendar import (
    add_business_days,
    is_business_day,
    next_business_day,
    previous_business_day,
)

__all__ = [
    "AccountKind",
    "AccountProfile",
    "Day",
    "DayCache",
    "Row",
    "RowState",
    "generate_day",
    "lag_days",
]

ONE_DAY = dt.timedelta(days=1)


class AccountKind:
    """The kinds of accounts the test bank keeps (values are Powens account types)."""

    CHECKING_EUR = "checking"
    CHECKING_USD = "checking_usd"
    CARD = "card"
    SAVINGS = "savings"


@dataclass(frozen=True, slots=True)
class AccountProfile:
    """What is fixed about one simulated account."""

    seed: int
    customer: str
    index: int
    kind: str
    currency: str
    #: The deferred debit card whose monthly total is debited from this checking account.
    card: AccountProfile | None = None
    #: ``(seed, customer, index)``: what the memos key the account's days by (kept, not
    #: rebuilt at each of the many lookups of a refresh).
    key: tuple[int, str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.seed, self.customer, self.index))


@dataclass(frozen=True, slots=True)
class RowState:
    """One state of a row, shown from ``at`` on."""

    at: int
    #: ``last_update`` the provider reports; earlier than ``at`` for back-dated late postings
    #: (which an incremental cursor alone would miss).
    last_update: int
    booking_date: dt.date
    value_date: dt.date | None
    amount: int
    label: str
    coming: bool
    deleted: bool


@dataclass(frozen=True, slots=True)
class Row:
    """One transaction as the bank lists it, with every state it will go through."""

    #: Id suffix, unique within the account and independent of the connection generation.
    local_id: str
    real_date: dt.date
    type: str
    counterparty: str | None
    reference: str | None
    states: tuple[RowState, ...]

    def state_at(self, now: int) -> RowState | None:
        found: RowState | None = None
        for state in self.states:
            if state.at > now:
                break
            found = state
        return found

    @property
    def final(self) -> RowState:
        return self.states[-1]


def lag_days(kind: str) -> int:
    """Days after an operation day within which all its rows reach their final state."""
    return 45 if kind == AccountKind.CARD else 21


def paris_time(day: dt.date, minutes: int) -> int:
    """POSIX time of ``day`` at ``minutes`` after midnight, Paris time."""
    hours, minute = divmod(minutes, 60)
    moment = dt.datetime(day.year, day.month, day.day, hours, minute, tzinfo=PARIS)
    return int(moment.timestamp())


@dataclass(frozen=True, slots=True)
class Day:
    """The rows born on one day of one account, with bounds that let readers skip the day."""

    rows: tuple[Row, ...]
    #: Latest ``at`` or ``last_update`` of any state: nothing changes after it.
    last_change: int
    min_booking: dt.date
    max_booking: dt.date
    #: Sum of the booked, not deleted amounts once every row reached its final state.
    final_net: int

    @classmethod
    def of(cls, rows: tuple[Row, ...], day: dt.date) -> Day:
        if not rows:
            return cls(rows, 0, day, day, 0)
        states = [state for row in rows for state in row.states]
        return cls(
            rows,
            max(max(state.at, state.last_update) for state in states),
            min(state.booking_date for state in states),
            max(state.booking_date for state in states),
            sum(row.final.amount for row in rows if not row.final.coming and not row.final.deleted),
        )

    def net_at(self, now: int) -> int:
        """Sum of the booked, not deleted amounts shown at ``now``."""
        if self.last_change <= now:
            return self.final_net
        total = 0
        for row in self.rows:
            state = row.state_at(now)
            if state is not None and not state.coming and not state.deleted:
                total += state.amount
        return total


class DayCache:
    """A bounded memo of generated days (the oldest entries are forgotten first)."""

    def __init__(self, size: int = 100_000) -> None:
        self._size = size
        self._days: dict[tuple[tuple[int, str, int], dt.date], Day] = {}

    def day(self, profile: AccountProfile, day: dt.date) -> Day:
        key = (profile.key, day)
        found = self._days.get(key)
        if found is not None:
            return found
        found = Day.of(generate_day(profile, day, self), day)
        if len(self._days) >= self._size:
            # Forget the oldest tenth at once (days are re-generated identically if needed).
            for old in list(itertools.islice(self._days, self._size // 10 + 1)):
                del self._days[old]
        self._days[key] = found
        return found

    def get(self, profile: AccountProfile, day: dt.date) -> tuple[Row, ...]:
        return self.day(profile, day).rows

    def days(self, profile: AccountProfile, first: dt.date, last: dt.date) -> list[Day]:
        """The days from ``first`` to ``last`` included, in order (a refresh reads dozens of
        consecutive days of each account: one call, not one per day)."""
        found: list[Day] = []
        known, key = self._days.get, profile.key
        day = first
        while day <= last:
            found.append(known((key, day)) or self.day(profile, day))
            day += ONE_DAY
        return found


MERCHANTS = (
    "CARREFOUR CITY",
    "MONOPRIX",
    "SNCF INTERNET",
    "TOTALENERGIES",
    "AMAZON EU SARL",
    "FNAC DARTY",
    "LEROY MERLIN",
    "BOULANGERIE PAUL",
    "RELAY GARE DE LYON",
    "UBER BV",
    "AIR FRANCE",
    "HOTEL IBIS",
    "RESTAURANT LE ZINC",
    "BRICO DEPOT",
    "LA POSTE",
    "METRO CASH",
    "SHELL",
    "APPLE.COM/BILL",
    "OVH SAS",
    "PHARMACIE CENTRALE",
)
CLIENTS = (
    "SARL DUPONT ET FILS",
    "SAS MARTIN CONSEIL",
    "EURL BERNARD",
    "SCI LES TILLEULS",
    "GARAGE MOREAU",
    "CABINET PETIT",
    "BOULANGERIE DURAND",
    "SA LEFEBVRE INDUSTRIE",
    "TRANSPORTS ROUX",
    "ATELIER FOURNIER",
)
SUPPLIERS = (
    "METRO FRANCE",
    "BUREAU VALLEE",
    "MANUTAN",
    "LYRECO FRANCE",
    "DELL SAS",
    "POINT P",
    "RENTOKIL INITIAL",
    "ORANGE BUSINESS",
)
CREDITORS = (
    ("URSSAF ILE DE FRANCE", 50_000, 400_000),
    ("DGFIP IMPOT TVA", 100_000, 800_000),
    ("EDF ENTREPRISES", 5_000, 60_000),
    ("ORANGE SA", 3_000, 15_000),
    ("AXA FRANCE IARD", 8_000, 40_000),
    ("MALAKOFF HUMANIS", 20_000, 150_000),
    ("SCI DES ARTS LOYER", 80_000, 250_000),
)
US_COUNTERPARTIES = ("ACME CORP", "GLOBEX INC", "INITECH LLC", "STARK INDUSTRIES", "WAYNE ENT")
CITIES = ("PARIS", "LYON", "NANTES", "LILLE", "BORDEAUX", "RENNES")


def _rng(profile: AccountProfile, day: dt.date, salt: str = "") -> random.Random:
    # String seeds are hashed with SHA-512 by ``random``: stable across runs and platforms.
    seed = f"{profile.seed}:{profile.customer}:{profile.index}:{day.toordinal()}:{salt}"
    return random.Random(seed)  # noqa: S311


def _posting_time(rng: random.Random, day: dt.date) -> int:
    """Bank postings appear during the business day (07:00-19:00 Paris)."""
    return paris_time(day, 7 * 60 + rng.randrange(12 * 60))


class _Builder:
    """Collects the rows of one account day."""

    def __init__(self, profile: AccountProfile, day: dt.date, rng: random.Random) -> None:
        self.profile = profile
        self.day = day
        self.rng = rng
        self.rows: list[Row] = []
        self.count = 0
        self.id_prefix = f"{day:%Y%m%d}"

    def next_id(self, letter: str) -> str:
        self.count += 1
        return f"{self.id_prefix}{letter}{self.count}"

    def booked(
        self,
        letter: str,
        *,
        booking: dt.date,
        value: dt.date | None,
        amount: int,
        label: str,
        kind: str,
        counterparty: str | None = None,
        reference: str | None = None,
    ) -> None:
        """A row posted directly as booked, maybe late, maybe deleted afterwards."""
        rng = self.rng
        local_id = self.next_id(letter)
        appears = _posting_time(rng, booking)
        last_update = appears
        if rng.random() < 0.12:
            # Late posting: shown a few business days after its (true) booking date.
            late_day = add_business_days(booking, rng.randint(2, 4))
            appears = _posting_time(rng, late_day)
            # Half of them carry the original posting time as last update: a cursor on
            # last_update misses them, only a re-read of a date window catches them.
            last_update = paris_time(booking, 12 * 60) if rng.random() < 0.5 else appears
        state = RowState(appears, last_update, booking, value, amount, label, False, False)
        states = [state]
        reposted: Row | None = None
        if rng.random() < 0.03:
            # Deleted by the bank after having been shown; half the time re-posted under a
            # new id with a corrected value date.
            shown_on = dt.datetime.fromtimestamp(appears, PARIS).date()
            gone_day = add_business_days(shown_on, rng.randint(1, 3))
            gone = paris_time(gone_day, 10 * 60 + rng.randrange(60))
            states.append(RowState(gone, gone, booking, value, amount, label, False, True))
            if rng.random() < 0.5:
                new_value = add_business_days((value or booking) + ONE_DAY, 0)
                reposted = Row(
                    local_id + "r",
                    self.day,
                    kind,
                    counterparty,
                    reference,
                    (RowState(gone, gone, booking, new_value, amount, label, False, False),),
                )
        self.rows.append(Row(local_id, self.day, kind, counterparty, reference, tuple(states)))
        if reposted is not None:
            self.rows.append(reposted)

    def card_payment(self, amount: int, label: str) -> None:
        """A card payment on a checking account: usually pending first, then booked."""
        rng = self.rng
        local_id = self.next_id("c")
        booking = next_business_day(self.day + ONE_DAY)
        booked_at = _posting_time(rng, booking)
        if rng.random() < 0.3:
            # Booked directly, no pending phase.
            state = RowState(booked_at, booked_at, booking, booking, amount, label, False, False)
            self.rows.append(Row(local_id, self.day, "card", None, None, (state,)))
            return
        seen = paris_time(self.day, 20 * 60 + rng.randrange(180))
        pending = RowState(seen, seen, booking, None, amount, label, True, False)
        draw = rng.random()
        if draw < 0.05:
            # Authorisation released: the pending row disappears, nothing is ever booked.
            gone = RowState(booked_at, booked_at, booking, None, amount, label, True, True)
            self.rows.append(Row(local_id, self.day, "card", None, None, (pending, gone)))
            return
        final_amount = amount
        if draw > 0.8:
            # Another amount when booked (tip, currency conversion, fuel pre-authorisation).
            final_amount = amount + amount * rng.choice((-10, -5, 5, 10, 15, 20)) // 100
        booked = RowState(booked_at, booked_at, booking, booking, final_amount, label, False, False)
        if draw < 0.55 or (draw > 0.8 and rng.random() < 0.5):
            # Same id: the row flips from pending to booked.
            self.rows.append(Row(local_id, self.day, "card", None, None, (pending, booked)))
            return
        # New id: the pending row is deleted and a booked row appears at the same moment.
        gone = RowState(booked_at, booked_at, booking, None, amount, label, True, True)
        self.rows.append(Row(local_id, self.day, "card", None, None, (pending, gone)))
        self.rows.append(Row(local_id + "b", self.day, "card", None, None, (booked,)))


def _card_debit_date(day: dt.date) -> dt.date:
    """Deferred card items are debited on the last business day of their month."""
    first_next = (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    debit = previous_business_day(first_next - ONE_DAY)
    if debit <= day:
        following = (first_next.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        debit = previous_business_day(following - ONE_DAY)
    return debit


def _money(rng: random.Random, low: int, high: int) -> int:
    return rng.randrange(low, high)


def _checking_eur(builder: _Builder, cache: DayCache) -> None:
    rng, day, profile = builder.rng, builder.day, builder.profile
    business = is_business_day(day)
    for _ in range(rng.choice((0, 1, 1, 2, 3) if business else (0, 0, 1, 1))):
        merchant = rng.choice(MERCHANTS)
        builder.card_payment(-_money(rng, 300, 15_000), f"CB {merchant} {day:%d%m}")
    if not business:
        return
    for _ in range(rng.choice((0, 0, 1, 1, 2))):
        client = rng.choice(CLIENTS)
        invoice = f"FACT {day:%y}{rng.randrange(10_000):04d}"
        value = day if rng.random() < 0.9 else add_business_days(day + ONE_DAY, 0)
        builder.booked(
            "t",
            booking=day,
            value=value,
            amount=_money(rng, 10_000, 800_000),
            label=f"VIR SEPA {client} {invoice}",
            kind="transfer",
            counterparty=client,
            reference=invoice,
        )
    if rng.random() < 0.4:
        supplier = rng.choice(SUPPLIERS)
        reference = f"REF{rng.randrange(1_000_000):06d}"
        builder.booked(
            "e",
            booking=day,
            value=day,
            amount=-_money(rng, 5_000, 300_000),
            label=f"VIR SEPA EMIS {supplier} {reference}",
            kind="transfer",
            counterparty=supplier,
            reference=reference,
        )
    if rng.random() < 0.3:
        creditor, low, high = rng.choice(CREDITORS)
        mandate = f"RUM{rng.randrange(10**8):08d}"
        builder.booked(
            "p",
            booking=day,
            value=day,
            amount=-_money(rng, low, high),
            label=f"PRLV SEPA {creditor} {mandate}",
            kind="order",
            counterparty=creditor,
            reference=mandate,
        )
    if rng.random() < 0.1:
        number = f"{rng.randrange(10**7):07d}"
        builder.booked(
            "q",
            booking=day,
            value=day,
            amount=-_money(rng, 2_000, 200_000),
            label=f"CHEQUE N {number}",
            kind="check",
            reference=number,
        )
    if rng.random() < 0.08:
        number = f"{rng.randrange(10**5):05d}"
        builder.booked(
            "d",
            booking=day,
            value=add_business_days(day + ONE_DAY, 0),
            amount=_money(rng, 5_000, 500_000),
            label=f"REMISE CHEQUES N {number}",
            kind="deposit",
            reference=number,
        )
    if rng.random() < 0.05:
        builder.booked(
            "w",
            booking=day,
            value=day,
            amount=-_money(rng, 20, 300) * 100,
            label=f"RETRAIT DAB {day:%d/%m} {rng.choice(CITIES)}",
            kind="withdrawal",
        )
    if day == next_business_day(day.replace(day=1)):
        builder.booked(
            "f",
            booking=day,
            value=day,
            amount=-_money(rng, 1_500, 3_500),
            label="FRAIS TENUE DE COMPTE",
            kind="bank",
        )
    if profile.card is not None and day == _card_debit_date(day - ONE_DAY):
        total = 0
        start = day - dt.timedelta(days=lag_days(AccountKind.CARD))
        current = start
        while current < day:
            for row in cache.get(profile.card, current):
                final = row.final
                if final.booking_date == day and not final.deleted:
                    total += final.amount
            current += ONE_DAY
        if total:
            builder.booked(
                "s",
                booking=day,
                value=day,
                amount=total,
                label=f"RELEVE CARTE DIFFERE {day:%m/%Y}",
                kind="summary_card",
            )


def _card(builder: _Builder) -> None:
    rng, day = builder.rng, builder.day
    for _ in range(rng.choice((0, 1, 1, 2) if is_business_day(day) else (0, 0, 1))):
        merchant = rng.choice(MERCHANTS)
        amount = -_money(rng, 500, 25_000)
        label = f"CARTE {day:%d/%m} {merchant}"
        debit = _card_debit_date(day)
        seen = paris_time(day + ONE_DAY, 6 * 60 + rng.randrange(60))
        booked_at = _posting_time(rng, debit)
        states = (
            RowState(seen, seen, debit, None, amount, label, True, False),
            RowState(booked_at, booked_at, debit, debit, amount, label, False, False),
        )
        builder.rows.append(Row(builder.next_id("k"), day, "deferred_card", merchant, None, states))


def _checking_usd(builder: _Builder) -> None:
    rng, day = builder.rng, builder.day
    if not is_business_day(day) or rng.random() > 0.3:
        return
    party = rng.choice(US_COUNTERPARTIES)
    reference = f"SWIFT{rng.randrange(10**6):06d}"
    incoming = rng.random() < 0.6
    amount = _money(rng, 50_000, 2_000_000)
    builder.booked(
        "u",
        booking=day,
        value=add_business_days(day + ONE_DAY, 1),
        amount=amount if incoming else -amount,
        label=f"{'INTL WIRE FROM' if incoming else 'INTL WIRE TO'} {party} {reference}",
        kind="transfer",
        counterparty=party,
        reference=reference,
    )


def _savings(builder: _Builder) -> None:
    rng, day = builder.rng, builder.day
    if not is_business_day(day):
        return
    if day == add_business_days(day.replace(day=1), 4):
        builder.booked(
            "v",
            booking=day,
            value=day,
            amount=_money(rng, 50, 2_000) * 100,
            label="VIR PERMANENT VERS LIVRET",
            kind="transfer",
        )
    if day.month == 12 and day == previous_business_day(dt.date(day.year, 12, 31)):
        builder.booked(
            "i",
            booking=day,
            value=dt.date(day.year, 12, 31),
            amount=_money(rng, 1_000, 90_000),
            label=f"INTERETS CREDITEURS {day.year}",
            kind="bank",
        )
    if rng.random() < 0.02:
        builder.booked(
            "x",
            booking=day,
            value=day,
            amount=-_money(rng, 100, 5_000) * 100,
            label="VIR LIVRET VERS COMPTE COURANT",
            kind="transfer",
        )


def generate_day(profile: AccountProfile, day: dt.date, cache: DayCache) -> tuple[Row, ...]:
    """Every row born from the operations of ``day`` on the account ``profile``."""
    builder = _Builder(profile, day, _rng(profile, day))
    if profile.kind == AccountKind.CHECKING_EUR:
        _checking_eur(builder, cache)
    elif profile.kind == AccountKind.CARD:
        _card(builder)
    elif profile.kind == AccountKind.CHECKING_USD:
        _checking_usd(builder)
    else:
        _savings(builder)
    return tuple(builder.rows)

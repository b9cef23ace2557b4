"""The test bank ("Connecteur de test"): a provider simulating a bank from a seed and the clock.

A connection is described entirely by its token (seed, customer, generation, history start,
scheduled errors), so the bank keeps no state besides memos: the same token read at the same
clock time always shows the same accounts and transactions. A *customer* is the bank's client
(the redevable): its accounts, IBANs and transactions depend on ``(seed, customer)`` only;
the *generation* numbers its successive connections, whose provider ids all differ (as after
a reconnection at a real aggregator) while IBANs and history stay the same.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import itertools
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from releves_mailer.aggregators.testbank.generator import (
    ONE_DAY,
    AccountKind,
    AccountProfile,
    DayCache,
    Row,
    RowState,
    lag_days,
)
from releves_mailer.aggregators.testbank.iban import french_iban
from releves_mailer.aggregators.testbank.schedule import (
    ScheduledError,
    active_error,
    parse_error_schedule,
)
from releves_mailer.cfonb import format_amount
from releves_mailer.clock import PARIS, Clock
from releves_mailer.collect.errors import describe_error
from releves_mailer.collect.provider import (
    ConnectionStatus,
    ProviderAccess,
    ProviderAccount,
    ProviderError,
    ProviderTransaction,
    accepted_iban,
)

__all__ = ["BANK_CODE", "BIC", "TestBank", "TestBankToken"]

BANK_CODE = "13026"
BIC = "TBNKFRPPXXX"
DISPLAY_NAME = "Connecteur de test"
#: Days of history the bank shows before a customer's first connection.
HISTORY_DAYS = 120
_TOKEN_PREFIX = "tb1."  # noqa: S105  (a format marker, not a secret)


@dataclass(frozen=True, slots=True)
class TestBankToken:
    """What a test bank access token stands for."""

    __test__ = False  # not a pytest test class despite its name

    seed: int
    customer: str
    generation: int
    #: First day of the history the bank keeps for the customer.
    epoch: dt.date
    errors: tuple[ScheduledError, ...] = ()

    @property
    def connection_id(self) -> str:
        return f"{self.customer}.{self.generation}"

    def encode(self) -> str:
        document = {
            "seed": self.seed,
            "customer": self.customer,
            "generation": self.generation,
            "epoch": self.epoch.isoformat(),
            "errors": [str(entry) for entry in self.errors],
        }
        text = json.dumps(document, separators=(",", ":"), sort_keys=True)
        return _TOKEN_PREFIX + base64.urlsafe_b64encode(text.encode()).decode()

    @classmethod
    def decode(cls, token: str) -> TestBankToken:
        """Read a token; a malformed one is refused like bad credentials (``wrongpass``)."""
        if not token.startswith(_TOKEN_PREFIX):
            raise ProviderError("wrongpass", "jeton du connecteur de test non reconnu")
        try:
            document = json.loads(base64.urlsafe_b64decode(token[len(_TOKEN_PREFIX) :]))
            return cls(
                seed=int(document["seed"]),
                customer=str(document["customer"]),
                generation=int(document["generation"]),
                epoch=dt.date.fromisoformat(document["epoch"]),
                errors=parse_error_schedule(document.get("errors", [])),
            )
        except (ValueError, KeyError, TypeError, binascii.Error) as error:
            raise ProviderError(
                "wrongpass", f"jeton du connecteur de test illisible : {error}"
            ) from None


@dataclass(frozen=True, slots=True)
class _AccountPlan:
    """The fixed facts of one simulated account, changes over time included."""

    profile: AccountProfile
    label: str
    new_label: str
    #: Days after the history start when the label changes (None: never).
    label_change: int | None
    branch: str
    new_branch: str
    #: Days after the history start when the IBAN changes (a new branch code).
    iban_change: int | None
    number: str
    initial_balance: int


_LABELS = {
    AccountKind.CHECKING_EUR: ("Compte chèque", "Compte courant professionnel"),
    AccountKind.CHECKING_USD: ("Compte chèque USD", "Compte devises USD"),
    AccountKind.CARD: ("Compte carte débit différé", "Carte affaires débit différé"),
    AccountKind.SAVINGS: ("Compte sur livret", "Livret entreprise"),
}
_TYPES = {
    AccountKind.CHECKING_EUR: "checking",
    AccountKind.CHECKING_USD: "checking",
    AccountKind.CARD: "card",
    AccountKind.SAVINGS: "savings",
}


def _utc(timestamp: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC)


class TestBank:
    """A :class:`~releves_mailer.collect.provider.Provider` simulating a French bank."""

    __test__ = False

    name = "testbank"
    display_name = DISPLAY_NAME

    def __init__(
        self,
        clock: Clock,
        *,
        seed: int = 1,
        errors: Iterable[ScheduledError] = (),
        cache_size: int = 100_000,
        memo_size: int = 65_536,
    ) -> None:
        self.clock = clock
        self.seed = seed
        #: Errors applying to every connection (config ``aggregator.testbank.errors``).
        self.errors = tuple(errors)
        #: Generated days (about 1 kB each): a night's reads of 2,000 accounts touch about
        #: 90,000 of them (the re-read window plus the posting lag of each account).
        self._cache = DayCache(cache_size)
        #: Provider transactions (about 1.5 kB each with their raw payload) and tokens kept,
        #: the least recently read first forgotten: a row in the same state is the same object
        #: at every read, whose payload hash the sync does not compute again. A daily round of
        #: 700 connections reads about 35,000 rows.
        self._memo_size = memo_size
        self._ibans: dict[tuple[str, str], tuple[str | None, str | None]] = {}
        self._tokens: dict[str, TestBankToken] = {}
        self._transactions: dict[tuple[str, str, int], ProviderTransaction] = {}
        self._plans: dict[tuple[int, str], tuple[_AccountPlan, ...]] = {}
        self._settled: dict[tuple[tuple[int, str, int], dt.date], tuple[dt.date, int]] = {}

    # -- connections -------------------------------------------------------------------------

    def open_connection(
        self,
        customer: str,
        *,
        seed: int | None = None,
        errors: Iterable[ScheduledError] = (),
        generation: int = 0,
        epoch: dt.date | None = None,
    ) -> tuple[ProviderAccess, TestBankToken]:
        """Connect a customer (what the aggregator's webview does for a real bank)."""
        if not customer or len(customer) > 24 or "." in customer:
            raise ValueError("test bank customer must be 1-24 characters without dots")
        today = self.clock.now().astimezone(PARIS).date()
        token = TestBankToken(
            seed=self.seed if seed is None else seed,
            customer=customer,
            generation=generation,
            epoch=epoch or today - dt.timedelta(days=HISTORY_DAYS),
            errors=tuple(errors),
        )
        return self.access_for(token), token

    @staticmethod
    def access_for(token: TestBankToken) -> ProviderAccess:
        return ProviderAccess(token.encode(), token.connection_id, token.customer)

    def _now(self) -> tuple[int, dt.date]:
        now = self.clock.now()
        return int(now.timestamp()), now.astimezone(PARIS).date()

    def _error_today(self, token: TestBankToken, today: dt.date) -> ScheduledError | None:
        return active_error((*self.errors, *token.errors), today)

    def _token(self, access: ProviderAccess) -> TestBankToken:
        """The token behind an access, decoded once (a refresh makes four calls with it)."""
        token = self._tokens.get(access.token)
        if token is None:
            token = TestBankToken.decode(access.token)
            if len(self._tokens) >= self._memo_size:
                self._tokens.clear()
            self._tokens[access.token] = token
        return token

    def _check(self, access: ProviderAccess) -> tuple[TestBankToken, int, dt.date]:
        token = self._token(access)
        now, today = self._now()
        failure = self._error_today(token, today)
        if failure is not None:
            raise ProviderError(failure.code, f"erreur programmée {failure}")
        return token, now, today

    async def connection_status(self, access: ProviderAccess) -> ConnectionStatus:
        token = self._token(access)
        now, today = self._now()
        checked_at = _utc(now)
        failure = self._error_today(token, today)
        if failure is None:
            return ConnectionStatus(
                None, checked_at, checked_at, raw={"id": token.connection_id, "state": None}
            )
        before = dt.datetime.combine(failure.start, dt.time(), tzinfo=PARIS)
        return ConnectionStatus(
            failure.code,
            checked_at,
            before.astimezone(dt.UTC),
            detail=f"erreur programmée {failure} ({describe_error(failure.code).message})",
            raw={"id": token.connection_id, "state": failure.code},
        )

    # -- accounts ----------------------------------------------------------------------------

    def plans(self, seed: int, customer: str) -> tuple[_AccountPlan, ...]:
        """The accounts a customer holds (checking EUR always, other kinds by the seed)."""
        key = (seed, customer)
        plans = self._plans.get(key)
        if plans is not None:
            return plans
        rng = random.Random(f"{seed}:{customer}:accounts")  # noqa: S311
        kinds = [AccountKind.CHECKING_EUR]
        for kind in (AccountKind.CHECKING_USD, AccountKind.CARD, AccountKind.SAVINGS):
            if rng.random() < 0.6:
                kinds.append(kind)
        if len(kinds) == 1:
            kinds.append(AccountKind.SAVINGS)
        base_number = rng.randrange(10**8)
        branch = f"{rng.randrange(1, 10**5):05d}"
        card = None
        if AccountKind.CARD in kinds:
            card = AccountProfile(
                seed, customer, kinds.index(AccountKind.CARD), AccountKind.CARD, "EUR"
            )
        built: list[_AccountPlan] = []
        for index, kind in enumerate(kinds):
            profile = AccountProfile(
                seed,
                customer,
                index,
                kind,
                "USD" if kind == AccountKind.CHECKING_USD else "EUR",
                card if kind == AccountKind.CHECKING_EUR else None,
            )
            label, new_label = _LABELS[kind]
            built.append(
                _AccountPlan(
                    profile=profile,
                    label=label,
                    new_label=new_label,
                    label_change=rng.randrange(20, 400) if rng.random() < 0.15 else None,
                    branch=branch,
                    new_branch=f"{rng.randrange(1, 10**5):05d}",
                    iban_change=rng.randrange(20, 400) if rng.random() < 0.05 else None,
                    number=f"{base_number:08d}{index:03d}",
                    initial_balance=0
                    if kind == AccountKind.CARD
                    else rng.randrange(100_000, 5_000_000),
                )
            )
        plans = tuple(built)
        self._plans[key] = plans
        return plans

    def _iban(self, branch: str, number: str) -> tuple[str | None, str | None]:
        """``(iban, rejected)``: computed, so always valid, but checked like every
        provider's IBAN (once: memoised)."""
        key = (branch, number)
        found = self._ibans.get(key)
        if found is None:
            found = self._ibans[key] = accepted_iban(french_iban(BANK_CODE, branch, number))
        return found

    @staticmethod
    def _changed(after_days: int | None, epoch: dt.date, today: dt.date) -> bool:
        """Whether a change planned ``after_days`` after the history start has happened."""
        return after_days is not None and today >= epoch + dt.timedelta(days=after_days)

    def _account(
        self, token: TestBankToken, plan: _AccountPlan, now: int, today: dt.date
    ) -> ProviderAccount:
        profile = plan.profile
        label = (
            plan.new_label if self._changed(plan.label_change, token.epoch, today) else (plan.label)
        )
        branch = (
            plan.new_branch if self._changed(plan.iban_change, token.epoch, today) else plan.branch
        )
        iban, rejected = self._iban(branch, plan.number)
        provider_id = f"{token.connection_id}.{profile.index}"
        balance = self._balance(token, plan, now, today)
        return ProviderAccount(
            provider_id=provider_id,
            iban=iban,
            rejected_iban=rejected,
            bic=BIC,
            label=label,
            type=_TYPES[profile.kind],
            currency=profile.currency,
            balance=balance,
            balance_at=_utc(now),
            number=plan.number,
            raw={
                "id": provider_id,
                "id_connection": token.connection_id,
                "iban": iban or rejected,
                "bic": BIC,
                "name": label,
                "original_name": label,
                "type": _TYPES[profile.kind],
                "currency": {"id": profile.currency},
                "number": plan.number,
                "balance": format_amount(balance, 2, separator="."),
                "last_update": _utc(now).isoformat(),
            },
        )

    async def list_accounts(self, access: ProviderAccess) -> Sequence[ProviderAccount]:
        token, now, today = self._check(access)
        return [
            self._account(token, plan, now, today)
            for plan in self.plans(token.seed, token.customer)
        ]

    def _balance(self, token: TestBankToken, plan: _AccountPlan, now: int, today: dt.date) -> int:
        """Initial balance plus every booked, not deleted amount visible at ``now``."""
        profile = plan.profile
        lag = dt.timedelta(days=lag_days(profile.kind))
        # Days older than the lag are settled: their rows are in their final state.
        settled_limit = today - lag - ONE_DAY
        key = (profile.key, token.epoch)
        settled_day, settled_sum = self._settled.get(key, (token.epoch - ONE_DAY, 0))
        if settled_day < settled_limit:
            days = self._cache.days(profile, settled_day + ONE_DAY, settled_limit)
            settled_sum += sum(day.final_net for day in days)
            settled_day = settled_limit
        if settled_limit > token.epoch:
            self._settled[key] = (settled_day, settled_sum)
        unsettled = self._cache.days(profile, settled_day + ONE_DAY, today)
        return plan.initial_balance + settled_sum + sum(day.net_at(now) for day in unsettled)

    # -- transactions ------------------------------------------------------------------------

    async def fetch_transactions(
        self,
        access: ProviderAccess,
        *,
        changed_since: dt.datetime | None = None,
        min_date: dt.date | None = None,
        max_date: dt.date | None = None,
    ) -> Sequence[ProviderTransaction]:
        if changed_since is None and min_date is None and max_date is None:
            raise ValueError("fetch_transactions needs a cursor or a date window")
        token, now, today = self._check(access)
        since = None if changed_since is None else int(changed_since.timestamp())
        result: list[ProviderTransaction] = []
        for plan in self.plans(token.seed, token.customer):
            profile = plan.profile
            lag = dt.timedelta(days=lag_days(profile.kind))
            first = token.epoch
            if min_date is not None:
                first = max(first, min_date - lag)
            if changed_since is not None:
                first = max(first, changed_since.astimezone(PARIS).date() - lag)
            last = today if max_date is None else min(today, max_date)
            account_id = f"{token.connection_id}.{profile.index}"
            for generated in self._cache.days(profile, first, last):
                if (
                    (since is not None and generated.last_change <= since)
                    or (min_date is not None and generated.max_booking < min_date)
                    or (max_date is not None and generated.min_booking > max_date)
                ):
                    continue
                for row in generated.rows:
                    state = row.state_at(now)
                    if state is None or (since is not None and state.last_update <= since):
                        continue
                    if (min_date is not None and state.booking_date < min_date) or (
                        max_date is not None and state.booking_date > max_date
                    ):
                        continue
                    memo_key = (account_id, row.local_id, state.at)
                    transaction = self._transactions.pop(memo_key, None)
                    if transaction is None:
                        if len(self._transactions) >= self._memo_size:
                            # Forget the least recently read tenth at once.
                            stale = itertools.islice(self._transactions, self._memo_size // 10 + 1)
                            for old in list(stale):
                                del self._transactions[old]
                        transaction = self._transaction(account_id, profile, row, state)
                    # (Re-)inserted last: the dict's order is the order of the last reads.
                    self._transactions[memo_key] = transaction
                    result.append(transaction)
        return result

    @staticmethod
    def _transaction(
        account_id: str, profile: AccountProfile, row: Row, state: RowState
    ) -> ProviderTransaction:
        provider_id = f"{account_id}.{row.local_id}"
        deleted_at = _utc(state.at) if state.deleted else None
        last_update = _utc(state.last_update)
        raw = {
            "id": provider_id,
            "id_account": account_id,
            "date": state.booking_date.isoformat(),
            "vdate": None if state.value_date is None else state.value_date.isoformat(),
            "rdate": row.real_date.isoformat(),
            "value": format_amount(state.amount, 2, separator="."),
            "original_wording": state.label,
            "type": row.type,
            "coming": state.coming,
            "deleted": None if deleted_at is None else deleted_at.isoformat(),
            "last_update": last_update.isoformat(),
            "counterparty": None if row.counterparty is None else {"label": row.counterparty},
            "reference": row.reference,
        }
        return ProviderTransaction(
            provider_id=provider_id,
            account_provider_id=account_id,
            booking_date=state.booking_date,
            value_date=state.value_date,
            real_date=row.real_date,
            amount=state.amount,
            currency=profile.currency,
            raw_label=state.label,
            type=row.type,
            coming=state.coming,
            deleted_at=deleted_at,
            last_update=last_update,
            counterparty_label=row.counterparty,
            reference=row.reference,
            raw=raw,
        )

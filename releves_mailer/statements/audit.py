"""Statement audit: checks every invariant of the stored statements, and against the test bank.

One implementation for the tests, the crash test and users (``statements audit``). Checks,
per bank account (statements in due date order):

- sequences 1..n; each due date is a due date of the periodicity; a ``next`` statement
  follows the previous due date with no due date skipped (``resumed`` ones may skip the dates
  when the account was off); no ``produced`` after a waiting or failed one;
- periods: the first one is (activation - 1 month, D] (the activation in force when it was
  cut), the next ones start at the previous due date;
- balances: opening = previous closing, closing = opening + the movements; the counts and
  totals stored match the lines; no unexplained balance gap;
- files: sha256 and size match the stored bytes; the CFONB120 file reads back with the same
  dates, balances and number of movements; the CSV has one line per correction;
- entry numbers: the account's counter goes on from the previous statement by one per
  movement line; each numbered line has the next number, and the file carries it (the lines
  of statements cut before migration 0010 have none: their files kept the provider's ids);
- lines: no movement dated after D; every transaction has at most one standing movement
  line, every earlier one is withdrawn by exactly one CSV line of a later statement;
- completeness (database): every reportable transaction known at the last statement's
  collection is reported in a standing line with its current values, and every deletion or
  change seen by then is in a CSV.

*Reportable* (the exact set): transactions of the account booked (or pending, with the
redevable's ``include_pending``) with booking date <= the last due date, except the opening
set (booked at the first statement's collection with booking date <= activation - 1 month).
The floor is recomputed from the activation, not read from the first statement, so a first
statement that started too late shows every transaction it left out.

With the test bank (:class:`TestBankTruth`), the same completeness is checked against what
the bank showed at the last statement's collection time, computed from the bank's seed: every
booked row is in exactly one standing movement line with its amount and booking date, no
other row is, and every reported row the bank deleted is in exactly one CSV line.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select

from releves_mailer import cfonb
from releves_mailer.aggregators.testbank import TestBank, TestBankToken
from releves_mailer.aggregators.testbank.generator import DayCache, RowState
from releves_mailer.clock import PARIS
from releves_mailer.db import Database
from releves_mailer.db.models.collect import (
    BankAccount,
    BankConnection,
    BankEvent,
    BankEventKind,
    BankTransaction,
)
from releves_mailer.db.models.collect import TransactionStatus as Status
from releves_mailer.db.models.portfolio import Redevable
from releves_mailer.db.models.statements import (
    LineKind,
    Statement,
    StatementFile,
    StatementLine,
    StatementState,
    WindowKind,
)
from releves_mailer.portfolio.periodicity import Schedule
from releves_mailer.signing.secrets import KeyRing
from releves_mailer.statements.build import is_reportable
from releves_mailer.statements.plan import first_period_start

__all__ = ["Problem", "TestBankTruth", "audit"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken invariant: a short code, a French message, where."""

    code: str
    message: str
    account_id: int | None = None
    statement_id: int | None = None

    def __str__(self) -> str:
        where = []
        if self.account_id is not None:
            where.append(f"compte {self.account_id}")
        if self.statement_id is not None:
            where.append(f"relevé {self.statement_id}")
        prefix = f"[{', '.join(where)}] " if where else ""
        return f"{prefix}{self.code} : {self.message}"


@dataclass(frozen=True, slots=True)
class TestBankTruth:
    """The test bank's ground truth: every row it showed, recomputed from its seed."""

    __test__ = False

    bank: TestBank
    keyring: KeyRing


def _local_id(provider_id: str) -> str:
    return provider_id.rsplit(".", 1)[-1]


def _values(line: StatementLine) -> tuple[int, dt.date]:
    return (line.amount, line.booking_date)


async def audit(
    database: Database,
    *,
    truth: TestBankTruth | None = None,
    account_ids: Iterable[int] | None = None,
) -> list[Problem]:
    """Every broken invariant of the stored statements (empty when all hold)."""
    problems: list[Problem] = []
    async with database.session() as session:
        query = select(BankAccount, Redevable).join(
            Redevable, Redevable.id == BankAccount.redevable_id
        )
        if account_ids is not None:
            query = query.where(BankAccount.id.in_(list(account_ids)))
        accounts = (await session.execute(query.order_by(BankAccount.id))).all()
        for account, redevable in accounts:
            statements = list(
                (
                    await session.scalars(
                        select(Statement)
                        .where(Statement.account_id == account.id)
                        .order_by(Statement.due_date)
                    )
                ).all()
            )
            if not statements:
                continue
            lines = list(
                (
                    await session.scalars(
                        select(StatementLine)
                        .where(StatementLine.account_id == account.id)
                        .order_by(
                            StatementLine.statement_id, StatementLine.kind, StatementLine.position
                        )
                    )
                ).all()
            )
            files = {
                (file.statement_id, file.kind): file.content
                for file in await session.scalars(
                    select(StatementFile).where(
                        StatementFile.statement_id.in_([s.id for s in statements])
                    )
                )
            }
            rows = list(
                (
                    await session.scalars(
                        select(BankTransaction).where(BankTransaction.account_id == account.id)
                    )
                ).all()
            )
            reactivations = list(
                await session.scalars(
                    select(BankEvent.at)
                    .where(BankEvent.account_id == account.id)
                    .where(BankEvent.kind == BankEventKind.ACCOUNT_REACTIVATED)
                )
            )
            floor = _first_floor(account, statements, reactivations)
            problems.extend(_check_chain(account, redevable, statements, lines, files, floor))
            problems.extend(_check_lines(account, redevable, statements, lines, rows, floor))
            if truth is not None:
                connection = await session.get(BankConnection, account.connection_id)
                if connection is not None and connection.provider == TestBank.name:
                    problems.extend(
                        _check_truth(
                            truth, connection, account, redevable, statements, lines, floor
                        )
                    )
    return problems


def _first_floor(
    account: BankAccount,
    statements: Sequence[Statement],
    reactivations: Sequence[dt.datetime],
) -> dt.date | None:
    """Where the first produced statement must start: one month before the activation then.

    The account's ``activated_at`` moves at each reactivation; the activation in force at the
    first statement is the last one before its collection (a reactivation event, else the
    account's creation).
    """
    first = next((s for s in statements if s.state is StatementState.PRODUCED), None)
    if first is None or first.data_as_of is None:
        return None
    as_of = first.data_as_of
    if account.activated_at <= as_of:
        activation = account.activated_at
    else:
        activation = max((at for at in reactivations if at <= as_of), default=account.created_at)
    return first_period_start(activation, first.due_date)


def _check_chain(
    account: BankAccount,
    redevable: Redevable,
    statements: Sequence[Statement],
    lines: Sequence[StatementLine],
    files: dict[tuple[int, str], bytes],
    floor: dt.date | None,
) -> list[Problem]:
    found: list[Problem] = []

    def problem(code: str, message: str, statement: Statement | None = None) -> None:
        found.append(
            Problem(code, message, account.id, None if statement is None else statement.id)
        )

    by_statement: dict[int, list[StatementLine]] = defaultdict(list)
    for line in lines:
        by_statement[line.statement_id].append(line)
    previous: Statement | None = None
    waiting_seen = False
    for index, statement in enumerate(statements, 1):
        if statement.sequence != index:
            problem("sequence", f"numéro {statement.sequence}, attendu {index}", statement)
        schedule: Schedule | None = None
        if statement.periodicity == str(redevable.periodicity):
            schedule = Schedule.for_redevable(redevable)
            if not schedule.is_due(statement.due_date):
                problem(
                    "echeance",
                    f"le {statement.due_date} n'est pas une échéance de la périodicité",
                    statement,
                )
        if statement.state is not StatementState.PRODUCED:
            waiting_seen = True
            continue
        if waiting_seen:
            problem("ordre", "relevé produit après un relevé en attente", statement)
        mine = by_statement.get(statement.id, [])
        movements = [line for line in mine if line.kind is LineKind.MOVEMENT]
        corrections = [line for line in mine if line.kind is LineKind.CORRECTION]
        if statement.period_end != statement.due_date:
            problem("periode", "la fin de période n'est pas la date d'échéance", statement)
        if previous is None:
            expected = floor
            if statement.window is not WindowKind.FIRST or statement.period_start != expected:
                problem(
                    "premiere_fenetre",
                    f"premier relevé : début {statement.period_start}, attendu {expected}",
                    statement,
                )
        else:
            if statement.period_start != previous.due_date:
                problem(
                    "trou",
                    f"début {statement.period_start} au lieu de {previous.due_date}",
                    statement,
                )
            if statement.opening_balance != previous.closing_balance:
                problem(
                    "chaine_soldes",
                    f"solde d'ouverture {statement.opening_balance} ≠ solde de clôture "
                    f"précédent {previous.closing_balance}",
                    statement,
                )
            if (
                schedule is not None
                and statement.window is WindowKind.NEXT
                and previous.periodicity == statement.periodicity
                and schedule.next_due(previous.due_date) != statement.due_date
            ):
                problem(
                    "echeance_manquante",
                    f"échéance {schedule.next_due(previous.due_date)} sans relevé",
                    statement,
                )
        total = sum(line.amount for line in movements)
        if statement.opening_balance is None or statement.closing_balance is None:
            problem("soldes", "soldes absents", statement)
        elif statement.opening_balance + total != statement.closing_balance:
            problem("soldes", "clôture ≠ ouverture + mouvements", statement)
        if statement.movement_count != len(movements) or statement.movements_total != total:
            problem("compte_mouvements", "nombre ou total des mouvements incohérent", statement)
        if statement.deleted_count != len(corrections):
            problem("compte_suppressions", "nombre de lignes supprimées incohérent", statement)
        if statement.balance_mismatch:
            problem(
                "ecart_solde",
                f"écart de solde inexpliqué : écart {statement.balance_gap}, "
                f"expliqué {statement.explained_gap}",
                statement,
            )
        for line in movements:
            if line.booking_date > statement.due_date:
                problem("date_future", f"mouvement {line.provider_id} après D", statement)
        first_entry = 1 if previous is None else (previous.last_entry_number or 0) + 1
        if statement.last_entry_number != first_entry + len(movements) - 1 or any(
            line.entry_number not in (None, first_entry + index)
            for index, line in enumerate(movements)
        ):
            problem(
                "numeros_ecriture",
                f"numéros d'écriture non consécutifs à partir de {first_entry}",
                statement,
            )
        found.extend(_check_files(account, statement, movements, corrections, files))
        previous = statement
    return found


def _check_files(
    account: BankAccount,
    statement: Statement,
    movements: Sequence[StatementLine],
    corrections: Sequence[StatementLine],
    files: dict[tuple[int, str], bytes],
) -> list[Problem]:
    found: list[Problem] = []
    content = files.get((statement.id, "cfonb"))
    if content is None:
        return [Problem("fichier", "fichier CFONB absent", account.id, statement.id)]
    if (
        hashlib.sha256(content).hexdigest() != statement.cfonb_sha256
        or len(content) != statement.cfonb_size
    ):
        found.append(Problem("empreinte", "empreinte CFONB différente", account.id, statement.id))
    try:
        (read,) = cfonb.read(content.decode("ascii"), strict=True)
    except (ValueError, UnicodeDecodeError) as error:
        found.append(Problem("cfonb", f"CFONB illisible : {error}", account.id, statement.id))
    else:
        if (
            read.opening_date != statement.period_start
            or read.closing_date != statement.due_date
            or read.opening_balance != statement.opening_balance
            or read.closing_balance != statement.closing_balance
            or len(read.movements) != len(movements)
            or [m.amount for m in read.movements] != [line.amount for line in movements]
        ):
            found.append(
                Problem("cfonb", "le fichier CFONB ne dit pas le relevé", account.id, statement.id)
            )
        elif any(
            line.entry_number is not None
            and movement.entry_number
            != cfonb.complements.entry_number_from_counter(line.entry_number)
            for movement, line in zip(read.movements, movements, strict=True)
        ):
            found.append(
                Problem(
                    "numeros_ecriture",
                    "les numéros d'écriture du fichier CFONB ne sont pas ceux des lignes",
                    account.id,
                    statement.id,
                )
            )
    csv_content = files.get((statement.id, "csv"))
    if corrections:
        if csv_content is None:
            found.append(Problem("csv", "CSV des suppressions absent", account.id, statement.id))
        else:
            if hashlib.sha256(csv_content).hexdigest() != statement.csv_sha256:
                found.append(Problem("empreinte", "empreinte CSV différente", account.id))
            text = csv_content.decode("utf-8")
            records = list(csv.reader(io.StringIO(text.removeprefix("\ufeff")), delimiter=";"))
            if not text.startswith("\ufeff") or len(records) != len(corrections) + 1:
                found.append(Problem("csv", "CSV incohérent", account.id, statement.id))
    elif csv_content is not None:
        found.append(Problem("csv", "CSV sans suppression", account.id, statement.id))
    return found


def _check_lines(
    account: BankAccount,
    redevable: Redevable,
    statements: Sequence[Statement],
    lines: Sequence[StatementLine],
    rows: Sequence[BankTransaction],
    floor: dt.date | None,
) -> list[Problem]:
    found: list[Problem] = []
    done = [s for s in statements if s.state is StatementState.PRODUCED]
    if not done or floor is None:
        return found
    due_of = {s.id: s.due_date for s in done}
    first, last = done[0], done[-1]
    assert first.data_as_of is not None and last.data_as_of is not None
    movements: dict[int, list[StatementLine]] = defaultdict(list)
    withdrawals: Counter[int] = Counter()
    correction_of: dict[int, StatementLine] = {}
    for line in lines:
        if line.kind is LineKind.MOVEMENT:
            movements[line.transaction_id].append(line)
        else:
            assert line.withdraws_line_id is not None
            withdrawals[line.withdraws_line_id] += 1
            correction_of[line.withdraws_line_id] = line
    for reported in movements.values():
        reported.sort(key=lambda line: due_of.get(line.statement_id, dt.date.max))
        standing = [line for line in reported if line.withdrawn_statement_id is None]
        if len(standing) > 1:
            found.append(
                Problem(
                    "doublon",
                    f"transaction {reported[0].provider_id} dans {len(standing)} relevés",
                    account.id,
                )
            )
        for line in reported:
            if line.withdrawn_statement_id is None:
                continue
            correction = correction_of.get(line.id)
            if withdrawals[line.id] != 1 or correction is None:
                found.append(
                    Problem(
                        "csv_suppression",
                        f"ligne {line.provider_id} retirée {withdrawals[line.id]} fois",
                        account.id,
                    )
                )
            elif correction.statement_id != line.withdrawn_statement_id or due_of.get(
                correction.statement_id, dt.date.min
            ) <= due_of.get(line.statement_id, dt.date.max):
                found.append(
                    Problem(
                        "csv_suppression", f"retrait de {line.provider_id} mal placé", account.id
                    )
                )
    pending_ok = redevable.include_pending
    for row in rows:
        standing = [
            line for line in movements.get(row.id, []) if line.withdrawn_statement_id is None
        ]
        seen_at = row.booked_at if row.status is Status.BOOKED else row.first_seen_at
        reportable = (
            seen_at is not None
            and seen_at <= last.data_as_of
            and is_reportable(row, last.due_date, pending_ok, floor, first.data_as_of)
        )
        changed_late = row.last_change_seen_at > last.data_as_of
        if reportable and not standing and not changed_late:
            found.append(
                Problem("manquante", f"transaction {row.provider_id} jamais rapportée", account.id)
            )
        if standing and not changed_late:
            line = standing[0]
            gone = row.status in (Status.DELETED, Status.REPLACED)
            if line.pending:
                current: tuple[object, ...] = (row.amount, row.raw_label[:500])
                as_reported: tuple[object, ...] = (line.amount, line.label)
            else:
                current = (row.amount, row.booking_date, row.value_date or row.booking_date)
                as_reported = (line.amount, line.booking_date, line.value_date or line.booking_date)
            if gone or current != as_reported:
                found.append(
                    Problem(
                        "correction_manquante",
                        f"transaction {row.provider_id} supprimée ou modifiée sans CSV",
                        account.id,
                    )
                )
    return found


def _first_booked(states: Sequence[RowState]) -> RowState | None:
    for state in states:
        if not state.coming and not state.deleted:
            return state
    return None


def _check_truth(
    truth: TestBankTruth,
    connection: BankConnection,
    account: BankAccount,
    redevable: Redevable,
    statements: Sequence[Statement],
    lines: Sequence[StatementLine],
    floor: dt.date | None,
) -> list[Problem]:
    found: list[Problem] = []
    done = [s for s in statements if s.state is StatementState.PRODUCED]
    if not done or floor is None:
        return found
    first, last = done[0], done[-1]
    assert first.data_as_of is not None and last.data_as_of is not None
    token = TestBankToken.decode(truth.keyring.decrypt(connection.token_encrypted))
    index = int(account.provider_account_id.rsplit(".", 1)[-1])
    plans = truth.bank.plans(token.seed, token.customer)
    profile = plans[index].profile
    as_of_first = int(first.data_as_of.timestamp())
    as_of = int(last.data_as_of.timestamp())
    cache = DayCache(10_000)
    expected: dict[str, RowState] = {}
    alive: dict[str, RowState] = {}
    deleted_after_seen: set[str] = set()
    day = max(token.epoch, floor - dt.timedelta(days=70))
    end = last.data_as_of.astimezone(PARIS).date()
    while day <= end:
        for row in cache.get(profile, day):
            state = row.state_at(as_of)
            if state is None:
                continue
            if state.deleted:
                deleted_after_seen.add(row.local_id)
                continue
            alive[row.local_id] = state
            if state.coming:
                operation = row.real_date
                if redevable.include_pending and floor < operation <= last.due_date:
                    expected[row.local_id] = state
                continue
            if state.booking_date > last.due_date:
                continue
            booked = _first_booked(row.states)
            opening = (
                booked is not None and booked.at <= as_of_first and state.booking_date <= floor
            )
            if not opening:
                expected[row.local_id] = state
        day += dt.timedelta(days=1)
    standing: dict[str, list[StatementLine]] = defaultdict(list)
    withdrawn: Counter[str] = Counter()
    reported: Counter[str] = Counter()
    for line in lines:
        local = _local_id(line.provider_id)
        if line.kind is LineKind.MOVEMENT:
            reported[local] += 1
            if line.withdrawn_statement_id is None:
                standing[local].append(line)
        else:
            withdrawn[local] += 1
    for local, state in expected.items():
        mine = standing.get(local, [])
        if len(mine) == 1 and mine[0].pending and mine[0].amount == state.amount:
            continue
        if len(mine) != 1:
            found.append(
                Problem(
                    "verite_banque",
                    f"opération {local} de la banque dans {len(mine)} relevés",
                    account.id,
                )
            )
        elif _values(mine[0]) != (state.amount, state.booking_date):
            found.append(
                Problem("verite_banque", f"opération {local} rapportée autrement", account.id)
            )
    for local, mine in standing.items():
        alive_state = alive.get(local)
        if (
            local not in expected
            and mine
            and mine[0].pending
            and alive_state is not None
            and alive_state.amount == mine[0].amount
        ):
            continue  # reported pending, booked later than the last due date
        if local not in expected:
            found.append(
                Problem("verite_banque", f"opération {local} rapportée à tort", account.id)
            )
    for local, count in reported.items():
        expected_withdrawals = count - len(standing.get(local, []))
        if withdrawn[local] != expected_withdrawals:
            found.append(
                Problem(
                    "verite_suppression",
                    f"opération {local} : {withdrawn[local]} ligne(s) au CSV, "
                    f"{expected_withdrawals} attendue(s)",
                    account.id,
                )
            )
        if local in deleted_after_seen and local in standing:
            found.append(
                Problem(
                    "verite_suppression", f"opération {local} supprimée, non retirée", account.id
                )
            )
    return found

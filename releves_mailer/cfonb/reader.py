"""CFONB120 reader: records to statements, with every deviation from the standard located.

The reader takes what banks really send: LF, CRLF or CR separators, no separator at all
(records glued end to end), trailing blanks trimmed, lowercase letters, reserved zones
filled, blank decimals or currency. Each departure from the letter of the standard is a
:class:`Deviation` (line, column, French message). Deviations marked ``fatal`` leave the
reader unable to give a faithful value (an unreadable amount or date, a record out of
place); :func:`read` raises on them, and with ``strict=True`` on any deviation.

Line numbers are physical lines; in a file without separators they are record numbers.
Columns are the 1-based positions of the standard.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Final

from .amounts import CURRENCIES, decode_amount, format_amount
from .complements import ONE_FIELD, QUALIFIERS, SEQUENCE_TYPES
from .model import Account, Complement, Movement, Statement
from .opcodes import OP_CODES

__all__ = [
    "CfonbReadError",
    "Deviation",
    "ReadResult",
    "check",
    "parse",
    "read",
]

_RECORD: Final = 120
_CODES: Final = frozenset({"01", "04", "05", "07"})
_KNOWN_QUALIFIERS: Final = frozenset(QUALIFIERS)


@dataclass(frozen=True, slots=True, order=True)
class Deviation:
    """One departure from the standard: where it is and what is wrong (in French)."""

    line: int
    column: int
    message: str
    fatal: bool = False

    def __str__(self) -> str:
        return f"ligne {self.line}, colonne {self.column} : {self.message}"


@dataclass(frozen=True, slots=True)
class ReadResult:
    """The statements a file holds and every deviation found while reading it."""

    statements: tuple[Statement, ...]
    deviations: tuple[Deviation, ...]

    @property
    def fatal(self) -> tuple[Deviation, ...]:
        """The deviations that make a value of the file unreliable."""
        return tuple(d for d in self.deviations if d.fatal)


class CfonbReadError(ValueError):
    """The file cannot be read (lenient mode) or deviates from the standard (strict mode)."""

    def __init__(self, deviations: Iterable[Deviation]) -> None:
        self.deviations = tuple(deviations)
        shown = "; ".join(str(d) for d in self.deviations[:5])
        more = len(self.deviations) - 5
        super().__init__(shown + (f" (et {more} autres écarts)" if more > 0 else ""))


def _records(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, record)``; splits lines holding several glued records."""
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if (
            len(line) > _RECORD
            and len(line) % _RECORD == 0
            and all(line[i : i + 2] in _CODES for i in range(0, len(line), _RECORD))
        ):
            # No separator: each record is its own "line".
            for index in range(0, len(line), _RECORD):
                yield number + index // _RECORD, line[index : index + _RECORD]
        else:
            yield number, line


def _split(source: str | Iterable[str]) -> Iterable[str]:
    if not isinstance(source, str):
        return source
    # str.splitlines() would also break on \x0b, \x1c, \x85... which may sit in a record.
    separator = "\n" if "\n" in source else "\r"
    lines = source.split(separator)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _date(text: str) -> date | None:
    if len(text) != 6 or not (text.isascii() and text.isdigit()):
        return None
    year = int(text[4:])
    # Same pivot as Python's %y (and python-cfonb): 69-99 -> 1900s, 00-68 -> 2000s.
    year += 1900 if year >= 69 else 2000
    try:
        return date(year, int(text[2:4]), int(text[:2]))
    except ValueError:
        return None


def _is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _is_alnum(text: str) -> bool:
    return text.isascii() and text.isalnum()


def _flag(text: str) -> bool | None:
    return None if text == " " else text == "1"


@dataclass(slots=True)
class _Open:
    """A statement being read."""

    line: int
    account: Account
    zones: str  # positions 3-7 and 12-32 as written in the 01, compared with later records
    decimals: int
    opening_date: date
    opening_balance: int
    movements: list[Movement] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # line of each movement's 04
    #: A 04 of the statement could not be read: its balance cannot be checked.
    incomplete: bool = False


@dataclass(slots=True)
class _PendingMovement:
    line: int
    head: str  # positions 3-20 and 22-40, repeated by its 05 records
    booking_date: date
    value_date: date
    amount: int
    label: str
    op_code: str
    entry_number: str
    reject_code: str
    internal_code: str
    exempt: bool | None
    unavailable: bool | None
    reference: str
    complements: list[Complement] = field(default_factory=list)
    continuing_label: bool = True

    def freeze(self) -> Movement:
        return Movement(
            booking_date=self.booking_date,
            amount=self.amount,
            label=self.label.rstrip(),
            op_code=self.op_code,
            value_date=self.value_date,
            entry_number=self.entry_number,
            reject_code=self.reject_code,
            internal_code=self.internal_code,
            exempt=self.exempt,
            unavailable=self.unavailable,
            reference=self.reference,
            complements=tuple(self.complements),
        )


@dataclass(frozen=True, slots=True)
class _Unreadable:
    """A 04 that could not be read: its 05 records still belong to it (checked on their own,
    never reported as orphans), so one bad field gives one deviation."""

    line: int
    #: Positions 3-20 and 22-40 of the 04, or ``None`` when the fault is in them (the 05s
    #: are then not compared with it: the 04's zones are the ones in doubt).
    head: str | None


def _join_label(text: str, piece: str) -> str:
    # Our writer cuts labels at fixed positions; a continuation after a zone that ends in
    # a blank (a bank's short label, or our cut falling on a blank) joins with one blank.
    if not text.endswith(" "):
        return text + piece
    head = text.rstrip()
    return f"{head} {piece.lstrip()}" if head else piece.lstrip()


class _Parser:
    def __init__(self) -> None:
        self.deviations: list[Deviation] = []
        self.statements: list[Statement] = []
        self.open: _Open | None = None
        self.movement: _PendingMovement | None = None
        self.unreadable: _Unreadable | None = None
        self.last_closed: dict[tuple[str, str, str, str], tuple[int, Statement]] = {}

    def deviate(self, line: int, column: int, message: str, *, fatal: bool = False) -> None:
        self.deviations.append(Deviation(line, column, message, fatal))

    def blank(self, line: int, record: str, start: int, end: int) -> None:
        """Report a reserved zone (1-based ``start``..``end``) that is not blank."""
        zone = record[start - 1 : end]
        if zone.strip():
            offset = len(zone) - len(zone.lstrip())
            self.deviate(
                line, start + offset, f"zone réservée {start}-{end} non vide : {zone.strip()!r}"
            )

    # -- characters and length -------------------------------------------------------------

    def normalise(self, line: int, record: str) -> str | None:
        length = len(record)
        if length < _RECORD:
            self.deviate(
                line, length + 1, f"l'enregistrement fait {length} caractères au lieu de 120"
            )
            record = record.ljust(_RECORD)
        elif length > _RECORD:
            if record[_RECORD:].strip():
                self.deviate(
                    line,
                    _RECORD + 1,
                    f"l'enregistrement fait {length} caractères au lieu de 120",
                    fatal=True,
                )
                return None
            self.deviate(line, _RECORD + 1, "blancs au-delà de la position 120")
            record = record[:_RECORD]
        if not (record.isascii() and record.isprintable()):
            for column, char in enumerate(record, 1):
                if not (char.isascii() and char.isprintable()):
                    what = "caractère de contrôle" if char.isascii() else "caractère non ASCII"
                    self.deviate(line, column, f"{what} {char!r}")
                    break
        if record != record.upper():
            column = next((i for i, c in enumerate(record, 1) if c.islower()), 0)
            if column:
                self.deviate(line, column, "minuscules : la norme demande des majuscules")
        return record

    # -- shared zones ------------------------------------------------------------------------

    def account_zones(self, line: int, record: str) -> tuple[Account, int, int, str] | None:
        """Check positions 3-32; return the account, the record's decimals, the decimals of
        the currency and the comparable zones, or ``None`` when they cannot be read."""
        bank, branch = record[2:7], record[11:16]
        currency, decimals_text, number = record[16:19], record[19], record[21:32]
        if not _is_digits(bank):
            self.deviate(line, 3, f"code banque {bank!r} : 5 chiffres attendus")
        if not _is_digits(branch):
            self.deviate(line, 12, f"code guichet {branch!r} : 5 chiffres attendus")
        currency_code = currency.upper()
        if not currency.strip():
            self.deviate(line, 17, "code devise absent : EUR supposé")
            currency_code = "EUR"
        elif currency_code not in CURRENCIES:
            self.deviate(line, 17, f"code devise {currency!r} inconnu (ISO 4217)")
        iso = CURRENCIES.get(currency_code)
        if decimals_text == " ":
            decimals = 2 if iso is None else iso
            self.deviate(line, 20, f"nombre de décimales absent : {decimals} supposé")
        elif _is_digits(decimals_text):
            decimals = int(decimals_text)
            if iso is not None and decimals != iso:
                self.deviate(
                    line,
                    20,
                    f"{decimals} décimale(s) alors que la devise {currency_code} en a {iso}",
                )
        else:
            self.deviate(
                line, 20, f"nombre de décimales {decimals_text!r} : un chiffre attendu", fatal=True
            )
            return None
        self.blank(line, record, 21, 21)
        if len(number.strip()) != 11 or not _is_alnum(number):
            self.deviate(line, 22, f"numéro de compte {number!r} : 11 lettres ou chiffres attendus")
        account = Account(bank.strip(), branch.strip(), number.strip().upper(), currency_code)
        zones = record[2:7] + record[11:19] + record[21:32]
        return account, decimals, decimals if iso is None else iso, zones

    def date(self, line: int, record: str, column: int, what: str) -> date | None:
        text = record[column - 1 : column + 5]
        value = _date(text)
        if value is None:
            self.deviate(line, column, f"{what} {text!r} invalide (JJMMAA attendu)", fatal=True)
        return value

    def amount(self, line: int, record: str, decimals: int, target: int) -> int | None:
        zone = record[90:104]
        try:
            raw = decode_amount(zone)
        except ValueError:
            self.deviate(
                line,
                91,
                f"montant {zone!r} invalide (13 chiffres puis {{, A-I, }} ou J-R attendus)",
                fatal=True,
            )
            return None
        if decimals <= target:
            return raw * int(10 ** (target - decimals))
        scale = int(10 ** (decimals - target))
        if raw % scale:
            self.deviate(
                line,
                91,
                f"montant {format_amount(raw, decimals)} non représentable avec {target} décimales",
                fatal=True,
            )
            return None
        return raw // scale

    def same_statement(self, line: int, zones: str, current: _Open) -> bool:
        if zones == current.zones:
            return True
        index = next(
            (i for i, (a, b) in enumerate(zip(zones, current.zones, strict=True)) if a != b), 0
        )
        # ``zones`` holds positions 3-7, 12-19 and 22-32.
        column = 3 + index if index < 5 else 12 + index - 5 if index < 13 else 22 + index - 13
        self.deviate(
            line,
            column,
            "banque, guichet, devise ou compte différent de ceux de l'ancien solde"
            f" (ligne {current.line})",
            fatal=True,
        )
        return False

    # -- records -----------------------------------------------------------------------------

    def record(self, line: int, raw: str) -> None:
        if not raw.strip():
            self.deviate(line, 1, "ligne vide")
            return
        record = self.normalise(line, raw)
        if record is None:
            return
        code = record[:2]
        if code not in _CODES:
            self.deviate(
                line,
                1,
                f"code enregistrement {code!r} inconnu (01, 04, 05 ou 07 attendu)",
                fatal=True,
            )
            return
        if code == "05":
            self.complement(line, record)
            return
        self.flush_movement()
        if code == "01":
            self.opening(line, record)
        elif code == "04":
            self.movement_record(line, record)
        else:
            self.closing(line, record)

    def opening(self, line: int, record: str) -> None:
        if self.open is not None:
            self.deviate(self.open.line, 1, "relevé sans nouveau solde (07) : ignoré", fatal=True)
            self.open = None
        zones = self.account_zones(line, record)
        self.blank(line, record, 8, 11)
        self.blank(line, record, 33, 34)
        day = self.date(line, record, 35, "date de l'ancien solde")
        self.blank(line, record, 41, 90)
        if zones is None or day is None:
            self.amount(line, record, 0, 0)
            return
        account, decimals, target, key = zones
        balance = self.amount(line, record, decimals, target)
        self.blank(line, record, 105, 120)
        if balance is None:
            return
        self.open = _Open(line, account, key, target, day, balance)

    def movement_record(self, line: int, record: str) -> None:
        head = record[2:20] + record[21:40]
        if self.open is None:
            self.deviate(line, 1, "mouvement (04) hors d'un relevé : 01 manquant", fatal=True)
            self.unreadable = _Unreadable(line, head)
            return
        zones = self.account_zones(line, record)
        if zones is None or not self.same_statement(line, zones[3], self.open):
            self.unreadable = _Unreadable(line, None)
            self.open.incomplete = True
            return
        decimals, target = zones[1], self.open.decimals
        internal = record[7:11]
        if internal.strip() and not _is_alnum(internal.strip()):
            self.deviate(line, 8, f"code interne {internal!r} : lettres ou chiffres attendus")
        op_code = record[32:34].upper()
        if op_code not in OP_CODES:
            self.deviate(line, 33, f"code opération interbancaire {record[32:34]!r} inconnu")
        booking = self.date(line, record, 35, "date de comptabilisation")
        reject = record[40:42]
        if reject.strip() and not _is_digits(reject):
            self.deviate(line, 41, f"code motif de rejet {reject!r} : 2 chiffres ou blancs")
        value_text = record[42:48]
        if value_text.strip():
            value = self.date(line, record, 43, "date de valeur")
        else:
            self.deviate(line, 43, "date de valeur absente : date de comptabilisation reprise")
            value = booking
        self.blank(line, record, 80, 81)
        flags = record[88:90]
        for offset, (char, what) in enumerate(
            zip(flags, ("indice d'exonération", "indice d'indisponibilité"), strict=True)
        ):
            if char not in " 01":
                self.deviate(line, 89 + offset, f"{what} {char!r} : 0, 1 ou blanc attendu")
        amount = self.amount(line, record, decimals, target)
        if booking is None or value is None or amount is None:
            self.unreadable = _Unreadable(line, None if booking is None else head)
            self.open.incomplete = True
            return
        self.movement = _PendingMovement(
            line=line,
            head=head,
            booking_date=booking,
            value_date=value,
            amount=amount,
            label=record[48:79],
            op_code=op_code,
            entry_number=record[81:88].strip(),
            reject_code=reject.strip(),
            internal_code=internal.strip(),
            exempt=_flag(flags[0]) if flags[0] in " 01" else None,
            unavailable=_flag(flags[1]) if flags[1] in " 01" else None,
            reference=record[104:120].strip(),
        )

    def complement(self, line: int, record: str) -> None:
        movement = self.movement
        owner = movement or self.unreadable
        if owner is None:
            self.deviate(line, 1, "complément (05) sans mouvement (04) qui le précède", fatal=True)
            return
        # Position 21 is excluded: banks put a legacy "E" in the 04 only.
        head = record[2:20] + record[21:40]
        if owner.head is not None and head != owner.head:
            index = next(i for i, (a, b) in enumerate(zip(head, owner.head, strict=True)) if a != b)
            self.deviate(
                line,
                3 + index + (index >= 18),
                f"positions 3-40 différentes de celles du mouvement (ligne {owner.line})",
            )
        self.blank(line, record, 41, 45)
        qualifier = record[45:48]
        data = record[48:118]
        self.blank(line, record, 119, 120)
        upper = qualifier.upper()
        if upper not in _KNOWN_QUALIFIERS:
            if qualifier.strip():
                self.deviate(line, 46, f"qualifiant {qualifier!r} inconnu de la norme")
            else:
                self.deviate(line, 46, "qualifiant absent")
        else:
            self.sub_layout(line, upper, data)
        if movement is None:
            return  # the complement of an unreadable 04: checked, nothing to keep
        if upper == "LIB" and movement.continuing_label:
            movement.label = _join_label(movement.label, data)
            return
        movement.continuing_label = False
        movement.complements.append(Complement(qualifier.strip().upper(), data.rstrip()))

    def sub_layout(self, line: int, qualifier: str, data: str) -> None:
        if qualifier in ONE_FIELD:
            self.blank(line, " " * 48 + data, 84, 118)
        elif qualifier == "RUM":
            sequence = data[35:39]
            if sequence.strip() and sequence.upper() not in SEQUENCE_TYPES:
                self.deviate(
                    line, 84, f"type de séquence {sequence!r} inconnu (OOFF, FRST, RCUR, FNAL)"
                )
            self.blank(line, " " * 48 + data, 88, 118)
        elif qualifier == "MMO":
            currency, decimals, amount = data[:3], data[3], data[4:18]
            if currency.upper() not in CURRENCIES:
                self.deviate(line, 49, f"devise d'origine {currency!r} inconnue")
            if not _is_digits(decimals):
                self.deviate(line, 52, f"décimales du montant d'origine {decimals!r} invalides")
            if not _is_digits(amount):
                self.deviate(line, 53, f"montant d'origine {amount!r} : 14 chiffres attendus")
            rate_scale, rate = data[18:20], data[20:31]
            if (rate_scale + rate).strip() and not (_is_digits(rate_scale) and _is_digits(rate)):
                self.deviate(line, 67, f"taux de change {rate_scale + rate!r} invalide")
            self.blank(line, " " * 48 + data, 80, 118)

    def flush_movement(self) -> None:
        self.unreadable = None
        if self.movement is not None:
            assert self.open is not None
            self.open.movements.append(self.movement.freeze())
            self.open.lines.append(self.movement.line)
            self.movement = None

    def closing(self, line: int, record: str) -> None:
        current = self.open
        if current is None:
            self.deviate(line, 1, "nouveau solde (07) hors d'un relevé : 01 manquant", fatal=True)
            return
        self.open = None
        zones = self.account_zones(line, record)
        if zones is None or not self.same_statement(line, zones[3], current):
            return
        decimals, target = zones[1], current.decimals
        self.blank(line, record, 8, 11)
        self.blank(line, record, 33, 34)
        day = self.date(line, record, 35, "date du nouveau solde")
        self.blank(line, record, 41, 90)
        balance = self.amount(line, record, decimals, target)
        self.blank(line, record, 105, 120)
        if day is None or balance is None:
            return
        if day < current.opening_date:
            self.deviate(line, 35, "date du nouveau solde antérieure à celle de l'ancien solde")
        for movement, movement_line in zip(current.movements, current.lines, strict=True):
            if movement.booking_date > day:
                self.deviate(
                    movement_line,
                    35,
                    "date de comptabilisation postérieure à la date du nouveau solde"
                    f" (ligne {line})",
                )
        statement = Statement(
            current.account,
            current.opening_date,
            current.opening_balance,
            day,
            balance,
            tuple(current.movements),
        )
        if not statement.is_balanced and not current.incomplete:
            # With an unreadable 04 the balances cannot agree: that deviation is reported.
            computed = current.opening_balance + sum(m.amount for m in current.movements)
            self.deviate(
                line,
                91,
                f"nouveau solde {format_amount(balance, target)} différent de l'ancien solde"
                f" + mouvements = {format_amount(computed, target)}",
            )
        key = (
            current.account.bank_code,
            current.account.branch_code,
            current.account.number,
            current.account.currency,
        )
        previous = self.last_closed.get(key)
        if previous is not None:
            previous_line, before = previous
            if before.closing_balance != statement.opening_balance:
                self.deviate(
                    current.line,
                    91,
                    "ancien solde différent du nouveau solde du relevé précédent du même compte"
                    f" (ligne {previous_line})",
                )
            if before.closing_date != statement.opening_date:
                self.deviate(
                    current.line,
                    35,
                    "date de l'ancien solde différente de celle du nouveau solde du relevé"
                    f" précédent du même compte (ligne {previous_line})",
                )
        self.last_closed[key] = (line, statement)
        self.statements.append(statement)

    def finish(self, last_line: int) -> None:
        self.flush_movement()
        if self.open is not None:
            self.deviate(self.open.line, 1, "relevé sans nouveau solde (07)", fatal=True)
        if last_line == 0:
            self.deviate(1, 1, "fichier vide : aucun enregistrement", fatal=True)


def parse(source: str | Iterable[str]) -> ReadResult:
    """Read a CFONB120 file (its text, or an iterable of lines such as an open file) and
    return its statements with every deviation found, in file order."""
    parser = _Parser()
    last = 0
    for line, record in _records(_split(source)):
        last = line
        if line == 1 and record.startswith("\ufeff"):
            parser.deviate(1, 1, "marque d'ordre des octets (BOM) en début de fichier")
            record = record[1:]
        if record == "\x1a":
            parser.deviate(line, 1, "caractère de fin de fichier DOS (Ctrl-Z)")
            continue
        parser.record(line, record)
    parser.finish(last)
    return ReadResult(tuple(parser.statements), tuple(sorted(parser.deviations)))


def read(source: str | Iterable[str], *, strict: bool = False) -> tuple[Statement, ...]:
    """Return the statements of a CFONB120 file.

    Lenient (default): tolerate the variants banks send and raise :class:`CfonbReadError`
    only on fatal deviations. ``strict=True``: raise on any deviation.
    """
    result = parse(source)
    problems = result.deviations if strict else result.fatal
    if problems:
        raise CfonbReadError(problems)
    return result.statements


def check(source: str | Iterable[str]) -> tuple[Deviation, ...]:
    """Return every deviation of a CFONB120 file from the standard (empty if none)."""
    return parse(source).deviations

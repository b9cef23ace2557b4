"""Import of redevables from an Annexe 1 file: all lines valid, or nothing written.

Format: one redevable per line, 9 fields separated by ``;`` (SIREN; NIC; Raison Sociale;
Raison Sociale (Suite); Email; Périodicité; Mois; Jour; Saisie Identifiants Bancaires
Déportés), an optional header line, UTF-8 with or without BOM, or Windows-1252. Fields may be
quoted as spreadsheets write them; a trailing ``;`` is tolerated; blank lines are skipped.

A file is a hostile input: parsing runs in a thread (it is CPU-bound), stops after
``max_lines`` lines (100,000 by default, ``portal.import_max_lines``) with an issue saying so,
and a report keeps the first :data:`MAX_ISSUES_KEPT` issues by line plus their total.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from releves_mailer.clock import Clock
from releves_mailer.db.models import PortalAccount, Redevable
from releves_mailer.portfolio.redevables import (
    FIELD_LABELS,
    RedevableInput,
    Written,
    apply_input,
    validate_redevable,
)

__all__ = [
    "DEFAULT_MAX_LINES",
    "MAX_ISSUES_KEPT",
    "ImportIssue",
    "ImportReport",
    "import_redevables",
    "parse_import_file",
]

#: Lines read at most from a file, unless the caller says otherwise (config).
DEFAULT_MAX_LINES = 100_000
#: Issues a report keeps (the first ones by line); the others are only counted.
MAX_ISSUES_KEPT = 1_000
#: Redevables written per flush.
WRITE_SLICE = 200

COLUMNS = (
    "siren",
    "nic",
    "company_name",
    "company_name_2",
    "email",
    "periodicity",
    "month",
    "day",
    "remote_entry",
)


@dataclasses.dataclass(frozen=True)
class ImportIssue:
    """One problem of the file: line number (1-based, header included), field, value, reason."""

    line: int
    field: str
    value: str
    reason: str
    #: The SIRET is already on the importing account: importing again with updates enabled
    #: would replace it (each entry point names its own way to enable them).
    updatable: bool = False

    def with_remedy(self, remedy: str) -> ImportIssue:
        """This issue with ``remedy`` (`` (…)``) after its reason when it is updatable."""
        if not self.updatable:
            return self
        return dataclasses.replace(self, reason=f"{self.reason} ({remedy})")

    def __str__(self) -> str:
        label = FIELD_LABELS.get(self.field, self.field)
        where = f"ligne {self.line}"
        if self.field:
            where += f", champ « {label} »"
            where += f" (valeur « {self.value} »)" if self.value else " (vide)"
        return f"{where} : {self.reason}"


@dataclasses.dataclass(frozen=True)
class ParsedLine:
    line: int
    data: RedevableInput


class Issues:
    """The issues of a file: the first ``keep`` by line, their total, the lines at fault.

    Memory stays bounded whatever the file: a million wrong lines keep a thousand issues.
    """

    def __init__(self, keep: int = MAX_ISSUES_KEPT) -> None:
        self.keep = keep
        self.total = 0
        self.lines: set[int] = set()
        self._kept: list[ImportIssue] = []

    def add(self, issue: ImportIssue) -> None:
        self.total += 1
        self.lines.add(issue.line)
        self._kept.append(issue)
        if len(self._kept) >= 2 * self.keep:
            self._trim()

    def _trim(self) -> None:
        self._kept.sort(key=lambda issue: issue.line)
        del self._kept[self.keep :]

    @property
    def first(self) -> list[ImportIssue]:
        """The first ``keep`` issues, by line."""
        self._trim()
        return list(self._kept)

    def __bool__(self) -> bool:
        return self.total > 0


@dataclasses.dataclass
class ImportReport:
    """What an import did (or would do, with ``dry_run``)."""

    lines: int = 0
    created: int = 0
    updated: int = 0
    #: The first :data:`MAX_ISSUES_KEPT` issues, by line.
    issues: list[ImportIssue] = dataclasses.field(default_factory=list)
    #: Every issue found, and the lines they are on (``issues`` may hold fewer).
    issue_count: int = 0
    error_lines: int = 0
    #: The line cap, when the file went past it (reading stopped there).
    stopped_at: int | None = None
    dry_run: bool = False
    #: The redevables written, created ones first (none on a dry run or when a line is
    #: wrong): the caller hands them to the secure-link rule in the same transaction.
    written: list[Written] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.issue_count == 0 and self.stopped_at is None

    def summary(self) -> str:
        """What went wrong with a refused file, in French (after ``<file name> : ``)."""
        parts = []
        if self.stopped_at is not None:
            limit = f"{self.stopped_at:,}".replace(",", " ")
            parts.append(
                f"le fichier dépasse {limit} lignes (lecture arrêtée à la ligne {limit} : "
                "découpez-le en plusieurs fichiers)"
            )
        if self.issue_count:
            errors = f"{self.issue_count} erreur(s) sur {self.error_lines} ligne(s)"
            if len(self.issues) < self.issue_count:
                errors += f", les {len(self.issues)} premières détaillées"
            parts.append(errors)
        return " ; ".join(parts) + " : rien n'a été importé."


def _decode(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _is_header(fields: Sequence[str]) -> bool:
    first = fields[0].strip().lstrip("\ufeff").upper() if fields else ""
    return bool(first) and not first.isdigit() and "SIREN" in first


def parse_import_file(
    data: bytes, *, max_lines: int = DEFAULT_MAX_LINES, keep: int = MAX_ISSUES_KEPT
) -> tuple[list[ParsedLine], Issues, int | None]:
    """Check the lines (at most ``max_lines``); return the valid ones, the issues found and
    the line cap when the file goes past it. CPU-bound: :func:`import_redevables` runs it
    in a thread."""
    text = _decode(data)
    parsed: list[ParsedLine] = []
    issues = Issues(keep)
    seen: dict[str, int] = {}
    stopped_at = None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=";", quotechar='"', strict=True)
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            if reader.line_num > max_lines:
                stopped_at = max_lines
                break
            issues.add(ImportIssue(reader.line_num, "", "", f"ligne illisible ({error})"))
            continue
        line_number = reader.line_num
        if line_number > max_lines:
            stopped_at = max_lines
            break
        if not any(field.strip() for field in fields):
            continue
        if not parsed and not issues and _is_header(fields) and line_number == 1:
            continue
        if len(fields) == len(COLUMNS) + 1 and not fields[-1].strip():
            fields = fields[:-1]
        if len(fields) != len(COLUMNS):
            issues.add(
                ImportIssue(
                    line_number,
                    "",
                    "",
                    f"{len(fields)} champ(s) au lieu de {len(COLUMNS)} séparés par « ; »",
                )
            )
            continue
        values = dict(zip(COLUMNS, fields, strict=True))
        data_, problems = validate_redevable(
            siren=values["siren"],
            nic=values["nic"],
            company_name=values["company_name"],
            company_name_2=values["company_name_2"],
            email=values["email"],
            periodicity=values["periodicity"],
            month=values["month"],
            day=values["day"],
            remote_entry=values["remote_entry"],
        )
        for problem in problems:
            field = problem.field or ""
            issues.add(
                ImportIssue(line_number, field, values.get(field, "").strip(), problem.message)
            )
        if data_ is None:
            continue
        if data_.siret in seen:
            issues.add(
                ImportIssue(
                    line_number,
                    "siren",
                    values["siren"].strip(),
                    f"SIRET {data_.siret} déjà présent ligne {seen[data_.siret]} du fichier",
                )
            )
            continue
        seen[data_.siret] = line_number
        parsed.append(ParsedLine(line_number, data_))
    return parsed, issues, stopped_at


async def import_redevables(
    session: AsyncSession,
    clock: Clock,
    account: PortalAccount,
    data: bytes,
    *,
    update: bool = False,
    dry_run: bool = False,
    no_auto_link: bool = False,
    max_lines: int = DEFAULT_MAX_LINES,
) -> ImportReport:
    """Import an Annexe 1 file into ``account``.

    Every line is checked first (in a thread), at most ``max_lines`` of them. If any line
    is wrong, or the file is longer, nothing is written and the report lists the first
    issues and counts them all. A SIRET already present in the account's family is an
    issue, unless ``update`` is set and it belongs to this very account (then its fields
    are replaced). ``no_auto_link`` sets "ne pas générer automatiquement le jeton" on every
    redevable of the file (the file has no such field; without it, updated redevables keep
    their own). The caller's transaction is flushed, not committed.
    """
    parsed, issues, stopped_at = await asyncio.to_thread(
        parse_import_file, data, max_lines=max_lines
    )
    report = ImportReport(dry_run=dry_run, stopped_at=stopped_at)
    existing: dict[str, Redevable] = {}
    logins: dict[int, str] = {}
    if parsed and stopped_at is None:
        rows = await session.execute(
            select(Redevable, PortalAccount.login)
            .join(PortalAccount, PortalAccount.id == Redevable.account_id)
            .where(Redevable.family_id == account.family_id)
        )
        for redevable, login in rows:
            existing[redevable.siret] = redevable
            logins[redevable.id] = login
    to_create: list[ParsedLine] = []
    to_update: list[tuple[Redevable, ParsedLine]] = []
    for item in parsed:
        owner = existing.get(item.data.siret)
        if owner is None:
            to_create.append(item)
        elif update and owner.account_id == account.id:
            to_update.append((owner, item))
        else:
            where = logins[owner.id]
            issues.add(
                ImportIssue(
                    item.line,
                    "siren",
                    item.data.siren,
                    f"SIRET {item.data.siret} déjà présent sur le compte « {where} »",
                    updatable=owner.account_id == account.id,
                )
            )
    report.lines = len(parsed) + len(issues.lines - {item.line for item in parsed})
    report.issues = issues.first
    report.issue_count = issues.total
    report.error_lines = len(issues.lines)
    if not report.ok:
        return report
    report.created = len(to_create)
    report.updated = len(to_update)
    if dry_run:
        return report
    now = clock.now()
    # Written in slices, each flushed before the next: the ORM's work on a slice is short,
    # and the event loop serves other clients between them.
    for count, item in enumerate(to_create, start=1):
        redevable = Redevable(
            account_id=account.id,
            family_id=account.family_id,
            active=True,
            created_at=now,
            updated_at=now,
        )
        apply_input(redevable, item.data)
        redevable.no_auto_link = no_auto_link
        session.add(redevable)
        report.written.append(Written(redevable))
        if count % WRITE_SLICE == 0:
            await session.flush()
    for count, (redevable, item) in enumerate(to_update, start=1):
        # These options are not in the file: an update keeps the ones set on the portal.
        kept = (redevable.no_auto_link, redevable.include_pending, redevable.skip_empty_mail)
        was_remote = redevable.remote_entry
        apply_input(redevable, item.data)
        redevable.no_auto_link, redevable.include_pending, redevable.skip_empty_mail = kept
        redevable.no_auto_link = redevable.no_auto_link or no_auto_link
        redevable.updated_at = now
        report.written.append(Written(redevable, was_remote=was_remote))
        if count % WRITE_SLICE == 0:
            await session.flush()
    await session.flush()
    return report

"""Import of redevables from an Annexe 1 file: all lines valid, or nothing written.

Format: one redevable per line, 9 fields separated by ``;`` (SIREN; NIC; Raison Sociale;
Raison Sociale (Suite); Email; Périodicité; Mois; Jour; Saisie Identifiants Bancaires
Déportés), an optional header line, UTF-8 with or without BOM, or Windows-1252. Fields may be
quoted as spreadsheets write them; a trailing ``;`` is tolerated; blank lines are skipped.
"""

from __future__ import annotations

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

__all__ = ["ImportIssue", "ImportReport", "import_redevables", "parse_import_file"]

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


@dataclasses.dataclass
class ImportReport:
    """What an import did (or would do, with ``dry_run``)."""

    lines: int = 0
    created: int = 0
    updated: int = 0
    issues: list[ImportIssue] = dataclasses.field(default_factory=list)
    dry_run: bool = False
    #: The redevables written, created ones first (none on a dry run or when a line is
    #: wrong): the caller hands them to the secure-link rule in the same transaction.
    written: list[Written] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.issues


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


def parse_import_file(data: bytes) -> tuple[list[ParsedLine], list[ImportIssue]]:
    """Check every line; return the valid ones and every issue found."""
    text = _decode(data)
    parsed: list[ParsedLine] = []
    issues: list[ImportIssue] = []
    seen: dict[str, int] = {}
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=";", quotechar='"', strict=True)
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            issues.append(ImportIssue(reader.line_num, "", "", f"ligne illisible ({error})"))
            continue
        line_number = reader.line_num
        if not any(field.strip() for field in fields):
            continue
        if not parsed and not issues and _is_header(fields) and line_number == 1:
            continue
        if len(fields) == len(COLUMNS) + 1 and not fields[-1].strip():
            fields = fields[:-1]
        if len(fields) != len(COLUMNS):
            issues.append(
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
            issues.append(
                ImportIssue(line_number, field, values.get(field, "").strip(), problem.message)
            )
        if data_ is None:
            continue
        if data_.siret in seen:
            issues.append(
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
    return parsed, issues


async def import_redevables(
    session: AsyncSession,
    clock: Clock,
    account: PortalAccount,
    data: bytes,
    *,
    update: bool = False,
    dry_run: bool = False,
    no_auto_link: bool = False,
) -> ImportReport:
    """Import an Annexe 1 file into ``account``.

    Every line is checked first. If any line is wrong nothing is written and the report
    lists every issue. A SIRET already present in the account's family is an issue, unless
    ``update`` is set and it belongs to this very account (then its fields are replaced).
    ``no_auto_link`` sets "ne pas générer automatiquement le jeton" on every redevable of
    the file (the file has no such field; without it, updated redevables keep their own).
    The caller's transaction is flushed, not committed.
    """
    parsed, issues = parse_import_file(data)
    report = ImportReport(lines=len(parsed) + len({i.line for i in issues}), dry_run=dry_run)
    existing: dict[str, Redevable] = {}
    logins: dict[int, str] = {}
    if parsed:
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
            hint = "" if owner.account_id != account.id else " (option --update pour le modifier)"
            issues.append(
                ImportIssue(
                    item.line,
                    "siren",
                    item.data.siren,
                    f"SIRET {item.data.siret} déjà présent sur le compte « {where} »{hint}",
                )
            )
    issues.sort(key=lambda issue: issue.line)
    report.issues = issues
    if issues:
        return report
    report.created = len(to_create)
    report.updated = len(to_update)
    if dry_run:
        return report
    now = clock.now()
    for item in to_create:
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
    for redevable, item in to_update:
        # These options are not in the file: an update keeps the ones set on the portal.
        kept = (redevable.no_auto_link, redevable.include_pending, redevable.skip_empty_mail)
        was_remote = redevable.remote_entry
        apply_input(redevable, item.data)
        redevable.no_auto_link, redevable.include_pending, redevable.skip_empty_mail = kept
        redevable.no_auto_link = redevable.no_auto_link or no_auto_link
        redevable.updated_at = now
        report.written.append(Written(redevable, was_remote=was_remote))
    await session.flush()
    return report

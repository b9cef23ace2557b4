"""Annexe 1 import: every bad line reported with field and reason, and all-or-nothing."""

from __future__ import annotations

from sqlalchemy import func, select

from releves_mailer.clock import ManualClock
from releves_mailer.db import Database
from releves_mailer.db.models import PortalAccount, Redevable
from releves_mailer.portfolio.importer import import_redevables, parse_import_file
from tests.factories import make_nic, make_siren

HEADER = (
    "SIREN;NIC;Raison Sociale;Raison Sociale (Suite);Email;Périodicité;Mois;Jour;"
    "Saisie Identifiants Bancaires Déportés"
)


def good_line(index: int) -> str:
    siren = make_siren(100 + index)
    return f"{siren};{make_nic(siren)};SOCIETE {index};;s{index}@example.com;MENSUELLE;;0;1"


async def count_redevables(database: Database) -> int:
    async with database.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Redevable)) or 0)


async def test_three_bad_lines_among_twenty_are_reported_and_nothing_is_written(
    database: Database, clock: ManualClock, family: tuple[PortalAccount, PortalAccount]
) -> None:
    primary, _ = family
    lines = [HEADER] + [good_line(i) for i in range(20)]
    # Line numbers count the header as line 1: data line i is file line i + 2.
    lines[5] = lines[5].replace(";MENSUELLE;", ";MENSUEL;")  # unknown periodicity
    bad_siren = "123456789"  # fails Luhn
    lines[9] = bad_siren + lines[9][9:]
    lines[14] = lines[14].replace("@example.com", "")  # remote entry needs an e-mail
    lines[14] = lines[14].replace(f"s{13}", "")
    data = ("\n".join(lines) + "\n").encode("utf-8")

    async with database.session() as session:
        primary = await session.get_one(PortalAccount, primary.id)
        report = await import_redevables(session, clock, primary, data)

    assert [(issue.line, issue.field) for issue in report.issues] == [
        (6, "periodicity"),
        (10, "siren"),
        (15, "email"),
    ]
    assert "inconnue" in report.issues[0].reason
    assert report.issues[0].value == "MENSUEL"
    assert "Luhn" in report.issues[1].reason and report.issues[1].value == bad_siren
    assert "déportée" in report.issues[2].reason
    assert str(report.issues[0]).startswith("ligne 6, champ « Périodicité » (valeur « MENSUEL »)")
    assert report.created == 0
    assert await count_redevables(database) == 0


async def test_valid_file_imports_every_line_in_cp1252_with_bom_variants(
    database: Database, clock: ManualClock, family: tuple[PortalAccount, PortalAccount]
) -> None:
    primary, _ = family
    siren = make_siren(7)
    text = f"{siren};;SOCIÉTÉ GÉNÉRALE DES ÉCLUSES;;;HEBDOMADAIRE;;2;0\r\n"
    async with database.session() as session:
        account = await session.get_one(PortalAccount, primary.id)
        report = await import_redevables(session, clock, account, text.encode("cp1252"))
    assert report.ok and report.created == 1
    async with database.session() as session:
        stored = await session.scalar(select(Redevable))
    assert stored is not None
    assert stored.company_name == "SOCIÉTÉ GÉNÉRALE DES ÉCLUSES"
    assert stored.day == 2 and stored.month is None

    parsed, issues, stopped_at = parse_import_file(
        b"\xef\xbb\xbf" + HEADER.encode() + b"\n" + good_line(1).encode() + b";\n\n"
    )
    assert not issues and len(parsed) == 1 and parsed[0].line == 2 and stopped_at is None


async def test_duplicates_in_file_and_across_the_family(
    database: Database, clock: ManualClock, family: tuple[PortalAccount, PortalAccount]
) -> None:
    primary, secondary = family
    async with database.session() as session:
        account = await session.get_one(PortalAccount, secondary.id)
        report = await import_redevables(session, clock, account, good_line(1).encode())
    assert report.created == 1

    data = "\n".join([good_line(2), good_line(2), good_line(1)]).encode()
    async with database.session() as session:
        account = await session.get_one(PortalAccount, primary.id)
        report = await import_redevables(session, clock, account, data)
    assert [(i.line, i.field) for i in report.issues] == [(2, "siren"), (3, "siren")]
    assert "déjà présent ligne 1" in report.issues[0].reason
    assert "compte « agence »" in report.issues[1].reason
    assert await count_redevables(database) == 1


async def test_update_replaces_fields_of_this_account_only(
    database: Database, clock: ManualClock, family: tuple[PortalAccount, PortalAccount]
) -> None:
    primary, _ = family
    async with database.session() as session:
        account = await session.get_one(PortalAccount, primary.id)
        await import_redevables(session, clock, account, good_line(3).encode())
    changed = good_line(3).replace("MENSUELLE;;0", "TRIMESTRIELLE;2;15")
    async with database.session() as session:
        account = await session.get_one(PortalAccount, primary.id)
        refused = await import_redevables(session, clock, account, changed.encode())
        # The service names no command-line option: each entry point phrases the remedy.
        assert refused.issues[0].updatable and "--update" not in refused.issues[0].reason
        dry = await import_redevables(
            session, clock, account, changed.encode(), update=True, dry_run=True
        )
        assert dry.ok and dry.updated == 1
    async with database.session() as session:
        stored = await session.scalar(select(Redevable))
        assert stored is not None and stored.periodicity == "MENSUELLE"
        account = await session.get_one(PortalAccount, primary.id)
        done = await import_redevables(session, clock, account, changed.encode(), update=True)
        assert done.updated == 1
    async with database.session() as session:
        stored = await session.scalar(select(Redevable))
    assert stored is not None
    assert (stored.periodicity, stored.month, stored.day) == ("TRIMESTRIELLE", 2, 15)


def test_line_shape_errors() -> None:
    parsed, issues, _ = parse_import_file(b"910433218;x;y\n" + good_line(1).encode() + b"\n")
    assert len(parsed) == 1
    assert [(i.line, i.field) for i in issues.first] == [(1, "")]
    assert "3 champ(s) au lieu de 9" in issues.first[0].reason
    _, issues, _ = parse_import_file(f"{make_siren(5)};12;NOM;;;JOURNALIERE;1;;2\n".encode())
    assert sorted(i.field for i in issues.first) == ["month", "nic", "remote_entry"]

"""The deposit store and the discovery of redevables: windows, duplicates, family, refusals."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import func, select

from releves_mailer.clock import ManualClock
from releves_mailer.db import Database
from releves_mailer.db.models import (
    EdiDeclaration,
    EdiDeposit,
    Periodicity,
    PortalAccount,
    Redevable,
)
from releves_mailer.edi.discover import analysis_lock, months_before
from releves_mailer.errors import UserError
from releves_mailer.portfolio.redevables import create_redevable, validate_redevable
from releves_mailer.services.edi import AnalysisJobs, EdiService
from tests.edi.interchanges import ALL_PROCEDURES, Decl, company, interchange
from tests.waiting import polls

Family = tuple[PortalAccount, PortalAccount]


def _file(*decls: Decl, reference: str = "E1") -> bytes:
    return interchange(list(decls), reference=reference)


def _decl(index: int, deposited_on: dt.date, **changes: object) -> Decl:
    siren, nic = company(index, with_nic=bool(changes.pop("with_nic", False)))
    return Decl(
        siren=siren,
        nic=nic,
        name=str(changes.pop("name", f"SOCIETE {index}")),
        deposited_on=deposited_on,
        **changes,  # type: ignore[arg-type]
    )


async def _redevables(database: Database, account_id: int) -> dict[str, Redevable]:
    async with database.session() as session:
        rows = await session.scalars(select(Redevable).where(Redevable.account_id == account_id))
        return {r.siren: r for r in rows}


async def test_first_window_is_18_months_then_incremental(
    database: Database, clock: ManualClock, family: Family
) -> None:
    primary, _ = family
    service = EdiService(database, clock)
    # The clock says 2026-03-10: the first window starts on 2024-09-10.
    old = _decl(1, dt.date(2024, 9, 9))
    edge = _decl(2, dt.date(2024, 9, 10), procedure="TDFC", with_nic=True)
    recent = _decl(3, dt.date(2026, 2, 1), procedure="PAIEMENT")
    filed = await service.file_deposits(
        primary.id, [("a.edi", _file(old, edge, recent))], source="command"
    )
    assert filed[0].ok and filed[0].new and filed[0].declarations == 3

    first = await service.discover(primary.id)
    assert first.window_start == dt.date(2024, 9, 10)
    assert {f.siren for f in first.created} == {edge.siren, recent.siren}
    found = await _redevables(database, primary.id)
    assert set(found) == {edge.siren, recent.siren}
    made = found[edge.siren]
    assert made.nic == edge.nic and made.company_name == "SOCIETE 2"
    assert made.periodicity is Periodicity.MENSUELLE and made.day == 0 and made.month is None
    assert made.email == "" and made.remote_entry is False

    # Between the two analyses: a new deposit, and one dated before the first analysis.
    clock.advance(dt.timedelta(days=20))
    between = _decl(4, dt.date(2026, 3, 20), procedure="IR")
    again = _decl(1, dt.date(2024, 9, 9), name="SOCIETE 1 BIS")
    await service.file_deposits(
        primary.id, [("b.edi", _file(between, again, recent, reference="E2"))], source="upload"
    )
    second = await service.discover(primary.id)
    assert second.window_start == dt.date(2026, 3, 10)
    assert [f.siren for f in second.created] == [between.siren]
    # ``recent`` came back in a file filed after the first analysis: counted, not changed.
    assert [f.siren for f in second.present] == [recent.siren]
    assert set(await _redevables(database, primary.id)) == {
        edge.siren,
        recent.siren,
        between.siren,
    }

    # Nothing new: the third analysis creates nothing.
    clock.advance(dt.timedelta(days=1))
    third = await service.discover(primary.id)
    assert not third.created and not third.refused
    assert (await service.overview(primary.id)).last_analysis == clock.now()


async def test_same_file_twice_is_kept_once(
    database: Database, clock: ManualClock, family: Family
) -> None:
    primary, _ = family
    service = EdiService(database, clock)
    data = _file(_decl(1, dt.date(2026, 1, 5)), _decl(2, dt.date(2026, 1, 5)))
    first = await service.file_deposits(primary.id, [("x.edi", data)], source="upload")
    second = await service.file_deposits(primary.id, [("copie.edi", data)], source="mail")
    assert first[0].new and second[0].ok and not second[0].new
    async with database.session() as session:
        assert await session.scalar(select(func.count()).select_from(EdiDeposit)) == 1
        assert await session.scalar(select(func.count()).select_from(EdiDeclaration)) == 2
    assert (await service.overview(primary.id)).deposits == 1


async def test_siren_of_a_secondary_account_is_not_created_again(
    database: Database, clock: ManualClock, family: Family
) -> None:
    primary, secondary = family
    siren, _ = company(7)
    data, errors = validate_redevable(
        siren=siren, company_name="DEJA LA", periodicity="ANNUELLE", month=12, day=31
    )
    assert data is not None, errors
    async with database.session() as session:
        account = await session.get(PortalAccount, secondary.id)
        assert account is not None
        await create_redevable(session, clock, account, data)
    service = EdiService(database, clock)
    await service.file_deposits(
        primary.id,
        [
            (
                "f.edi",
                _file(_decl(7, dt.date(2026, 1, 2), with_nic=True), _decl(8, dt.date(2026, 1, 2))),
            )
        ],
        source="command",
    )
    report = await service.discover(primary.id)
    assert [f.siren for f in report.present] == [siren]
    assert [f.siren for f in report.created] == [company(8)[0]]
    assert set(await _redevables(database, secondary.id)) == {siren}
    assert (await _redevables(database, secondary.id))[siren].company_name == "DEJA LA"


async def test_bad_files_are_named_and_nothing_of_them_is_kept(
    database: Database, clock: ManualClock, family: Family
) -> None:
    primary, _ = family
    service = EdiService(database, clock)
    good = _file(_decl(1, dt.date(2026, 1, 5)))
    truncated = good[: good.index(b"NAD+DT") + 8]
    unknown = _file(_decl(2, dt.date(2026, 1, 5))).replace(b"UN:TVA'", b"UN:XYZ'")
    siren, _ = company(3)
    bad_key = _file(Decl(siren=siren[:8] + str((int(siren[8]) + 1) % 10), name="KO"))
    results = await service.file_deposits(
        primary.id,
        [
            ("tronque.edi", truncated),
            ("inconnu.edi", unknown),
            ("cle.edi", bad_key),
            ("texte.txt", b"bonjour"),
            ("bon.edi", good),
        ],
        source="upload",
    )
    assert [r.ok for r in results] == [False, False, False, False, True]
    assert results[0].error.startswith("tronque.edi : segment n° 7 : ")
    assert results[1].error.startswith("inconnu.edi : segment n° 2 : téléprocédure inconnue")
    assert results[2].error.startswith("cle.edi : segment n° 7 : SIREN invalide")
    assert results[3].error.startswith("texte.txt : segment n° 1 : ce n'est pas un échange")
    async with database.session() as session:
        names = list(await session.scalars(select(EdiDeposit.file_name)))
        assert names == ["bon.edi"]
        assert await session.scalar(select(func.count()).select_from(EdiDeclaration)) == 1


async def test_refusals_dry_run_and_long_names(
    database: Database, clock: ManualClock, family: Family
) -> None:
    primary, _ = family
    service = EdiService(database, clock)
    long_name = "SOCIETE CIVILE IMMOBILIERE DES GRANDS ETANGS DU NORD ET DE LA SOMME REUNIS"
    decls = [
        _decl(index, dt.date(2026, 1, 1 + index), procedure=procedure)
        for index, procedure in enumerate(ALL_PROCEDURES)
    ]
    decls.append(Decl(siren=company(20)[0], name=long_name, deposited_on=dt.date(2026, 2, 1)))
    await service.file_deposits(primary.id, [("all.edi", _file(*decls))], source="command")
    dry = await service.discover(primary.id, dry_run=True)
    assert len(dry.created) == len(ALL_PROCEDURES) + 1
    assert await _redevables(database, primary.id) == {}
    assert (await service.overview(primary.id)).last_analysis is None
    report = await service.discover(primary.id)
    assert len(report.created) == len(ALL_PROCEDURES) + 1
    made = (await _redevables(database, primary.id))[company(20)[0]]
    assert made.company_name == "SOCIETE CIVILE IMMOBILIERE DES"
    assert made.company_name_2 == "GRANDS ETANGS DU NORD ET DE LA SOMM"
    assert len(made.company_name) <= 35 and len(made.company_name_2) <= 35


async def test_unschedulable_default_is_refused_with_reason(
    database: Database, clock: ManualClock, family: Family
) -> None:
    from releves_mailer.edi.discover import DiscoverySettings

    primary, _ = family
    service = EdiService(database, clock, DiscoverySettings("TRIMESTRIELLE", None, 5))
    await service.file_deposits(
        primary.id, [("q.edi", _file(_decl(1, dt.date(2026, 1, 1))))], source="command"
    )
    report = await service.discover(primary.id)
    assert not report.created and len(report.refused) == 1
    assert "Mois" in report.refused[0].reason or "mois" in report.refused[0].reason


async def test_two_analyses_of_one_account_never_run_at_once(
    database: Database, clock: ManualClock, family: Family
) -> None:
    primary, secondary = family
    service = EdiService(database, clock)
    async with analysis_lock(database, clock, primary.id):
        with pytest.raises(UserError, match="déjà en cours"):
            await service.discover(primary.id)
        # Another account is not held up.
        assert (await service.discover(secondary.id)).created == []
    # Released: it runs now; a crashed run's lock expires after an hour.
    await service.discover(primary.id)
    async with analysis_lock(database, clock, primary.id):
        clock.advance(dt.timedelta(hours=2))
        await service.discover(primary.id)
    results = await asyncio.gather(
        service.discover(primary.id), service.discover(primary.id), return_exceptions=True
    )
    assert sum(isinstance(r, UserError) for r in results) <= 1
    assert any(not isinstance(r, BaseException) for r in results)


async def test_portal_job_waits_for_a_running_analysis_then_gives_up(
    database: Database, clock: ManualClock, family: Family
) -> None:
    primary, _ = family
    service = EdiService(database, clock)
    jobs = AnalysisJobs(service, retry_every=0.01, wait_for=0.05)
    try:
        async with analysis_lock(database, clock, primary.id):
            number = jobs.start(primary.id)
            # The job gives up after 0.05 s; the minute of polls is a hang guard.
            async for _ in polls("the job neither ran nor gave up", every=0.01):
                if (outcome := jobs.result(primary.id, number)) is not None:
                    break
        assert isinstance(outcome, UserError) and "déjà en cours" in outcome.message
        assert isinstance(jobs.result(primary.id + 1, number), UserError)  # not its job
    finally:
        await jobs.close()


def test_months_before_clamps() -> None:
    assert months_before(dt.date(2026, 3, 10), 18) == dt.date(2024, 9, 10)
    assert months_before(dt.date(2026, 8, 31), 18) == dt.date(2025, 2, 28)
    assert months_before(dt.date(2026, 1, 15), 1) == dt.date(2025, 12, 15)


async def test_deposits_spread_over_24_months(
    database: Database, clock: ManualClock, family: Family
) -> None:
    """Every procedure, several declarations a file, deposit dates over 24 months: the first
    analysis creates exactly the companies deposited in the last 18 months."""
    from releves_mailer.edi.read import read_interchange
    from tests.edi.interchanges import spread_deposits

    primary, _ = family
    files = spread_deposits(count=60, companies=40, until=dt.date(2026, 3, 9), seed=3)
    floor = dt.date(2024, 9, 10)
    declarations = [d for name, data in files for d in read_interchange(data, name).declarations]
    assert {d.procedure for d in declarations} == {f"EDI-{p}" for p in ALL_PROCEDURES}
    assert min(d.deposited_on for d in declarations) < floor  # some are too old
    expected = {d.siren for d in declarations if d.deposited_on >= floor}
    service = EdiService(database, clock)
    results = await service.file_deposits(primary.id, files, source="command")
    assert all(r.ok and r.new for r in results)
    report = await service.discover(primary.id)
    assert {f.siren for f in report.created} == expected
    assert report.declarations == sum(d.deposited_on >= floor for d in declarations)

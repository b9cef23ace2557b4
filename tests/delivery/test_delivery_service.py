"""Statement mails land in the right box, signed, zipped above 2 MB, exactly once."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import subprocess
import zipfile
from collections.abc import AsyncIterator, Callable
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from sqlalchemy import select

from releves_mailer.clock import ManualClock
from releves_mailer.config import PortalSection
from releves_mailer.db import Database
from releves_mailer.db.models import (
    BankAccount,
    BankConnection,
    ConnectionState,
    MailFolder,
    MailMessage,
    PortalAccount,
    ReceptionMode,
)
from releves_mailer.db.models.statements import (
    Statement,
    StatementFile,
    StatementState,
    WindowKind,
)
from releves_mailer.delivery.service import StatementDelivery
from releves_mailer.mailbox.store import MessageStore
from releves_mailer.portfolio.redevables import create_redevable, validate_redevable
from releves_mailer.render import Renderer
from releves_mailer.signing.smime import SmimeSigner
from tests.factories import make_siren

DOMAIN = "releves.example"
CFONB = (b"01" + b"0" * 118 + b"\n") + (b"07" + b"0" * 118 + b"\n")


async def add_statement(
    database: Database,
    clock: ManualClock,
    account: PortalAccount,
    index: int,
    *,
    cfonb: bytes = CFONB,
    csv: bytes | None = None,
    movements: int = 1,
    skip_empty_mail: bool = False,
) -> int:
    now = clock.now()
    async with database.session() as session:
        data, problems = validate_redevable(
            siren=make_siren(500 + index),
            company_name=f"SOCIETE {index}",
            periodicity="HEBDOMADAIRE",
            day=2,
            skip_empty_mail=skip_empty_mail,
        )
        assert data is not None and not problems
        redevable = await create_redevable(session, clock, account, data)
        connection = BankConnection(
            redevable_id=redevable.id,
            provider="testbank",
            provider_connection_id=f"c{index}",
            token_encrypted=b"x",
            state=ConnectionState.OK,
            bank_name="Connecteur de test",
            active=True,
            created_at=now,
            updated_at=now,
        )
        session.add(connection)
        await session.flush()
        bank_account = BankAccount(
            redevable_id=redevable.id,
            connection_id=connection.id,
            provider_account_id=f"a{index}",
            iban="FR7613026240019300290000029",
            label="Compte chèque",
            activated_at=now,
            created_at=now,
            updated_at=now,
        )
        session.add(bank_account)
        await session.flush()
        statement = Statement(
            account_id=bank_account.id,
            redevable_id=redevable.id,
            sequence=1,
            due_date=dt.date(2026, 3, 9),
            period_start=dt.date(2026, 2, 9),
            period_end=dt.date(2026, 3, 9),
            window=WindowKind.FIRST,
            periodicity="HEBDOMADAIRE",
            created_at=now,
            updated_at=now,
            state=StatementState.PRODUCED,
            currency="EUR",
            iban=bank_account.iban,
            movement_count=movements,
            deleted_count=1 if csv else 0,
            opening_balance=1000,
            closing_balance=1000,
            bank_balance=1000,
        )
        session.add(statement)
        await session.flush()
        session.add(StatementFile(statement_id=statement.id, kind="cfonb", content=cfonb))
        if csv is not None:
            session.add(StatementFile(statement_id=statement.id, kind="csv", content=csv))
        return statement.id


async def box_messages(database: Database, store: MessageStore, owner: str) -> list[bytes]:
    async with database.session() as session:
        blobs = (
            await session.scalars(
                select(MailMessage.blob)
                .join(MailFolder, MailFolder.id == MailMessage.folder_id)
                .where(MailFolder.owner == owner, MailFolder.name == "INBOX")
                .order_by(MailMessage.uid)
            )
        ).all()
    return [await store.read_blob(blob) for blob in blobs]


@pytest.fixture
async def delivery_parts(
    database: Database, clock: ManualClock, tmp_path: Path, signer: SmimeSigner
) -> AsyncIterator[tuple[MessageStore, Callable[[], StatementDelivery]]]:
    store = MessageStore(database, tmp_path / "messages", clock)

    def make() -> StatementDelivery:
        return StatementDelivery(
            database, store, Renderer(), signer, clock, PortalSection(domain=DOMAIN, name="Portail")
        )

    yield store, make
    await store.close()


async def test_reception_modes_and_signatures(
    database: Database,
    clock: ManualClock,
    family: tuple[PortalAccount, PortalAccount],
    delivery_parts: tuple[MessageStore, Callable[[], StatementDelivery]],
    openssl_verify: Callable[[bytes], subprocess.CompletedProcess[bytes]],
) -> None:
    primary, secondary = family
    async with database.session() as session:
        second = await session.get_one(PortalAccount, secondary.id)
        second.reception_mode = ReceptionMode.DEDICATED
    first_id = await add_statement(database, clock, primary, 1, csv=b"\xef\xbb\xbfIBAN;...\r\n")
    dedicated_id = await add_statement(database, clock, secondary, 2)
    store, make = delivery_parts
    report = await make().deliver_due()
    assert (report.delivered, report.not_mailed) == (2, 0)

    cabinet = await box_messages(database, store, f"cabinet@{DOMAIN}")
    assert len(cabinet) == 1
    assert await box_messages(database, store, f"agence@{DOMAIN}") == []
    assert len(await box_messages(database, store, f"releves.agence@{DOMAIN}")) == 1
    verified = openssl_verify(cabinet[0])
    assert verified.returncode == 0, verified.stderr
    mail = BytesParser(policy=policy.default).parsebytes(cabinet[0])
    assert mail["Message-ID"] == f"<releve-{first_id}@{DOMAIN}>"
    assert mail["From"] == f"Portail <portail@{DOMAIN}>"
    assert mail["Reply-To"] == f"noreply@{DOMAIN}"
    assert str(mail["Subject"]).startswith("Relevé HEBDOMADAIRE du compte bancaire SOCIETE 1")
    names = [part.get_filename() for part in mail.walk() if part.get_filename()]
    assert names == [
        "Releve_FR7613026240019300290000029_20260209-20260309.cfonb",
        "Transactions_supprimees_FR7613026240019300290000029_20260209-20260309.csv",
        "smime.p7s",
    ]
    async with database.session() as session:
        rows = {s.id: s for s in (await session.scalars(select(Statement))).all()}
    assert rows[first_id].delivery_box == f"cabinet@{DOMAIN}"
    assert rows[first_id].delivered_at == clock.now()
    assert rows[dedicated_id].delivery_box == f"releves.agence@{DOMAIN}"
    # Nothing more to do, however often it runs.
    again = await make().deliver_due()
    assert (again.delivered, again.not_mailed) == (0, 0)
    assert len(await box_messages(database, store, f"cabinet@{DOMAIN}")) == 1


async def test_mode_none_and_skipped_empty_statements_stay_downloadable(
    database: Database,
    clock: ManualClock,
    family: tuple[PortalAccount, PortalAccount],
    delivery_parts: tuple[MessageStore, Callable[[], StatementDelivery]],
) -> None:
    primary, _ = family
    empty_id = await add_statement(database, clock, primary, 3, movements=0, skip_empty_mail=True)
    async with database.session() as session:
        account = await session.get_one(PortalAccount, primary.id)
        account.reception_mode = ReceptionMode.NONE
    none_id = await add_statement(database, clock, primary, 4)
    store, make = delivery_parts
    report = await make().deliver_due()
    assert (report.delivered, report.not_mailed) == (0, 2)
    assert await box_messages(database, store, f"cabinet@{DOMAIN}") == []
    async with database.session() as session:
        account = await session.get_one(PortalAccount, primary.id)
        account.reception_mode = ReceptionMode.DEFAULT  # too late for those two
        boxes = {
            s.id: (s.delivery_box, s.delivered_at)
            for s in (await session.scalars(select(Statement))).all()
        }
        files = (await session.scalars(select(StatementFile.statement_id))).all()
    assert boxes == {empty_id: ("", None), none_id: ("", None)}
    assert set(files) == {empty_id, none_id}
    assert (await make().deliver_due()).delivered == 0


async def test_above_two_megabytes_travels_zipped(
    database: Database,
    clock: ManualClock,
    family: tuple[PortalAccount, PortalAccount],
    delivery_parts: tuple[MessageStore, Callable[[], StatementDelivery]],
    openssl_verify: Callable[[bytes], subprocess.CompletedProcess[bytes]],
) -> None:
    primary, _ = family
    line = b"04" + b"1" * 118 + b"\n"
    big = CFONB[:121] + line * 20_000 + CFONB[121:]
    assert len(big) > 2 * 1024 * 1024
    await add_statement(database, clock, primary, 5, cfonb=big)
    store, make = delivery_parts
    await make().deliver_due()
    [raw] = await box_messages(database, store, f"cabinet@{DOMAIN}")
    assert openssl_verify(raw).returncode == 0
    mail = BytesParser(policy=policy.default).parsebytes(raw)
    [attachment] = [part for part in mail.walk() if (part.get_filename() or "").endswith(".zip")]
    assert not [p for p in mail.walk() if (p.get_filename() or "").endswith(".cfonb")]
    with zipfile.ZipFile(io.BytesIO(attachment.get_content())) as archive:
        [member] = archive.namelist()
        assert member.endswith(".cfonb")
        assert archive.read(member) == big


async def test_concurrent_deliverers_deliver_each_statement_once(
    database: Database,
    clock: ManualClock,
    family: tuple[PortalAccount, PortalAccount],
    delivery_parts: tuple[MessageStore, Callable[[], StatementDelivery]],
) -> None:
    primary, _ = family
    for index in range(6):
        await add_statement(database, clock, primary, 10 + index)
    store, make = delivery_parts
    reports = await asyncio.gather(make().deliver_due(), make().deliver_due(), make().deliver_due())
    assert sum(r.delivered for r in reports) == 6
    messages = await box_messages(database, store, f"cabinet@{DOMAIN}")
    ids = sorted(BytesParser(policy=policy.default).parsebytes(m)["Message-ID"] for m in messages)
    assert len(ids) == 6 and len(set(ids)) == 6


async def test_a_crash_between_delivery_and_mark_delivers_once(
    database: Database,
    clock: ManualClock,
    family: tuple[PortalAccount, PortalAccount],
    delivery_parts: tuple[MessageStore, Callable[[], StatementDelivery]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    primary, _ = family
    ids = [await add_statement(database, clock, primary, 20 + index) for index in range(3)]
    store, make = delivery_parts

    async def crash(*_: object) -> set[int]:
        raise RuntimeError("killed after the delivery, before the mark")

    first = make()
    monkeypatch.setattr(first, "_claim", crash)
    with pytest.raises(RuntimeError):
        await first.deliver_due()
    # Stored, not marked: the next run delivers again, the box keeps one of each.
    assert len(await box_messages(database, store, f"cabinet@{DOMAIN}")) == 3
    report = await make().deliver_due()
    assert report.delivered == 3
    messages = await box_messages(database, store, f"cabinet@{DOMAIN}")
    found = sorted(BytesParser(policy=policy.default).parsebytes(m)["Message-ID"] for m in messages)
    assert found == sorted(f"<releve-{statement_id}@{DOMAIN}>" for statement_id in ids)

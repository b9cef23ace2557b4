"""Signed statement mails delivered into the IMAP boxes: mails per second and peak memory.

Usage: .venv/bin/python bench/delivery_bench.py [--statements 1000] [--movements 200]
Builds a fresh SQLite data store holding N cut statements of M movements each (real CFONB
files from the writer), then times ``StatementDelivery.deliver_due``: composition, S/MIME
signature, storage in the box and the statement's delivery mark, one transaction each.
Target: at least 200 mails/s.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import resource
import tempfile
import time
from pathlib import Path

from releves_mailer import cfonb
from releves_mailer.clock import ManualClock
from releves_mailer.config import PortalSection
from releves_mailer.db import Database
from releves_mailer.db.migrate import upgrade
from releves_mailer.db.models import BankAccount, BankConnection, ConnectionState
from releves_mailer.db.models.statements import (
    Statement,
    StatementFile,
    StatementState,
    WindowKind,
)
from releves_mailer.delivery.service import StatementDelivery
from releves_mailer.mailbox.store import MessageStore
from releves_mailer.portfolio.accounts import AccountInput, create_account
from releves_mailer.portfolio.redevables import create_redevable, validate_redevable
from releves_mailer.render import Renderer
from releves_mailer.signing.certificates import write_signing_pair
from releves_mailer.signing.smime import SmimeSigner

TARGET = 200.0
IBAN = "FR7613026240019300290000029"


def cfonb_file(movements: int, day: dt.date) -> bytes:
    account = cfonb.Account.from_iban(IBAN, "EUR")
    moves = [
        cfonb.Movement(
            booking_date=day,
            amount=-(1000 + index),
            label=f"PRLV SEPA FOURNISSEUR NUMERO {index} FACTURE 2026-{index:05d}",
            op_code="B1",
        )
        for index in range(movements)
    ]
    statement = cfonb.Statement.build(account, day - dt.timedelta(days=7), 1_000_000, day, moves)
    return cfonb.dumps([statement]).encode("ascii")


async def prepare(folder: Path, count: int, movements: int) -> tuple[Database, ManualClock]:
    clock = ManualClock(dt.datetime(2026, 11, 2, 6, 0, tzinfo=dt.UTC))
    database = Database(f"sqlite+aiosqlite:///{folder}/bench.sqlite3")
    await upgrade(database)
    now = clock.now()
    content = cfonb_file(movements, dt.date(2026, 11, 1))
    async with database.session() as session:
        account = await create_account(
            session,
            clock,
            AccountInput(
                login="bench",
                company_name="Bench",
                siret="94078161000016",
                email="bench@example.com",
            ),
            "mot de passe du bench",
        )
        data, _ = validate_redevable(
            siren="910433218", company_name="SOCIETE BENCH", periodicity="JOURNALIERE"
        )
        assert data is not None
        redevable = await create_redevable(session, clock, account, data)
        connection = BankConnection(
            redevable_id=redevable.id,
            provider="testbank",
            provider_connection_id="c",
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
            provider_account_id="a",
            iban=IBAN,
            label="Compte chèque",
            activated_at=now,
            created_at=now,
            updated_at=now,
        )
        session.add(bank_account)
        await session.flush()
        for index in range(count):
            due = dt.date(2026, 11, 1) - dt.timedelta(days=count - index)
            statement = Statement(
                account_id=bank_account.id,
                redevable_id=redevable.id,
                sequence=index + 1,
                due_date=due,
                period_start=due - dt.timedelta(days=1),
                period_end=due,
                window=WindowKind.NEXT,
                periodicity="JOURNALIERE",
                created_at=now,
                updated_at=now,
                state=StatementState.PRODUCED,
                currency="EUR",
                iban=IBAN,
                movement_count=movements,
                opening_balance=0,
                closing_balance=0,
            )
            session.add(statement)
            await session.flush()
            session.add(StatementFile(statement_id=statement.id, kind="cfonb", content=content))
    return database, clock


async def main(count: int, movements: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        key, cert = folder / "key.pem", folder / "cert.pem"
        write_signing_pair("portail@bench.example", "Portail", key, cert, dt.datetime.now(dt.UTC))
        database, clock = await prepare(folder, count, movements)
        store = MessageStore(database, folder / "messages", clock)
        delivery = StatementDelivery(
            database,
            store,
            Renderer(),
            SmimeSigner.from_files(key, cert),
            clock,
            PortalSection(domain="bench.example"),
        )
        started = time.perf_counter()
        cpu = time.process_time()
        report = await delivery.deliver_due()
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        await store.close()
        await database.dispose()
    assert report.delivered == count, report
    rate = count / elapsed
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{count} signed statement mails of {movements} movements delivered in "
        f"{elapsed:.2f} s ({cpu:.2f} s CPU)"
    )
    print(
        f"{rate:,.0f} mails/s (target >= {TARGET:.0f}) {'OK' if rate >= TARGET else 'BELOW'}; "
        f"{count / cpu:,.0f} mails per CPU second"
    )
    print(f"peak RSS: {peak:.0f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--statements", type=int, default=1000)
    parser.add_argument("--movements", type=int, default=200)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.statements, arguments.movements))

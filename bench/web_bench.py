"""Response time of each portal page with 5,000 redevables and 100,000 statements on SQLite.

Usage: .venv/bin/python bench/web_bench.py [--redevables N] [--statements N] [--runs N]
Builds the dataset with bulk inserts in a temporary directory, starts the real HTTP server on
127.0.0.1 (port 0), logs in with httpx and prints the median time of each page against the
200 ms target. Exit status 1 when a page is over the target.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import insert
from stdnum import luhn

from releves_mailer.clock import ManualClock
from releves_mailer.config import HttpSection, RelaySection
from releves_mailer.db import Database
from releves_mailer.db.migrate import upgrade
from releves_mailer.db.models import (
    BankAccount,
    BankConnection,
    PortalAccount,
    Redevable,
    SecureLink,
    Statement,
    StatementFile,
)
from releves_mailer.notify.outbox import Outbox
from releves_mailer.partner.links import LinkService
from releves_mailer.partner.mails import MailComposer, PartnerSettings
from releves_mailer.portfolio.passwords import hash_password
from releves_mailer.render import Renderer
from releves_mailer.services import Services
from releves_mailer.web.app import create_app
from releves_mailer.web.portal import setup_portal
from releves_mailer.web.server import HttpServer

TARGET_MS = 200.0
PASSWORD = "bench-password-123"
NOW = dt.datetime(2026, 3, 10, 9, 30, tzinfo=dt.UTC)


def siren(index: int) -> str:
    base = f"3{index:07d}"
    return base + luhn.calc_check_digit(base)


async def build(database: Database, redevables: int, statements: int) -> dict[str, int]:
    password_hash = await hash_password(PASSWORD)
    per_account = max(1, statements // redevables)
    async with database.session() as session:
        common = {"created_at": NOW, "updated_at": NOW}
        await session.execute(
            insert(PortalAccount),
            [
                {
                    "id": 1,
                    "login": "cabinet",
                    "company_name": "Cabinet",
                    "siret": "40483304800022",
                    "email": "c@example.com",
                    "password_hash": password_hash,
                    "subscribed": True,
                    "parent_id": None,
                    **common,
                },
                {
                    "id": 2,
                    "login": "agence",
                    "company_name": "Agence",
                    "siret": "40483304800022",
                    "email": "a@example.com",
                    "password_hash": password_hash,
                    "subscribed": True,
                    "parent_id": 1,
                    **common,
                },
            ],
        )
        rows = []
        for index in range(1, redevables + 1):
            rows.append(
                {
                    "id": index,
                    "account_id": 1 if index % 5 else 2,
                    "family_id": 1,
                    "siren": siren(index),
                    "nic": "",
                    "company_name": f"SOCIETE {index:05d}",
                    "email": f"c{index}@example.com",
                    "periodicity": "JOURNALIERE",
                    **common,
                }
            )
        await session.execute(insert(Redevable), rows)
        await session.execute(
            insert(BankConnection),
            [
                {
                    "id": index,
                    "redevable_id": index,
                    "provider": "testbank",
                    "provider_connection_id": str(index),
                    "token_encrypted": b"x",
                    "bank_name": "Connecteur de test",
                    "state": "ok" if index % 7 else "error",
                    "error_code": None if index % 7 else "wrongpass",
                    "last_check_at": NOW,
                    **common,
                }
                for index in range(1, redevables + 1)
            ],
        )
        await session.execute(
            insert(BankAccount),
            [
                {
                    "id": index,
                    "redevable_id": index,
                    "connection_id": index,
                    "provider_account_id": str(index),
                    "iban": f"FR7630004000{index:015d}",
                    "label": "Compte chèque",
                    "activated_at": NOW,
                    "last_collected_at": NOW,
                    **common,
                }
                for index in range(1, redevables + 1)
            ],
        )
        await session.execute(
            insert(SecureLink),
            [
                {
                    "redevable_id": index,
                    "connection_id": index,
                    "kind": "maj",
                    "token_hash": f"{index:064d}",
                    "created_by": "auto",
                    "recipient": "c@example.com",
                    "created_at": NOW - dt.timedelta(days=index % 5),
                    "expires_at": NOW - dt.timedelta(days=index % 5) + dt.timedelta(hours=72),
                }
                for index in range(1, redevables + 1, 3)
            ],
        )
        batch: list[dict[str, object]] = []
        statement_id = 0
        for account in range(1, redevables + 1):
            for sequence in range(1, per_account + 1):
                statement_id += 1
                due = NOW.date() - dt.timedelta(days=per_account - sequence + 1) * 3
                batch.append(
                    {
                        "id": statement_id,
                        "account_id": account,
                        "redevable_id": account,
                        "sequence": sequence,
                        "due_date": due,
                        "period_start": due - dt.timedelta(days=3),
                        "period_end": due,
                        "window": "next",
                        "periodicity": "JOURNALIERE",
                        "created_at": dt.datetime.combine(
                            due + dt.timedelta(days=1), dt.time(1), dt.UTC
                        ),
                        "updated_at": NOW,
                        "state": "produced",
                        # Delivered, but for each account's last one (cut last night).
                        "delivery_box": None
                        if sequence == per_account
                        else "releves.cabinet@releves.example",
                        "reason": "",
                        "iban": f"FR7630004000{account:015d}",
                        "currency": "EUR",
                        "movement_count": 3,
                        "deleted_count": 0,
                        "withdrawn_total": 0,
                        "balance_mismatch": False,
                        "cfonb_size": 360,
                    }
                )
                if len(batch) == 20_000:
                    await session.execute(insert(Statement), batch)
                    batch = []
        if batch:
            await session.execute(insert(Statement), batch)
        await session.execute(
            insert(StatementFile),
            [
                {"statement_id": i, "kind": "cfonb", "content": b"01" + b"0" * 118 + b"\r\n"}
                for i in range(1, 101)
            ],
        )
    return {"statements": statement_id}


async def main(redevables: int, statements: int, runs: int) -> int:
    with tempfile.TemporaryDirectory() as folder:
        database = Database(f"sqlite+aiosqlite:///{folder}/bench.sqlite3")
        await upgrade(database)
        started = time.perf_counter()
        counts = await build(database, redevables, statements)
        print(
            f"dataset: {redevables} redevables, {counts['statements']} statements "
            f"built in {time.perf_counter() - started:.1f} s"
        )
        clock = ManualClock(NOW)
        settings = PartnerSettings(
            public_url="http://127.0.0.1:1", portal_name="Portail", domain="releves.example"
        )
        renderer = Renderer()
        outbox = Outbox(
            database,
            clock,
            RelaySection(host="127.0.0.1", port=1, starttls=False),
            domain=settings.domain,
            data_dir=Path(folder),
        )
        links = LinkService(database, outbox, MailComposer(renderer, settings, clock))
        app = create_app(
            renderer=renderer,
            settings=settings,
            setups=[
                functools.partial(
                    setup_portal, services=Services(database, clock, links), settings=settings
                )
            ],
        )
        server = HttpServer(HttpSection(listen="127.0.0.1", port=0), app)
        await server.start()
        pages = [
            "/portail/",
            "/portail/mon-compte",
            "/portail/redevables?etat=aucune&secondaires=1",
            "/portail/redevables?jeton=valide&secondaires=1",
            "/portail/redevables?jeton=expire&secondaires=1",
            "/portail/releves?etat=non_depose&du=2000-01-01&secondaires=1",
            "/portail/redevables",
            "/portail/redevables?secondaires=1",
            "/portail/redevables?secondaires=1&page=50",
            "/portail/redevables?nom=societe%200042&secondaires=1",
            "/portail/redevables?iban=000000000004242&secondaires=1",
            "/portail/redevables?etat=erreur&secondaires=1",
            "/portail/redevables/4242",
            "/portail/redevables/4242?onglet=jetons",
            "/portail/redevables/nouveau",
            "/portail/redevables/import",
            "/portail/releves",
            "/portail/releves?secondaires=1",
            "/portail/releves?secondaires=1&du=2020-01-01",
            "/portail/releves?secondaires=1&du=2020-01-01&page=1000",
            "/portail/releves?siret=" + siren(4242) + "&du=2020-01-01",
            "/portail/releves?iban=000000000004242&du=2020-01-01&secondaires=1",
            "/portail/releves?etat=echec&secondaires=1",
            "/portail/releves/84241",
            "/portail/releves/1/cfonb",
            "/portail/comptes",
            "/portail/comptes?secondaires=1&page=20",
            "/portail/comptes?connexion=erreur&secondaires=1",
            "/portail/comptes?jeton=valide&secondaires=1",
            "/portail/comptes/4242",
            "/portail/comptes/4242/desactiver",
            "/portail/souscription",
        ]
        worst = 0.0
        try:
            base = f"http://127.0.0.1:{server.port}"
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                form = await client.get("/portail/connexion")
                token = form.text.split('name="csrf" value="')[1].split('"')[0]
                response = await client.post(
                    "/portail/connexion",
                    data={"login": "cabinet", "password": PASSWORD, "csrf": token},
                )
                assert response.status_code in (200, 302), response.status_code
                print(f"{'page':<72} {'median':>9} {'max':>9}")
                for url in pages:
                    times = []
                    for _ in range(runs):
                        start = time.perf_counter()
                        response = await client.get(url)
                        times.append((time.perf_counter() - start) * 1000)
                        assert response.status_code == 200, (url, response.status_code)
                    median = statistics.median(times)
                    worst = max(worst, median)
                    flag = "" if median <= TARGET_MS else "  OVER 200 ms"
                    print(f"{url:<72} {median:7.1f}ms {max(times):7.1f}ms{flag}")
        finally:
            await server.stop()
            await database.dispose()
    print(f"slowest page (median): {worst:.1f} ms, target {TARGET_MS:.0f} ms")
    return 0 if worst <= TARGET_MS else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redevables", type=int, default=5_000)
    parser.add_argument("--statements", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    arguments = parser.parse_args()
    sys.exit(asyncio.run(main(arguments.redevables, arguments.statements, arguments.runs)))

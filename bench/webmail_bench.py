"""Response time of the webmail's pages on a box of 10,000 signed statement mails.

Usage: .venv/bin/python bench/webmail_bench.py [--messages N] [--runs N]
Fills the dedicated box of one account through the message store (SQLite, temporary
directory), starts our IMAP server and the portal's HTTP server on 127.0.0.1 (port 0), logs
in with httpx and prints the median time of each webmail page; the list page (first and
last page) is measured against the 200 ms target. The list costs one UID SEARCH and
one UID FETCH of the page's 50 UIDs (ENVELOPE, RFC822.SIZE, BODYSTRUCTURE), never the whole
box. Exit status 1 when the list page is over the target.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from cryptography.fernet import Fernet
from sqlalchemy import insert

from releves_mailer.clock import ManualClock
from releves_mailer.config import AuthSection, HttpSection, ImapSection
from releves_mailer.db import Database
from releves_mailer.db.migrate import upgrade
from releves_mailer.db.models import PortalAccount, ReceptionMode
from releves_mailer.delivery.compose import StatementMail, build_signed_statement_mail
from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.sink import MailDelivery
from releves_mailer.mailbox.store import MessageStore
from releves_mailer.partner.mails import PartnerSettings
from releves_mailer.portfolio.auth import PasswordGuard, PortfolioAuthenticator
from releves_mailer.portfolio.passwords import hash_password
from releves_mailer.render import Renderer
from releves_mailer.services import Services
from releves_mailer.signing.certificates import write_signing_pair
from releves_mailer.signing.secrets import KeyRing
from releves_mailer.signing.smime import SmimeSigner
from releves_mailer.web.app import create_app
from releves_mailer.web.portal import setup_portal
from releves_mailer.web.server import HttpServer
from releves_mailer.webmail import Webmail
from releves_mailer.webmail.imap import ImapEndpoint

TARGET_MS = 200.0
PASSWORD = "bench-password-123"
DOMAIN = "releves.example"
BOX = f"releves.cabinet@{DOMAIN}"
NOW = dt.datetime(2026, 3, 10, 9, 30, tzinfo=dt.UTC)


async def fill(store: MessageStore, signer: SmimeSigner, count: int) -> None:
    renderer = Renderer()
    start = dt.date(2000, 1, 1)
    batch: list[MailDelivery] = []
    for index in range(count):
        day = start + dt.timedelta(days=index)
        mail = StatementMail(
            statement_id=index + 1,
            periodicity="JOURNALIERE",
            company_name=f"SOCIETE {index % 500}",
            siret="40483304800022",
            bank_name="Connecteur de test",
            account_label="Compte chèque",
            iban="FR7613026240019300290000029",
            period_start=day - dt.timedelta(days=1),
            period_end=day,
            due_date=day,
            movement_count=1,
            opening_balance=100_000,
            closing_balance=100_500,
            currency="EUR",
            cfonb=(b"04" + f"{index:0118d}".encode() + b"\r\n") * 3,
            recipient=BOX,
            domain=DOMAIN,
            portal_name="Portail",
            created_at=NOW - dt.timedelta(minutes=count - index),
        )
        raw = await build_signed_statement_mail(mail, renderer, signer)
        batch.append(MailDelivery(BOX, raw, mail.message_id, internal_date=mail.created_at))
        if len(batch) == 500:
            await store.deliver_many(batch)
            batch = []
    if batch:
        await store.deliver_many(batch)


async def timed(client: httpx.AsyncClient, url: str, runs: int) -> tuple[float, str]:
    samples = []
    text = ""
    for _ in range(runs):
        began = time.perf_counter()
        response = await client.get(url)
        samples.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, (url, response.status_code, response.text[:300])
        text = response.text
    return statistics.median(samples), text


async def main(count: int, runs: int, skip: tuple[str, ...] = ()) -> int:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        clock = ManualClock(NOW)
        database = Database(f"sqlite+aiosqlite:///{folder}/bench.sqlite3")
        await upgrade(database)
        async with database.session() as session:
            await session.execute(
                insert(PortalAccount),
                [
                    {
                        "login": "cabinet",
                        "company_name": "Cabinet",
                        "siret": "40483304800022",
                        "email": "c@example.com",
                        "password_hash": await hash_password(PASSWORD),
                        "subscribed": True,
                        "terms_accepted_at": NOW,
                        "reception_mode": ReceptionMode.DEDICATED,
                        "created_at": NOW,
                        "updated_at": NOW,
                    }
                ],
            )
        key, cert = folder / "k.pem", folder / "c.pem"
        write_signing_pair(f"portail@{DOMAIN}", "Portail", key, cert, NOW - dt.timedelta(days=1))
        signer = SmimeSigner.from_files(key, cert)
        store = MessageStore(database, folder / "messages", clock)
        began = time.perf_counter()
        await fill(store, signer, count)
        print(f"box filled with {count} messages in {time.perf_counter() - began:.1f} s")
        auth = PortfolioAuthenticator(database, DOMAIN)
        guard = PasswordGuard(clock, AuthSection(), DOMAIN)
        imap = ImapServer(
            ImapSection(listen="127.0.0.1", port=0, tls_port=0),
            store,
            auth,
            None,
            clock,
            guard=guard,
        )
        await imap.start()
        assert imap.port is not None
        settings = PartnerSettings(public_url="http://127.0.0.1:1", portal_name="P", domain=DOMAIN)
        webmail = Webmail.create(
            ImapEndpoint("127.0.0.1", imap.port),
            KeyRing([Fernet.generate_key()]),
            clock,
            trusted=[signer.certificate],
        )
        app = create_app(
            renderer=Renderer(),
            settings=settings,
            setups=[
                functools.partial(
                    setup_portal,
                    services=Services(database, clock),
                    settings=settings,
                    webmail_engine=webmail,
                )
            ],
        )
        http = HttpServer(HttpSection(listen="127.0.0.1", port=0), app)
        await http.start()
        failed = False
        try:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{http.port}", timeout=60
            ) as client:
                login = await client.get("/portail/connexion")
                token = re.search(r'name="csrf" value="([^"]+)"', login.text)
                assert token is not None
                await client.post(
                    "/portail/connexion",
                    data={"login": "cabinet", "password": PASSWORD, "csrf": token.group(1)},
                )
                first, text = await timed(client, "/portail/webmail/releves", 1)  # connects
                uid = re.findall(r'name="uids" value="(\d+)"', text)[0]
                last_page = (count + 49) // 50
                pages = {
                    "liste, page 1": ("/portail/webmail/releves", True),
                    f"liste, page {last_page}": (
                        f"/portail/webmail/releves?page={last_page}",
                        True,
                    ),
                    # Our IMAP server's SEARCH reads every header: shown, not a target.
                    "recherche par objet": (
                        "/portail/webmail/releves?objet=SOCIETE+42",
                        False,
                    ),
                    "accueil (dossiers)": ("/portail/webmail/", False),
                    "lecture d'un relevé": (f"/portail/webmail/releves/{uid}", False),
                    "recherche par pièce jointe": (
                        "/portail/webmail/releves?piece=20000105",
                        False,
                    ),
                }
                print(f"first list page (IMAP login included): {first:.1f} ms")
                print(f"{'page':<32}{'median ms':>10}  target")
                for label, (url, measured) in pages.items():
                    if skip and label in skip:
                        continue
                    median, _ = await timed(client, url, runs)
                    verdict = ""
                    if measured:
                        verdict = "ok" if median <= TARGET_MS else "OVER"
                        failed |= median > TARGET_MS
                    print(f"{label:<32}{median:>10.1f}  {verdict}")
        finally:
            await http.stop()
            await imap.stop()
            await store.close()
            await database.dispose()
        return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    arguments = parser.parse_args()
    sys.exit(asyncio.run(main(arguments.messages, arguments.runs)))

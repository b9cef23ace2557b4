"""The webmail's test bed: our IMAP server on port 0 holding signed statement mails, and the
portal reading it over IMAP (aioimaplib), as the daemon wires it.

``cabinet`` (reception: dedicated box) has three signed statement mails in
``releves.cabinet@releves.example`` and two mails (text, HTML with a remote image) in its own
box; ``autre`` has one mail. The ``bed`` fixture is in this folder's ``conftest.py``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.fernet import Fernet
from sqlalchemy import update

from releves_mailer.clock import ManualClock
from releves_mailer.config import HttpSection, RelaySection
from releves_mailer.db import Database
from releves_mailer.db.models import PortalAccount, ReceptionMode
from releves_mailer.delivery.compose import build_signed_statement_mail
from releves_mailer.notify.outbox import Outbox
from releves_mailer.partner.links import LinkService
from releves_mailer.partner.mails import MailComposer, PartnerSettings
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
from tests.delivery.conftest import statement_mail
from tests.factories import PASSWORD, add_subscribed_account
from tests.mailservers import DOMAIN, MailServers, mail_servers
from tests.web.portal.conftest import Owned, add_redevable, log_in

DEDICATED = f"releves.cabinet@{DOMAIN}"
OWN = f"cabinet@{DOMAIN}"


def cfonb_of(index: int) -> bytes:
    return b"".join(f"04{index:03d}{n:0115d}\r\n".encode() for n in range(4))


def csv_of(index: int) -> bytes:
    return f"id;libellé\r\n{index};supprimée\r\n".encode()


@dataclass
class WebmailBed:
    database: Database
    clock: ManualClock
    servers: MailServers
    http: HttpServer
    webmail: Webmail
    signer: SmimeSigner
    links: LinkService
    cabinet: Owned
    autre: Owned
    folder: Path
    #: Raw statement mails as delivered, by Message-ID.
    statements: dict[str, bytes] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http.port}"

    @property
    def imap_port(self) -> int:
        return self.servers.imap_port

    @contextlib.asynccontextmanager
    async def logged_in(self, login: str = "cabinet") -> AsyncIterator[httpx.AsyncClient]:
        async with httpx.AsyncClient(
            base_url=self.base_url, follow_redirects=False, timeout=30
        ) as client:
            await log_in(client, login, PASSWORD)
            yield client


def signing_certificate(folder: Path, now: dt.datetime) -> SmimeSigner:
    key, cert = folder / "portal-key.pem", folder / "portal-cert.pem"
    write_signing_pair(f"portail@{DOMAIN}", "Portail Relevés", key, cert, now)
    return SmimeSigner.from_files(key, cert)


async def deliver_mails(
    servers: MailServers, signer: SmimeSigner, when: dt.datetime
) -> dict[str, bytes]:
    """Three signed statements in the dedicated box, two mails in the own box, one for autre."""
    renderer = Renderer()
    delivered = {}
    for index in (1, 2, 3):
        mail = statement_mail(
            statement_id=index,
            recipient=DEDICATED,
            domain=DOMAIN,
            cfonb=cfonb_of(index),
            deleted_csv=csv_of(index) if index == 2 else None,
            company_name=f"SOCIETE {index}",
            period_start=dt.date(2026, 3, index),
            period_end=dt.date(2026, 3, index + 1),
            due_date=dt.date(2026, 3, index + 1),
            created_at=when + dt.timedelta(minutes=index),
        )
        raw = await build_signed_statement_mail(mail, renderer, signer)
        await servers.store.deliver(
            DEDICATED, raw, mail.message_id, internal_date=when + dt.timedelta(minutes=index)
        )
        delivered[mail.message_id] = raw
    text = EmailMessage()
    text["From"] = "Support <support@example.com>"
    text["To"] = OWN
    text["Subject"] = "Bienvenue sur le portail"
    text["Message-ID"] = "<bienvenue@example.com>"
    text.set_content("Bonjour,\nvotre compte est ouvert.\n")
    await servers.store.deliver(OWN, text.as_bytes(), "<bienvenue@example.com>", internal_date=when)
    html = EmailMessage()
    html["From"] = "Lettre <news@example.com>"
    html["To"] = OWN
    html["Subject"] = "Lettre d'information"
    html["Message-ID"] = "<lettre@example.com>"
    html.set_content(
        '<p onclick="alert(1)">Nouveautés <b>du mois</b></p><script>alert(2)</script>'
        '<img src="https://tracker.example/pixel.gif" alt="pixel">'
        '<a href="https://example.com/x">lien</a>',
        subtype="html",
    )
    await servers.store.deliver(
        OWN, html.as_bytes(), "<lettre@example.com>", internal_date=when + dt.timedelta(hours=1)
    )
    other = EmailMessage()
    other["From"] = "x@example.com"
    other["To"] = f"autre@{DOMAIN}"
    other["Subject"] = "Secret de autre"
    other.set_content("rien")
    await servers.store.deliver(f"autre@{DOMAIN}", other.as_bytes(), "<autre@example.com>")
    return delivered


@contextlib.asynccontextmanager
async def open_bed(
    database: Database, clock: ManualClock, folder: Path, endpoint: ImapEndpoint | None = None
) -> AsyncIterator[WebmailBed]:
    """The bed; ``endpoint`` points the webmail at another IMAP server than the bed's own."""
    cabinet = Owned(await add_subscribed_account(database, clock, "cabinet", 1), "cabinet")
    autre = Owned(await add_subscribed_account(database, clock, "autre", 3), "autre")
    async with database.session() as session:
        await session.execute(
            update(PortalAccount)
            .where(PortalAccount.id == cabinet.account_id)
            .values(reception_mode=ReceptionMode.DEDICATED)
        )
    now = clock.now()
    await add_redevable(database, now, cabinet, cabinet.account_id, 10)
    await add_redevable(database, now, autre, autre.account_id, 30, name="AUTRE CLIENT")
    signer = signing_certificate(folder / "signing", now - dt.timedelta(days=1))
    settings = PartnerSettings(
        public_url="http://127.0.0.1:1", portal_name="Portail Relevés", domain=DOMAIN
    )
    renderer = Renderer()
    outbox = Outbox(
        database,
        clock,
        RelaySection(host="127.0.0.1", port=1, starttls=False),
        domain=DOMAIN,
        data_dir=folder,
    )
    links = LinkService(database, outbox, MailComposer(renderer, settings, clock))
    async with mail_servers(database, clock, folder) as servers:
        statements = await deliver_mails(servers, signer, now - dt.timedelta(hours=3))
        webmail = Webmail.create(
            endpoint or ImapEndpoint("127.0.0.1", servers.imap_port),
            KeyRing([Fernet.generate_key()]),
            clock,
            trusted=[signer.certificate],
        )
        app = create_app(
            renderer=renderer,
            settings=settings,
            setups=[
                functools.partial(
                    setup_portal,
                    services=Services(database, clock, links),
                    settings=settings,
                    webmail_engine=webmail,
                )
            ],
        )
        http = HttpServer(HttpSection(listen="127.0.0.1", port=0), app)
        await http.start()
        try:
            yield WebmailBed(
                database,
                clock,
                servers,
                http,
                webmail,
                signer,
                links,
                cabinet,
                autre,
                folder,
                statements,
            )
        finally:
            await http.stop()


def certificate_of(bed: WebmailBed) -> x509.Certificate:
    return bed.signer.certificate

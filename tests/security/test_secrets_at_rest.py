"""Issue 13.8: secrets at rest and in logs.

* once a link mail is sent, its clear token is nowhere in the database (any column of any
  table, mail bodies decoded) nor in the outbox folder;
* under umask 022, the data directory tree is 0700 and its files 0600: the real ``init`` and
  ``serve`` (database, WAL, messages, config, keys, log), and the library pieces on their own
  (database file, message store, outbox files);
* the bytes of a failed LOGIN or AUTHENTICATE never reach the log, not even at DEBUG and not
  even when the login crashes; nor do those of a failed SMTP AUTH.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import signal
import smtplib
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import aioimaplib
import aiosmtplib
import pytest
import trustme
from sqlalchemy import inspect, select, text

from releves_mailer.clock import ManualClock
from releves_mailer.config import SmtpSection
from releves_mailer.db import Database
from releves_mailer.db.migrate import upgrade
from releves_mailer.db.models import OutboxMessage
from releves_mailer.files import make_private_dir
from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.smtp import InboundHandler, SmtpServer
from releves_mailer.mailbox.store import MessageStore
from releves_mailer.notify.masking import MASK, readable_text
from releves_mailer.portfolio.auth import PortfolioAuthenticator
from tests.factories import PASSWORD, make_nic, make_siren
from tests.mailbox.conftest import imap_section, quick_guard
from tests.notify.test_outbox import mail, outbox_for
from tests.partner.conftest import Harness, body
from tests.partner.conftest import clock as clock  # the partner tests' clock
from tests.partner.conftest import harness as harness

DOMAIN = "releves.example"
#: A wrong password no log line may contain, in clear or in base64.
WRONG = "Mauvais-Secret-9f4c2e"


# -- the link token --------------------------------------------------------------------------


def texts_of(value: object) -> Iterator[str]:
    """A column value as text, and when it is a mail, every decoded part of it too."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, bytes | memoryview):
        raw = bytes(value)
        yield raw.decode("latin-1")
        if b"\n\n" in raw.replace(b"\r\n", b"\n"):
            for part in message_from_bytes(raw, policy=policy.default).walk():
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes):
                    yield payload.decode("utf-8", "replace")


async def tables_holding(database: Database, secret: str) -> list[str]:
    async with database.session() as session:
        connection = await session.connection()
        names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
        found = []
        for name in names:
            rows = (await session.execute(text(f'SELECT * FROM "{name}"'))).all()
            if any(secret in piece for row in rows for value in row for piece in texts_of(value)):
                found.append(name)
        return found


async def test_a_sent_link_mail_leaves_its_token_nowhere_at_rest(
    harness: Harness, tmp_path: Path
) -> None:
    issued = await harness.links.send(harness.redevable_id)
    # Before sending, the queued mail is the one place that holds the token (this is what
    # the search below must be able to find).
    assert await tables_holding(harness.database, issued.token) == ["outbox_message"]

    mails = await harness.relayed()
    assert len(mails) == 1 and issued.token in body(mails[0])  # the redevable got it

    assert await tables_holding(harness.database, issued.token) == []
    outbox_folder = tmp_path / "outbox"
    for path in outbox_folder.rglob("*") if outbox_folder.exists() else ():
        assert issued.token not in "".join(texts_of(path.read_bytes())), path
    # What the sending history needs is still there.
    async with harness.database.session() as session:
        row = (await session.scalars(select(OutboxMessage))).one()
    assert row.sent_at is not None and row.recipient and row.subject and row.message_id
    # Only the masked copy of the "Messages envoyés" page stays.
    assert issued.token.encode() not in row.raw and MASK in readable_text(row.raw)


# -- modes under umask 022 -------------------------------------------------------------------


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    previous = os.umask(value)
    try:
        yield
    finally:
        os.umask(previous)


def loose_modes(root: Path) -> list[str]:
    """Everything under ``root`` (itself included) readable or writable by others."""
    wrong = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        expected = 0o700 if path.is_dir() else 0o600
        if mode != expected:
            wrong.append(f"{path.relative_to(root)}: {oct(mode)}")
    return wrong


async def test_library_pieces_create_private_files_under_umask_022(
    tmp_path: Path, clock: ManualClock
) -> None:
    data = tmp_path / "data"
    with umask(0o022):
        database = Database(f"sqlite+aiosqlite:///{data / 'releves.sqlite3'}")
        store = MessageStore(database, data / "messages", clock)
        try:
            make_private_dir(data)  # after the engine: it creates its file when it connects
            await upgrade(database)
            await store.deliver("cabinet@releves.example", mail(1).as_bytes(), "<mail-1@test>")
            outbox = outbox_for(database, clock, data, 587, host="", store=store)
            async with database.session() as session:
                await outbox.enqueue(session, mail(2), kind="alert")
            assert (await outbox.send_due()).filed == 1
            names = {path.name for path in data.iterdir()}
            assert {"releves.sqlite3-wal", "releves.sqlite3-shm", "messages", "outbox"} <= names
            assert loose_modes(data) == []
        finally:
            await store.close()
            await database.dispose()


def _wait_for(path: Path, process: subprocess.Popen[bytes], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, "the daemon stopped"
        assert time.monotonic() < deadline, f"{path} not written within {seconds} s"
        time.sleep(0.2)


def test_init_and_serve_keep_the_data_directory_private_under_umask_022(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELEVES_MAILER")}
    command = [sys.executable, "-m", "releves_mailer"]
    subprocess.run(
        [*command, "init", str(data)], env=env, umask=0o022, check=True, capture_output=True
    )
    env["RELEVES_MAILER_CONFIG"] = str(data / "releves-mailer.toml")
    env["RELEVES_MAILER__LOGGING__FILE"] = "logs/releves.log"
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n", encoding="utf-8")
    siret = make_siren(1) + make_nic(make_siren(1))
    add = ["accounts", "add", "cabinet", "--siret", siret, "--name", "Cabinet", "--email"]
    add += ["chef@cabinet.example", "--password-file", str(password_file)]
    subprocess.run([*command, *add], env=env, umask=0o022, check=True, capture_output=True)
    ports = ["--imap-port", "0", "--imaps-port", "0", "--smtp-port", "0", "--http-port", "0"]
    process = subprocess.Popen([*command, "serve", *ports], env=env, umask=0o022)
    try:
        _wait_for(data / "ports.json", process)
        port = json.loads((data / "ports.json").read_text())["smtp"]
        message = EmailMessage()
        message["From"] = "cabinet@releves.localhost"
        message["To"] = "cabinet@releves.localhost"
        message["Subject"] = "Essai"
        message.set_content("Bonjour")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the self-signed certificate of `init`
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.starttls(context=context)
            client.login("cabinet", PASSWORD)
            client.send_message(message)
        names = {path.name for path in data.iterdir()}
        expected = {"releves-mailer.toml", "releves.sqlite3", "releves.sqlite3-wal", "messages"}
        assert expected | {"logs", "keys", "tls", "signing"} <= names
        assert loose_modes(data) == []
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert loose_modes(data) == []


# -- credentials in the logs -----------------------------------------------------------------


@pytest.fixture
async def broken_database(tmp_path: Path) -> AsyncIterator[Database]:
    """A database without its tables: every login crashes inside the authenticator."""
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite3'}")
    yield database
    await database.dispose()


#: The test's own clients log what they send at DEBUG: their lines are not the daemon's.
CLIENT_LOGGERS = ("aioimaplib", "aiosmtplib")


def assert_not_logged(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    formatter = logging.Formatter()
    logged = "\n".join(
        formatter.format(record)
        for record in caplog.records
        if not record.name.startswith(CLIENT_LOGGERS)
    )
    for secret in secrets:
        for form in (secret, base64.b64encode(secret.encode()).decode()):
            assert form not in logged


async def test_failed_imap_logins_are_not_logged(
    broken_database: Database,
    database: Database,
    clock: ManualClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    store = MessageStore(database, tmp_path / "messages", clock)
    server = ImapServer(
        imap_section(),
        store,
        PortfolioAuthenticator(broken_database, DOMAIN),
        None,
        clock,
        guard=quick_guard(clock),
    )
    await server.start()
    try:
        client = aioimaplib.IMAP4(host="127.0.0.1", port=server.port, timeout=30)
        await client.wait_hello_from_server()
        response = await client.login("cabinet", WRONG)
        assert response.result != "OK"
        plain = base64.b64encode(f"\0cabinet\0{WRONG}".encode()).decode()
        response = await client.protocol.execute(
            aioimaplib.Command("AUTHENTICATE", client.protocol.new_tag(), "PLAIN", plain)
        )
        assert response.result != "OK"
        await client.logout()
    finally:
        await server.stop()
        await store.close()
    # The crash itself was logged (the log is where the admin learns of it)...
    assert any(record.exc_info for record in caplog.records)
    assert any("LOGIN" in record.getMessage() for record in caplog.records)
    # ...but not what the client sent.
    assert_not_logged(caplog, WRONG, plain)


@pytest.mark.usefixtures("family")
async def test_failed_smtp_auth_is_not_logged(
    database: Database, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    auth = PortfolioAuthenticator(database, DOMAIN)

    async def deliver(addresses: object, raw: bytes) -> None:
        raise AssertionError("nothing is sent in this test")

    async def store_usage(address: str) -> int:
        raise AssertionError("nothing is stored in this test")

    server = SmtpServer(
        SmtpSection(listen="127.0.0.1", port=0),
        InboundHandler(
            auth,
            deliver,
            clock,
            DOMAIN,
            guard=quick_guard(clock),
            usage=store_usage,
            config=SmtpSection(listen="127.0.0.1", port=0),
        ),
        context,
        DOMAIN,
    )
    await server.start()
    try:
        for mechanism in ("LOGIN", "PLAIN", "clear"):
            client = aiosmtplib.SMTP(
                hostname="127.0.0.1",
                port=server.port,
                start_tls=True,  # AUTH is only offered over TLS
                tls_context=client_context,
                timeout=30,
            )
            await client.connect()
            await client.ehlo()  # again, after STARTTLS: AUTH is offered now
            if mechanism == "clear":
                # A misconfigured client answering the challenge with the password itself,
                # not in base64: the server cannot decode it (and must not log it).
                response = await client.execute_command(b"AUTH", b"LOGIN")
                assert response.code == 334
                response = await client.execute_command(WRONG.encode())
                assert response.code == 501
            else:
                with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refusal:
                    if mechanism == "LOGIN":
                        await client.auth_login("cabinet", WRONG)
                    else:
                        await client.auth_plain("cabinet", WRONG)
                assert refusal.value.code == 535  # refused for the password
            await client.quit()
    finally:
        await server.stop()
    assert_not_logged(caplog, WRONG, PASSWORD)

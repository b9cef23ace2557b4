"""A password changed or an account deactivated ends the mail sessions it had opened.

The change is made in the database, as the portal, the command line or another daemon
makes it. The IMAP server notices it at its next check of the logged-in sessions; an SMTP
session past AUTH at its next MAIL, before it can submit anything more.
"""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
from sqlalchemy import select

from releves_mailer.clock import ManualClock
from releves_mailer.db import Database
from releves_mailer.db.models import PortalAccount
from releves_mailer.portfolio.accounts import set_password
from tests.factories import PASSWORD
from tests.mailservers import DOMAIN, inbox_subjects, mail_servers, smtp_client

pytestmark = pytest.mark.usefixtures("family")

NEW_PASSWORD = "un tout autre mot de passe"


class LoginFailed(Exception):
    """The server's answer to a LOGIN was not OK."""


class Client:
    """A raw IMAP client: what the server sends, line by line, and when it hangs up."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def login(cls, port: int, login: str, password: str = PASSWORD) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        await client.line()
        lines = await client.command(f'a LOGIN {login} "{password}"')
        if not lines[-1].startswith(b"a OK"):
            await client.close()
            raise LoginFailed(lines[-1].decode())
        return client

    async def line(self) -> bytes:
        return await asyncio.wait_for(self.reader.readline(), 60)

    async def command(self, text: str) -> list[bytes]:
        tag = text.split()[0].encode()
        self.writer.write(text.encode() + b"\r\n")
        await self.writer.drain()
        lines = []
        while True:
            line = await self.line()
            lines.append(line)
            if not line or line.startswith(tag + b" "):
                return lines

    async def rest(self) -> list[bytes]:
        """Every line up to the end of the connection."""
        lines = []
        while line := await self.line():
            lines.append(line)
        return lines

    async def close(self) -> None:
        self.writer.close()
        await asyncio.gather(self.writer.wait_closed(), return_exceptions=True)


async def test_a_new_password_ends_the_sessions_of_that_login_only(
    database: Database, clock: ManualClock, tmp_path: Path
) -> None:
    # The checks are the test's own: the periodic one (an hour apart) must not end the
    # sessions before the check whose count is asserted, however slow the machine.
    async with mail_servers(database, clock, tmp_path, credentials_check_seconds=3600) as servers:
        agence = await Client.login(servers.imap_port, "agence")
        dedicated = await Client.login(servers.imap_port, "releves.agence@releves.example")
        cabinet = await Client.login(servers.imap_port, "cabinet")
        for client in (agence, dedicated, cabinet):
            assert (await client.command("b SELECT INBOX"))[-1].startswith(b"b OK")

        # Nothing changed: nobody is sent away.
        assert await servers.imap.check_credentials() == 0
        assert (await agence.command("c NOOP"))[-1].startswith(b"c OK")

        async with database.session() as session:
            found = await session.scalar(
                select(PortalAccount).where(PortalAccount.login == "agence")
            )
            assert found is not None
            await set_password(session, clock, found, NEW_PASSWORD)
        assert await servers.imap.check_credentials() == 2
        for client in (agence, dedicated):
            lines = await client.rest()
            assert lines == [b"* BYE Credentials changed or account deactivated\r\n"]
            await client.close()

        # The other account's session goes on; the new password opens a new one, the old
        # password no longer does.
        assert (await cabinet.command("d NOOP"))[-1].startswith(b"d OK")
        again = await Client.login(servers.imap_port, "agence", NEW_PASSWORD)
        assert await servers.imap.check_credentials() == 0
        assert (await again.command("e SELECT INBOX"))[-1].startswith(b"e OK")
        with pytest.raises(LoginFailed, match=r"^a NO \[AUTHENTICATIONFAILED\]"):
            await Client.login(servers.imap_port, "agence", PASSWORD)
        for client in (cabinet, again):
            await client.close()


async def test_a_deactivated_account_loses_an_idle_session_at_the_periodic_check(
    database: Database, clock: ManualClock, tmp_path: Path
) -> None:
    async with mail_servers(database, clock, tmp_path, credentials_check_seconds=1) as servers:
        idle = await Client.login(servers.imap_port, "agence")
        assert (await idle.command("b SELECT INBOX"))[-1].startswith(b"b OK")
        idle.writer.write(b"c IDLE\r\n")
        assert (await idle.line()).startswith(b"+ ")
        cabinet = await Client.login(servers.imap_port, "cabinet")

        async with database.session() as session:
            found = await session.scalar(
                select(PortalAccount).where(PortalAccount.login == "agence")
            )
            assert found is not None
            found.active = False

        # No command: the server's own periodic check ends the IDLE.
        lines = await idle.rest()
        assert lines[-1] == b"* BYE Credentials changed or account deactivated\r\n"
        assert (await cabinet.command("d NOOP"))[-1].startswith(b"d OK")
        with pytest.raises(LoginFailed, match=r"^a NO \[AUTHENTICATIONFAILED\]"):
            await Client.login(servers.imap_port, "agence")
        for client in (idle, cabinet):
            await client.close()


def note(subject: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = f"agence@{DOMAIN}"
    mail["To"] = f"cabinet@{DOMAIN}"
    mail["Subject"] = subject
    mail.set_content("Bonjour,\n")
    return mail


async def set_agence(
    database: Database, clock: ManualClock, *, password: str | None = None, active: bool = True
) -> None:
    async with database.session() as session:
        found = await session.scalar(select(PortalAccount).where(PortalAccount.login == "agence"))
        assert found is not None
        if password is not None:
            await set_password(session, clock, found, password)
        found.active = active


@pytest.mark.parametrize("change", ["password", "deactivation"])
async def test_an_smtp_session_past_auth_sends_nothing_more_after_the_change(
    database: Database, clock: ManualClock, tmp_path: Path, change: str
) -> None:
    async with mail_servers(database, clock, tmp_path) as servers:
        async with smtp_client(servers, "agence", PASSWORD) as client:
            errors, _ = await client.send_message(note("avant"))
            assert errors == {}
            if change == "password":
                await set_agence(database, clock, password=NEW_PASSWORD)
            else:
                await set_agence(database, clock, active=False)
            with pytest.raises(aiosmtplib.SMTPResponseException) as caught:
                await client.send_message(note("après"))
            assert caught.value.code == 421
            assert "Credentials changed" in caught.value.message
            # The server hung up: the session can do nothing more.
            with pytest.raises(aiosmtplib.SMTPServerDisconnected):
                await client.noop()
        if change == "password":
            # The new password opens a new session, which sends; the old one is refused.
            async with smtp_client(servers, "agence", NEW_PASSWORD) as again:
                errors, _ = await again.send_message(note("de nouveau"))
                assert errors == {}
            with pytest.raises(aiosmtplib.SMTPAuthenticationError):
                async with smtp_client(servers, "agence", PASSWORD):
                    pass
        else:
            await set_agence(database, clock, active=True)
        subjects = await asyncio.to_thread(inbox_subjects, servers.imap_port, "cabinet")
        expected = ["avant", "de nouveau"] if change == "password" else ["avant"]
        assert subjects == expected


async def test_an_smtp_session_with_unchanged_credentials_goes_on(
    database: Database, clock: ManualClock, tmp_path: Path
) -> None:
    async with (
        mail_servers(database, clock, tmp_path) as servers,
        smtp_client(servers, "agence", PASSWORD) as client,
    ):
        for index in range(3):
            errors, _ = await client.send_message(note(f"message {index}"))
            assert errors == {}
        # Another account's change does not concern it.
        async with database.session() as session:
            cabinet = await session.scalar(
                select(PortalAccount).where(PortalAccount.login == "cabinet")
            )
            assert cabinet is not None
            await set_password(session, clock, cabinet, NEW_PASSWORD)
        errors, _ = await client.send_message(note("message 3"))
        assert errors == {}

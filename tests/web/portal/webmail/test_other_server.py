"""The webmail reads boxes held by another IMAP server: a second daemon, in its own process,
from its own data directory, reached over IMAPS."""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import json
import os
import re
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from releves_mailer.clock import ManualClock
from releves_mailer.config import Config
from releves_mailer.db import Database
from releves_mailer.delivery.compose import build_signed_statement_mail
from releves_mailer.render import Renderer
from releves_mailer.signing.smime import SmimeSigner
from releves_mailer.webmail.imap import ImapEndpoint
from tests.commands import run_command_async
from tests.datadirs import initialised_data_dir
from tests.delivery.conftest import statement_mail
from tests.factories import PASSWORD, make_nic, make_siren
from tests.mailservers import DOMAIN
from tests.web.portal.conftest import log_in
from tests.web.portal.webmail.harness import DEDICATED, cfonb_of, open_bed, signing_certificate

pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def other_daemon(config: Config) -> AsyncIterator[dict[str, int]]:
    """``releves-mailer serve`` on free ports in another process; its ports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELEVES_MAILER")}
    env["RELEVES_MAILER_CONFIG"] = str(config.source)
    ports_file = config.data_dir / "ports.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "releves_mailer",
        "serve",
        *("--imap-port", "0", "--imaps-port", "0", "--smtp-port", "0", "--http-port", "0"),
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while not ports_file.exists():
            assert process.returncode is None, "the second daemon stopped"
            assert time.monotonic() < deadline, "the second daemon did not start"
            await asyncio.sleep(0.2)
        yield json.loads(ports_file.read_text())
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 60)


def append(port: int, context: ssl.SSLContext, address: str, raw: bytes) -> None:
    client = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=context, timeout=30)
    try:
        client.login(address, PASSWORD)
        assert client.append("INBOX", None, None, raw)[0] == "OK"
    finally:
        client.logout()


async def test_the_webmail_reads_a_box_of_a_second_daemon_over_imaps(
    database: Database, clock: ManualClock, tmp_path: Path
) -> None:
    config = await initialised_data_dir(tmp_path / "other", DOMAIN)
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n", encoding="utf-8")
    added = await run_command_async(
        config,
        *("accounts", "add", "cabinet", "--siret", make_siren(1) + make_nic(make_siren(1))),
        *("--name", "Cabinet", "--email", "chef@cabinet.example", "--reception", "dedicated"),
        *("--accept-cgau", "--password-file", str(password_file)),
    )
    assert added.returncode == 0, added.stderr
    # The second daemon's own self-signed TLS certificate is the one trusted.
    context = ssl.create_default_context(cafile=config.path(config.tls.certificate))
    context.check_hostname = False
    signer: SmimeSigner = signing_certificate(tmp_path / "signing", clock.now())
    mail = statement_mail(
        statement_id=77, recipient=DEDICATED, domain=DOMAIN, cfonb=cfonb_of(77),
        company_name="AILLEURS SA",
    )  # fmt: skip
    raw = await build_signed_statement_mail(mail, Renderer(), signer)
    async with other_daemon(config) as ports:
        await asyncio.to_thread(append, ports["imaps"], context, DEDICATED, raw)
        # The second daemon's own portal reads its own IMAP server (ports picked at start).
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{ports['http']}", timeout=30
        ) as own_portal:
            await log_in(own_portal, "cabinet", PASSWORD)
            own_listing = await own_portal.get("/portail/webmail/releves")
        endpoint = ImapEndpoint("127.0.0.1", ports["imaps"], context)
        async with open_bed(database, clock, tmp_path / "bed", endpoint=endpoint) as bed:
            bed.webmail.trusted = [signer.certificate]
            async with bed.logged_in() as client:
                listing = await client.get("/portail/webmail/releves")
                uid = re.findall(r'name="uids" value="(\d+)"', listing.text)
                page = await client.get(f"/portail/webmail/releves/{uid[0]}")
                link = re.search(r'href="([^"]+/pieces/[^"]+)"', page.text)
                assert link is not None
                download = await client.get(link.group(1).replace("&amp;", "&"))
    assert own_listing.status_code == 200 and "AILLEURS SA" in own_listing.text
    # Only the second server's box is shown (the bed's own server holds three other mails).
    assert "1 message(s)" in listing.text and "AILLEURS SA" in listing.text
    assert "SOCIETE 1" not in listing.text
    assert "Signé par Portail Relevés &lt;portail@releves.example&gt; : signature valide." in (
        page.text
    )
    assert download.status_code == 200 and download.content == cfonb_of(77)

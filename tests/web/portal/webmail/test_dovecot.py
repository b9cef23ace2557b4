"""The webmail against Dovecot, when it is installed: the boxes of the scale path.

A throw-away Dovecot (its own configuration, base directory and Maildir under a temporary
folder, a passwd-file with the account's two addresses) listens on a free loopback port; the
statement mails are put there with imaplib's APPEND, then read, downloaded, moved and
deleted through the portal's pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import io
import re
import shutil
import socket
import subprocess
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from releves_mailer.clock import ManualClock
from releves_mailer.db import Database
from releves_mailer.delivery.compose import build_signed_statement_mail
from releves_mailer.listeners import reserve_port
from releves_mailer.render import Renderer
from releves_mailer.webmail.imap import ImapEndpoint
from tests.delivery.conftest import statement_mail
from tests.factories import PASSWORD
from tests.mailbox.dovecot_instance import auth_ready
from tests.mailservers import DOMAIN
from tests.web.portal.conftest import csrf_of
from tests.web.portal.webmail.harness import DEDICATED, OWN, cfonb_of, open_bed, signing_certificate

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(DOVECOT).exists(), reason="Dovecot is not installed"),
]

CONFIG = """
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 1
mail_location = maildir:{root}/mail/%u
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  chroot =
}}
service anvil {{
  chroot =
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={root}/mail/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
"""


def start_dovecot() -> tuple[Path, Path, int] | str:
    """``(folder, config, port)`` of a started Dovecot, or why it did not start."""
    # Dovecot's own users must reach the folder: not under pytest's 0700 tmp_path.
    root = Path(tempfile.mkdtemp(prefix="releves-dovecot-"))
    root.chmod(0o755)
    (root / "mail").mkdir()
    (root / "mail").chmod(0o777)
    users = "".join(f"{address}:{{PLAIN}}{PASSWORD}\n" for address in (DEDICATED, OWN))
    (root / "users").write_text(users, encoding="utf-8")
    # Dovecot's auth process reads it as its own user, whatever umask this process has (the
    # command line, run in-process by other tests, sets 077).
    (root / "users").chmod(0o644)
    port = reserve_port()
    config = root / "dovecot.conf"
    config.write_text(CONFIG.format(root=root, port=port), encoding="utf-8")
    # Not into pipes: the daemonised master keeps them open, and run() would wait for ever.
    with (root / "start.log").open("w") as log:
        started = subprocess.run(
            [DOVECOT, "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            check=False,
        )
    if started.returncode != 0:
        why = (root / "start.log").read_text(encoding="utf-8", errors="replace").strip()
        shutil.rmtree(root, ignore_errors=True)
        return why
    deadline = time.monotonic() + 60  # a hang guard
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
            auth_ready(port)
            return root, config, port
        except OSError:
            assert time.monotonic() < deadline, "Dovecot did not listen"
            time.sleep(0.2)


def stop_dovecot(root: Path, config: Path) -> None:
    subprocess.run(
        [DOVECOT, "-c", str(config), "stop"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    time.sleep(0.5)
    shutil.rmtree(root, ignore_errors=True)


@contextlib.asynccontextmanager
async def dovecot() -> AsyncIterator[int]:
    started = await asyncio.to_thread(start_dovecot)
    if isinstance(started, str):
        pytest.skip(f"Dovecot does not start here: {started}")
    root, config, port = started
    try:
        yield port
    finally:
        await asyncio.to_thread(stop_dovecot, root, config)


def append(port: int, mails: list[bytes]) -> None:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    try:
        client.login(DEDICATED, PASSWORD)
        for raw in mails:
            assert client.append("INBOX", None, None, raw)[0] == "OK"
        assert client.create("Archives")[0] == "OK"
    finally:
        client.logout()


def counts(port: int) -> dict[str, int]:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    try:
        client.login(DEDICATED, PASSWORD)
        found = {}
        for folder in ("INBOX", "Archives", "Trash"):
            status, data = client.select(folder, readonly=True)
            found[folder] = int(data[0]) if status == "OK" else -1
        return found
    finally:
        client.logout()


async def test_the_webmail_reads_moves_and_deletes_in_a_dovecot_box(
    database: Database, clock: ManualClock, tmp_path: Path
) -> None:
    signer = signing_certificate(tmp_path / "signing", clock.now())
    mails = [
        await build_signed_statement_mail(
            statement_mail(
                statement_id=index, recipient=DEDICATED, domain=DOMAIN, cfonb=cfonb_of(index),
                company_name=f"DOVECOT {index}",
            ),
            Renderer(),
            signer,
        )
        for index in (1, 2, 3)
    ]  # fmt: skip
    async with dovecot() as port:
        await asyncio.to_thread(append, port, mails)
        endpoint = ImapEndpoint("127.0.0.1", port)
        async with open_bed(database, clock, tmp_path / "bed", endpoint=endpoint) as bed:
            bed.webmail.trusted = [signer.certificate]
            async with bed.logged_in() as client:
                home = await client.get("/portail/webmail/")
                listing = await client.get("/portail/webmail/releves")
                uids = re.findall(r'name="uids" value="(\d+)"', listing.text)
                page = await client.get(f"/portail/webmail/releves/{uids[0]}")
                link = re.search(r'href="([^"]+/pieces/[^"]+)"', page.text)
                assert link is not None
                download = await client.get(link.group(1).replace("&amp;", "&"))
                archive = await client.post(
                    "/portail/webmail/releves/actions",
                    data={"csrf": csrf_of(listing.text), "action": "zip", "uids": uids},
                )
                token = csrf_of(listing.text)
                moved = await client.post(
                    "/portail/webmail/releves/actions",
                    data={
                        "csrf": token,
                        "action": "deplacer",
                        "cible": "Archives",
                        "uids": uids[1],
                    },
                )
                deleted = await client.post(
                    "/portail/webmail/releves/actions",
                    data={"csrf": token, "action": "supprimer", "uids": uids[2]},
                )
            after = await asyncio.to_thread(counts, port)
    assert re.findall(r'<td class="non-lus">(\d+)</td>', home.text)[0] == "3"
    assert "3 message(s)" in listing.text and "DOVECOT 3" in listing.text
    assert "Signé par Portail Relevés &lt;portail@releves.example&gt; : signature valide." in (
        page.text
    )
    assert download.content == cfonb_of(3)
    with zipfile.ZipFile(io.BytesIO(archive.content)) as files:
        assert sorted(files.read(n) for n in files.namelist()) == [
            cfonb_of(1),
            cfonb_of(2),
            cfonb_of(3),
        ]
    assert moved.status_code == 303 and deleted.status_code == 303
    assert after == {"INBOX": 1, "Archives": 1, "Trash": 1}

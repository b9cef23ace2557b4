"""Issue 13, point 2: a redevables import file cannot freeze the daemon nor swell its answer.

The 2 MB file of 1,000,000 lines of the issue, posted to the real daemon's portal: IMAP keeps
answering while it is read (parsing runs in a thread), reading stops at the line cap with a
French message, and the page lists the first 1,000 errors plus their total. The command line
``redevables import`` has the same limits.
"""

from __future__ import annotations

import asyncio
import html
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aioimaplib
import pytest

from releves_mailer.daemon.main import Daemon
from releves_mailer.portfolio import importer
from tests.daemon.harness import (
    add_portal_account,
    daemon_config,
    portal_client,
    portal_daemon,
)
from tests.factories import make_siren
from tests.web.portal.conftest import csrf_of

ROWS = "<tr><td>"


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    async with portal_daemon(tmp_path / "data") as running:
        yield running


async def test_a_million_line_import_blocks_nothing_and_stops_at_the_cap(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The file's parse is held at its start until IMAP has answered: were it run on the
    # daemon's event loop (before the fix, a NOOP waited more than a minute), nothing could
    # answer meanwhile, and the parse would go on only when its hang guard gave up.
    loop = asyncio.get_running_loop()
    parsing = asyncio.Event()
    go_on = threading.Event()
    released: list[bool] = []
    parse = importer.parse_import_file

    def held_parse(data: bytes, **options: Any) -> Any:
        loop.call_soon_threadsafe(parsing.set)
        released.append(go_on.wait(60))
        return parse(data, **options)

    monkeypatch.setattr(importer, "parse_import_file", held_parse)
    imap = aioimaplib.IMAP4(host="127.0.0.1", port=daemon.ports["imap"], timeout=60)
    await imap.wait_hello_from_server()
    async with portal_client(daemon) as client:
        form = await client.get("/portail/redevables/import")
        upload = asyncio.create_task(
            client.post(
                "/portail/redevables/import",
                data={"csrf": csrf_of(form.text)},
                files={"fichier": ("gros.csv", b"x\n" * 1_000_000, "text/csv")},
            )
        )
        try:
            await asyncio.wait_for(parsing.wait(), 60)
            # IMAP answers on its own connection while the file is being read.
            assert (await imap.noop()).result == "OK"
        finally:
            go_on.set()
        answer = await upload
    await imap.logout()
    assert released == [True], "the parse went on before IMAP answered"

    assert answer.status_code == 422
    page = html.unescape(answer.text)
    assert "le fichier dépasse 100 000 lignes" in page
    assert "découpez-le en plusieurs fichiers" in page and "rien n'a été importé" in page
    # Every line read is wrong: 100,000 errors counted, the first 1,000 shown.
    assert "100000 erreur(s) sur 100000 ligne(s), les 1000 premières détaillées" in page
    assert page.count(ROWS) == 1000
    assert "<tr><td>1000</td>" in page and "<tr><td>1001</td>" not in page
    assert len(answer.content) < 1024 * 1024  # was 95 MB


def _cli(config: Path, *args: str, max_lines: int) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELEVES_MAILER")}
    env["RELEVES_MAILER__PORTAL__IMPORT_MAX_LINES"] = str(max_lines)
    return subprocess.run(
        [sys.executable, "-m", "releves_mailer", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def _good_line(index: int) -> str:
    return f"{make_siren(index)};;SOCIETE {index};;;MENSUELLE;;1;0\n"


async def test_the_command_line_import_has_the_same_limits(tmp_path: Path) -> None:
    config = await daemon_config(tmp_path / "data")
    await add_portal_account(config)
    assert config.source is not None
    await asyncio.to_thread(_command_line_limits, config.source, tmp_path)


def _command_line_limits(config: Path, folder: Path) -> None:
    too_long = folder / "long.csv"
    too_long.write_text("".join(_good_line(500 + i) for i in range(60)), encoding="utf-8")
    done = _cli(config, "redevables", "import", str(too_long), max_lines=50)
    assert done.returncode != 0
    assert "le fichier dépasse 50 lignes" in done.stderr and "rien n'a été importé" in done.stderr

    wrong = folder / "faux.csv"
    wrong.write_text("x\n" * 1500, encoding="utf-8")
    done = _cli(config, "redevables", "import", str(wrong), max_lines=100_000)
    assert done.returncode != 0
    listed = [line for line in done.stderr.splitlines() if line.startswith(f"{wrong}: ligne")]
    assert len(listed) == 1000
    assert "1500 erreur(s) sur 1500 ligne(s), les 1000 premières détaillées" in done.stderr

    # Within the limits the same file shape is imported.
    done = _cli(config, "redevables", "import", str(too_long), max_lines=60)
    assert done.returncode == 0, done.stderr
    assert "60 redevable(s) ont été créé(s)" in done.stdout

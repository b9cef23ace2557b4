"""A new user follows the demo's banner: its address, its login and its password file open the
portal; commands run next to it build links with the running daemon's real address."""

from __future__ import annotations

import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from email import policy
from email.parser import BytesParser
from pathlib import Path

import httpx
import pytest

from tests.factories import make_siren

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _read_lines(stream: object, lines: queue.Queue[str]) -> None:
    for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
        lines.put(line)


def _banner(process: subprocess.Popen[str], lines: queue.Queue[str]) -> str:
    """Everything the demo printed up to the end of its banner ("Arrêt : Ctrl-C.")."""
    seen: list[str] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            assert process.poll() is None, "".join(seen)
            continue
        seen.append(line)
        if "Arrêt : Ctrl-C." in line:
            return "".join(seen)
    raise AssertionError("no banner after 5 minutes:\n" + "".join(seen))


def _run(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELEVES_MAILER")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "releves_mailer",
            "--config",
            str(data / "releves-mailer.toml"),
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_the_demo_banner_opens_the_portal_and_links_carry_the_real_port(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELEVES_MAILER")}
    command = [sys.executable, "-m", "releves_mailer", "demo", "--data", str(data)]
    for option in ("--imap-port", "--imaps-port", "--smtp-port", "--http-port"):
        command += [option, "0"]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True).start()
    try:
        banner = _banner(process, lines)
        address = re.search(r"Portail web\s+(\S+)", banner)
        login = re.search(r"identifiant « (\S+) »", banner)
        password_file = re.search(r"mot de passe : dans le fichier (\S+)", banner)
        assert address and login and password_file, banner
        portal_url = address[1]
        assert login[1] == "demo"
        assert re.match(r"^http://127\.0\.0\.1:\d+/portail/$", portal_url), portal_url
        assert not portal_url.startswith("http://127.0.0.1:8080/")  # the real, free port
        base = portal_url.removesuffix("/portail/")
        password = Path(password_file[1]).read_text(encoding="utf-8").strip()

        with httpx.Client(follow_redirects=True, timeout=30) as client:
            # The printed address, and the bare site address, both lead to the login form.
            for url in (portal_url, base + "/"):
                page = client.get(url)
                assert page.status_code == 200, url
                assert str(page.url).startswith(f"{base}/portail/connexion"), page.url
                assert 'id="login"' in page.text and 'id="password"' in page.text
            token = CSRF.search(page.text)
            assert token is not None
            home = client.post(
                f"{base}/portail/connexion",
                data={"login": login[1], "password": password, "csrf": token[1]},
            )
            assert home.status_code == 200 and str(home.url) == portal_url
            assert "<h1>Accueil</h1>" in home.text
            assert "demo-agence" in client.get(f"{base}/portail/mon-compte").text

        # A command run beside the daemon mails a link with the daemon's real address.
        siren = make_siren(77)
        added = _run(
            data,
            "redevables",
            "add",
            "--account",
            "demo",
            "--siren",
            siren,
            "--name",
            "NOUVEAU CLIENT",
            "--email",
            "client@example.com",
            "--periodicity",
            "MENSUELLE",
            "--day",
            "5",
        )
        assert added.returncode == 0, added.stderr
        sent = _run(data, "tokens", "send", siren)
        assert sent.returncode == 0, sent.stderr
        with sqlite3.connect(data / "releves.sqlite3") as database:
            raws = [
                row[0]
                for row in database.execute(
                    "SELECT raw FROM outbox_message WHERE recipient = 'client@example.com'"
                )
            ]
        assert len(raws) == 1
        mail = BytesParser(policy=policy.default).parsebytes(raws[0])
        texts = [
            part.get_content()
            for part in mail.walk()
            if part.get_content_type() in ("text/plain", "text/html")
        ]
        links = re.findall(r"https?://[^\s\"<>]+/releves/[^\s\"<>]+", "\n".join(texts))
        assert links and all(link.startswith(base + "/") for link in links), links
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert process.returncode == 0
    # The daemon is gone: its address is no longer offered to commands.
    assert not (data / "ports.json").exists()

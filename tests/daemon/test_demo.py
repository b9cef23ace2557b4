"""The README's first command: ``releves-mailer demo`` builds, serves, and a mail client reads."""

from __future__ import annotations

import imaplib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

PASSWORD = "mot de passe de la demo"


@pytest.mark.slow
def test_demo_serves_statements_to_a_mail_client(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELEVES_MAILER")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "releves_mailer",
            "demo",
            "--data",
            str(data),
            "--password-file",
            str(password_file),
            "--imap-port",
            "0",
            "--imaps-port",
            "0",
            "--smtp-port",
            "0",
            "--http-port",
            "0",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        ports_file = data / "ports.json"
        deadline = time.monotonic() + 300
        while not ports_file.exists():
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "the demo took more than 5 minutes to start"
            time.sleep(0.5)
        ports = json.loads(ports_file.read_text())
        assert set(ports) == {"imap", "imaps", "smtp", "http", "public_url", "pid"}
        assert all(ports.values())

        # The dedicated box of `demo`, over IMAPS with the self-signed certificate.
        context = ssl.create_default_context(cafile=str(data / "tls" / "cert.pem"))
        client = imaplib.IMAP4_SSL("127.0.0.1", ports["imaps"], ssl_context=context)
        client.login("releves.demo@releves.localhost", PASSWORD)
        _, count = client.select("INBOX", readonly=True)
        assert int(count[0]) > 50
        _, data_ = client.fetch("1", "(BODY.PEEK[])")
        raw = next(part[1] for part in data_ if isinstance(part, tuple))
        mail = BytesParser(policy=policy.default).parsebytes(raw)
        assert str(mail["Subject"]).startswith("Relevé ")
        assert mail.get_content_type() == "multipart/signed"
        assert any((p.get_filename() or "").endswith(".cfonb") for p in mail.walk())
        client.logout()

        # The secondary account receives its own statements in its default box.
        plain = imaplib.IMAP4("127.0.0.1", ports["imap"])
        plain.login("demo-agence", PASSWORD)
        _, count = plain.select("INBOX", readonly=True)
        assert int(count[0]) > 0
        plain.logout()
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0].decode("utf-8", "replace")
    assert process.returncode == 0, output
    assert "releves.demo@releves.localhost" in output  # how to connect was printed
    # A second start reuses the demo (no new simulation) and serves at once.
    again = subprocess.run(
        [sys.executable, "-m", "releves_mailer", "demo", "--data", str(data), "--help"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--password-file" in again.stdout

"""The webmail's connections and passwords: reuse, idle close, where the boxes are."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from releves_mailer.config import load_config
from releves_mailer.webmail import endpoint_from_config
from tests.factories import PASSWORD
from tests.web.portal.webmail.harness import WebmailBed

pytestmark = pytest.mark.once


async def test_connections_are_reused_then_closed_when_idle(bed: WebmailBed) -> None:
    async with bed.logged_in() as client:
        assert (await client.get("/portail/webmail/")).status_code == 200
        assert bed.webmail.pool.open_count == 2
        assert (await client.get("/portail/webmail/releves")).status_code == 200
        assert bed.webmail.pool.open_count == 2  # the same two connections
        bed.clock.advance(dt.timedelta(minutes=6))
        assert (await client.get("/portail/webmail/releves")).status_code == 200
        # Both were idle: closed; the dedicated box's was opened again.
        assert bed.webmail.pool.open_count == 1


async def test_the_password_is_kept_encrypted(bed: WebmailBed) -> None:
    async with bed.logged_in():
        secrets = list(bed.webmail.pool.vault._secrets.values())
    assert len(secrets) == 1
    assert PASSWORD.encode() not in secrets[0].token and secrets[0].token.startswith(b"gAAAA")


def test_the_endpoint_is_the_daemons_own_server_unless_another_is_named(tmp_path: Path) -> None:
    path = tmp_path / "releves-mailer.toml"
    path.write_text('[imap]\nlisten = "0.0.0.0"\n', encoding="utf-8")
    own = endpoint_from_config(load_config(path, environ={}), 41143, 41993)
    assert (own.host, own.port, own.tls) == ("127.0.0.1", 41143, None)
    path.write_text(
        '[webmail]\nimap_host = "imap.example"\nimap_port = 993\ntls = "imaps"\n',
        encoding="utf-8",
    )
    other = endpoint_from_config(load_config(path, environ={}), 41143, 41993)
    assert (other.host, other.port) == ("imap.example", 993)
    assert other.tls is not None and other.tls.check_hostname

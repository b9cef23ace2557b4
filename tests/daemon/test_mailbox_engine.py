"""The daemon's choice of mailbox engine (``[mailbox] engine``), without starting Dovecot:
what it refuses and where the webmail and the health check look. The delivery itself is
in ``test_dovecot_engine.py``, against the real Dovecot."""

from __future__ import annotations

from pathlib import Path

import pytest

from releves_mailer.config import Config, ConfigError, MailboxSection, load_config
from releves_mailer.daemon.engine import dovecot_engine
from releves_mailer.listeners import reserve_ports
from releves_mailer.mailbox.dovecot.lmtp import LmtpSink
from releves_mailer.mailbox.dovecot.setup import DovecotPorts, write_dovecot_config
from tests.datadirs import initialised_data_dir

POSTGRES = "postgresql+asyncpg://releves@127.0.0.1:5432/releves"


async def dovecot_config(tmp_path: Path, *, url: str = POSTGRES) -> Config:
    config = await initialised_data_dir(tmp_path / "data")
    assert config.source is not None
    text = config.source.read_text(encoding="utf-8")
    text = text.replace('engine = "builtin"', 'engine = "dovecot"')
    text = text.replace('url = ""', f'url = "{url}"', 1)
    config.source.write_text(text, encoding="utf-8")
    return load_config(config.source)


async def test_dovecot_needs_postgresql(tmp_path: Path) -> None:
    config = await initialised_data_dir(tmp_path / "data")
    config = config.model_copy(update={"mailbox": MailboxSection(engine="dovecot")})
    with pytest.raises(ConfigError) as caught:
        dovecot_engine(config)
    message = str(caught.value)
    assert "mailbox.engine" in message and "PostgreSQL" in message
    assert "db copy" in message


async def test_a_missing_dovecot_setup_is_named(tmp_path: Path) -> None:
    config = await dovecot_config(tmp_path)
    with pytest.raises(ConfigError) as caught:
        dovecot_engine(config)
    message = str(caught.value)
    assert "mailbox.dovecot_dir" in message
    assert str(config.data_dir / "dovecot" / "releves-mailer-setup.json") in message
    assert "dovecot-config" in message


async def test_the_webmail_and_the_readers_use_dovecot(tmp_path: Path) -> None:
    config = await dovecot_config(tmp_path)
    imap, imaps_port, lmtp = reserve_ports(3)
    write_dovecot_config(
        config.data_dir / "dovecot",
        database_url=config.database_url,
        domain=config.portal.domain,
        certificate=config.path(config.tls.certificate),
        key=config.path(config.tls.key),
        ports=DovecotPorts(imap, imaps_port, lmtp),
    )
    engine = dovecot_engine(config)
    assert engine.name == "dovecot" and isinstance(engine.sink, LmtpSink)
    assert engine.imap is None and engine.housekeeping is None
    assert engine.ports == {"imap": imap, "imaps": imaps_port}
    # Plain IMAP over the loopback, where Dovecot accepts plaintext logins.
    assert (engine.webmail.host, engine.webmail.port, engine.webmail.tls) == (
        "127.0.0.1",
        imap,
        None,
    )
    # Nothing listens: the health check says Dovecot is down, naming both services.
    part = await engine.health.check()
    assert engine.health.name == "dovecot" and part["etat"] == "panne"
    assert f"lmtp 127.0.0.1:{lmtp}" in part["erreur"] and f"imap 127.0.0.1:{imap}" in part["erreur"]
    # The quota's measure does not fail the SMTP dialogue: the delivery then says 451.
    assert await engine.usage(f"demo@{config.portal.domain}") == 0

    imaps = config.model_copy(
        update={"webmail": config.webmail.model_copy(update={"tls": "imaps"})}
    )
    endpoint = dovecot_engine(imaps).webmail
    assert endpoint.port == imaps_port and endpoint.tls is not None

"""A private Dovecot for a test: configured by ``write_dovecot_config`` on ports chosen at
run time, started in the foreground, stopped afterwards. Skips when Dovecot is absent."""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from releves_mailer.config import Config
from releves_mailer.listeners import reserve_ports
from releves_mailer.mailbox.dovecot.setup import DovecotPorts, DovecotSetup, write_dovecot_config

__all__ = ["DOVECOT", "auth_ready", "dovecot_for", "reachable_folder", "running_dovecot"]

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"


def auth_ready(port: int, seconds: float = 60) -> None:
    """Wait until Dovecot's IMAP on ``port`` answers logins: a listening port is not enough
    on a loaded machine, where the auth process may still be starting and logins then get
    ``NO [UNAVAILABLE]``. A login that cannot succeed is refused by a ready one."""
    deadline = time.monotonic() + seconds  # a hang guard
    while True:
        try:
            with imaplib.IMAP4("127.0.0.1", port, timeout=30) as client:
                client.login("sonde-inexistante", "x")
        except imaplib.IMAP4.error as error:
            if "UNAVAILABLE" not in str(error):
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, "Dovecot's logins did not become available"
        time.sleep(0.2)


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


@contextlib.asynccontextmanager
async def running_dovecot(
    folder: Path, *, database_url: str, domain: str, certificate: Path, key: Path
) -> AsyncIterator[DovecotSetup]:
    if not os.path.exists(DOVECOT):  # noqa: ASYNC240  (once, before anything runs)
        pytest.skip(
            "Dovecot is not installed (apt-get install dovecot-imapd dovecot-lmtpd dovecot-pgsql)"
        )
    imap, imaps, lmtp = reserve_ports(3)
    setup = write_dovecot_config(
        folder,
        database_url=database_url,
        domain=domain,
        certificate=certificate,
        key=key,
        ports=DovecotPorts(imap, imaps, lmtp),
    )
    conf = str(folder / "dovecot.conf")
    checked = await asyncio.to_thread(
        subprocess.run, [DOVECOT, "-c", conf, "-n"], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    process = await asyncio.create_subprocess_exec(
        DOVECOT, "-F", "-c", conf, stderr=asyncio.subprocess.PIPE
    )
    try:
        for _ in range(600):  # a minute: a hang guard
            if await _listening(imap) and await _listening(lmtp):
                break
            if process.returncode is not None:
                assert process.stderr is not None
                raise AssertionError((await process.stderr.read()).decode())
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("Dovecot did not listen within a minute")
        await asyncio.to_thread(auth_ready, imap)
        try:
            yield setup
        except BaseException:
            # What Dovecot said goes into the test's report (captured output).
            log = folder / "log" / "dovecot.log"
            print(log.read_text(errors="replace")[-4000:] if log.exists() else "no log")
            raise
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 60)
            except TimeoutError:
                process.kill()
                await process.wait()


def reachable_folder() -> Path:
    """A new folder Dovecot's own processes can reach: they run as another user, and
    pytest's private temporary folders are not theirs. The caller removes it."""
    folder = Path(tempfile.mkdtemp(prefix="releves-dovecot-"))
    os.chmod(folder, 0o755)
    return folder


@contextlib.asynccontextmanager
async def dovecot_for(config: Config, database_url: str) -> AsyncIterator[DovecotSetup]:
    """A private Dovecot for the installation of ``config`` (its domain, its certificate)
    on ``database_url``, in a folder of its own removed afterwards."""
    folder = reachable_folder()
    try:
        async with running_dovecot(
            folder,
            database_url=database_url,
            domain=config.portal.domain,
            certificate=config.path(config.tls.certificate),
            key=config.path(config.tls.key),
        ) as setup:
            yield setup
    finally:
        shutil.rmtree(folder, ignore_errors=True)

"""Backups taken while a real ``serve`` process delivers statements, restored into new
folders: same statements, same message bytes (read over IMAP from a daemon started on the
restored folder), passwords that still open IMAP and the portal."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from releves_mailer.backup import take_backup
from releves_mailer.clock import SystemClock
from releves_mailer.config import Config, load_config
from releves_mailer.db import Database
from tests.backup.installation import (
    KEY_MARKERS,
    archive_members,
    imap_messages,
    key_fragments,
    statements_json,
    stored_messages,
)
from tests.commands import run_command_async
from tests.daemon.test_kill_during_delivery import PASSWORD, build, progress, start_daemon
from tests.web.portal.conftest import log_in

#: IMAP login of each box owner of the demo portfolio.
LOGINS = {
    "demo@releves.localhost": "demo",
    "releves.demo@releves.localhost": "releves.demo@releves.localhost",
    "demo-agence@releves.localhost": "demo-agence",
}


async def wait_for(
    database: Database, daemon: subprocess.Popen[bytes], done: int | None = None
) -> int:
    """Wait until ``done`` statements are decided (delivered or routed), or without it all
    the statements cut so far (the daemon may cut more as it runs); how many are."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        total, decided = await progress(database)
        if decided >= (total if done is None else done):
            return decided
        assert daemon.poll() is None, "the daemon stopped on its own"
        await asyncio.sleep(0.05)
    pytest.fail(f"fewer than {done} statements delivered in 10 minutes")


async def wait_for_ports(config: Config, daemon: subprocess.Popen[bytes]) -> dict[str, int]:
    ports = config.data_dir / "ports.json"
    deadline = time.monotonic() + 120
    while not ports.exists():
        assert daemon.poll() is None, (config.data_dir / "daemon.log").read_text()[-2000:]
        assert time.monotonic() < deadline, "the daemon did not start in 2 minutes"
        await asyncio.sleep(0.2)
    result: dict[str, int] = json.loads(ports.read_text())
    return result


def stop(daemon: subprocess.Popen[bytes]) -> None:
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == 0


async def restore(backup: Path, target: Path) -> tuple[Config, str]:
    config_stub = load_config(backup.parent / "data" / "releves-mailer.toml")
    result = await run_command_async(config_stub, "restore", str(backup), "--data", str(target))
    assert result.returncode == 0, result.stderr
    return load_config(target / "releves-mailer.toml"), result.stdout


@pytest.mark.slow
async def test_backup_while_serving_restores_statements_mails_and_passwords(
    tmp_path: Path,
) -> None:
    config = await build(tmp_path / "data", extra_daily=0)
    database = Database(config.database_url)
    during, after = tmp_path / "during.tar.gz", tmp_path / "after.tar"
    try:
        total, decided = await progress(database)
        assert total > 50 and decided == 0
        daemon = start_daemon(config)
        try:
            # Backup taken while the daemon delivers: it started delivering; whether work
            # was left when the snapshot was taken is observed (printed), not assumed.
            # In this process, not a new one: a command's start-up (imports) could outlast
            # the whole delivery.
            started = await wait_for(database, daemon, 1)
            await take_backup(config, during, with_keys=False, clock=SystemClock())
            await wait_for_ports(config, daemon)
            await wait_for(database, daemon)
            result = await run_command_async(config, "backup", "--out", str(after), "--with-keys")
            assert result.returncode == 0, result.stderr
            assert "aussi secret" in result.stdout
        finally:
            stop(daemon)
    finally:
        await database.dispose()
    print(f"first backup began after {started} of {total} statements were delivered")
    original_statements = await statements_json(config)
    original_messages = await stored_messages(config)
    assert len(original_messages) >= total

    # Without --with-keys: no key material in any member, and the restore says which keys
    # to put back.
    assert during.stat().st_mode & 0o777 == 0o600
    fragments = key_fragments(config)
    for name, data in archive_members(during).items():
        assert not name.startswith("keys/") and not name.endswith("key.pem"), name
        for marker in (*KEY_MARKERS, *fragments):
            assert marker not in data, f"key material in member {name}"
    restored, output = await restore(during, tmp_path / "restored-during")
    assert "à remettre en place" in output
    for path in ("keys/secrets.key", "signing/portal-key.pem", "tls/key.pem"):
        assert str(restored.data_dir / path) in output
        assert not (restored.data_dir / path).exists()
    # Consistent copy: the statements are the original's (the daemon may cut a few more
    # after the snapshot), every message of the snapshot has its file, byte for byte one
    # the original delivered.
    during_statements = await statements_json(restored)
    assert all(row in original_statements for row in during_statements)
    assert len(during_statements) >= total
    restored_database = Database(restored.database_url)
    try:
        snapshot_total, snapshot_decided = await progress(restored_database)
    finally:
        await restored_database.dispose()
    # The snapshot is not older than the backup command: what was delivered before it
    # started is in it.
    assert snapshot_total >= total and snapshot_decided >= started
    print(f"the snapshot holds {snapshot_decided} of {snapshot_total} statements delivered")
    snapshot = await stored_messages(restored)
    assert snapshot and set(snapshot) <= set(original_messages)

    # With --with-keys, once every statement is delivered: the restored installation runs.
    members = archive_members(after)
    assert {"keys/secrets.key", "signing/portal-key.pem", "tls/key.pem"} <= set(members)
    assert after.stat().st_mode & 0o777 == 0o600
    restored, output = await restore(after, tmp_path / "restored-after")
    assert "à remettre en place" not in output
    assert await statements_json(restored) == original_statements
    assert await stored_messages(restored) == original_messages
    daemon = start_daemon(restored)
    try:
        ports = await wait_for_ports(restored, daemon)
        folders: dict[str, set[str]] = {}
        for owner, folder, *_ in original_messages:
            folders.setdefault(owner, set()).add(folder)
        logins = {owner: LOGINS[owner] for owner in folders}
        over_imap = await asyncio.to_thread(imap_messages, ports["imap"], logins, PASSWORD, folders)
        assert over_imap == original_messages
        base = f"http://127.0.0.1:{ports['http']}"
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            await log_in(client, "demo", PASSWORD)
            page = await client.get("/portail/redevables")
            assert page.status_code == 200
            assert "BOULANGERIE DU MARCHÉ" in page.text
    finally:
        stop(daemon)

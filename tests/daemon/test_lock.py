"""One daemon per data directory: a second ``serve`` or ``demo`` refuses at once."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from releves_mailer.daemon.lock import LOCK_FILE_NAME, DaemonAlreadyRunning, DataDirLock
from tests.commands import run_command
from tests.daemon.processes import PORT_OPTIONS, start_serve, stop, wait_for_ports
from tests.datadirs import initialised_data_dir
from tests.factories import make_nic, make_siren


def test_second_lock_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    with DataDirLock(tmp_path) as first:
        assert first.held
        assert (tmp_path / LOCK_FILE_NAME).read_text().strip() == str(os.getpid())
        with pytest.raises(DaemonAlreadyRunning) as refused:
            DataDirLock(tmp_path).acquire()
        assert str(refused.value) == (
            f"un démon releves-mailer tourne déjà sur {tmp_path} (pid {os.getpid()})"
        )
    # Released: the next one gets it.
    with DataDirLock(tmp_path) as again:
        assert again.held


@pytest.mark.slow
async def test_two_real_daemons_on_one_data_directory(tmp_path: Path) -> None:
    config = await initialised_data_dir(tmp_path / "data")
    data_dir = config.data_dir
    first = start_serve(config)
    try:
        ports = wait_for_ports(first, data_dir)

        second = run_command(config, "serve", *PORT_OPTIONS)
        assert second.returncode != 0
        assert (
            f"un démon releves-mailer tourne déjà sur {data_dir} (pid {first.pid})" in second.stderr
        )
        assert "Traceback" not in second.stderr
        # The first daemon's ports stay written; it still runs.
        assert json.loads((data_dir / "ports.json").read_text()) == ports
        assert first.poll() is None

        # ``demo`` on the same folder refuses the same way, before building anything.
        demo = run_command(config, "demo", "--data", str(data_dir), *PORT_OPTIONS)
        assert demo.returncode != 0
        assert f"tourne déjà sur {data_dir} (pid {first.pid})" in demo.stderr

        # Commands that change data work beside the daemon.
        password = tmp_path / "password"
        password.write_text("un mot de passe solide\n")
        siret = make_siren(1) + make_nic(make_siren(1))
        added = run_command(
            config,
            "accounts",
            "add",
            "cabinet",
            "--siret",
            siret,
            "--name",
            "Cabinet",
            "--email",
            "chef@cabinet.example",
            "--password-file",
            str(password),
        )
        assert added.returncode == 0, added.stderr
        listed = run_command(config, "accounts", "list", "--json")
        assert [account["login"] for account in json.loads(listed.stdout)] == ["cabinet"]

        # Killed outright, it leaves no stale lock: the next daemon starts.
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
        (data_dir / "ports.json").unlink()
        third = start_serve(config)
        try:
            wait_for_ports(third, data_dir)
            assert (data_dir / LOCK_FILE_NAME).read_text().strip() == str(third.pid)
        finally:
            assert stop(third) == 0
    finally:
        stop(first)

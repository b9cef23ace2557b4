"""systemd: the unit file verifies, and a real ``serve`` speaks the notify protocol
(READY, WATCHDOG, RELOADING on SIGHUP, STOPPING) on a socket this test binds."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from releves_mailer.config import load_config
from releves_mailer.daemon.systemd import Notifier, watchdog_interval
from tests.daemon.processes import start_serve, stop, wait_for_ports
from tests.datadirs import initialised_data_dir

UNIT = Path(__file__).parents[2] / "deploy" / "releves-mailer.service"


def _installed_script() -> Path:
    return Path(sys.executable).parent / "releves-mailer"


def test_unit_file_names_what_the_daemon_expects() -> None:
    lines = set(UNIT.read_text(encoding="utf-8").splitlines())
    for line in (
        "Type=notify",
        "User=releves-mailer",
        "ProtectSystem=strict",
        "PrivateTmp=true",
        "NoNewPrivileges=true",
        "ReadWritePaths=/var/lib/releves-mailer",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "Environment=RELEVES_MAILER_CONFIG=/etc/releves-mailer/releves-mailer.toml",
    ):
        assert line in lines, line
    assert any(line.startswith("WatchdogSec=") for line in lines)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    script = _installed_script()
    if not script.exists():
        pytest.skip(f"releves-mailer script not installed beside {sys.executable}")
    text = UNIT.read_text(encoding="utf-8")
    # verify checks that ExecStart's program exists: point it at this installation's.
    unit = tmp_path / "releves-mailer.service"
    unit.write_text(
        text.replace("/opt/releves-mailer/venv/bin/releves-mailer", str(script)), encoding="utf-8"
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # Unknown keys and bad values are only warnings: none is accepted.
    assert "releves-mailer.service" not in result.stderr, result.stderr


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    # AF_UNIX paths are limited to 108 bytes: pytest's tmp_path may be longer.
    folder = tempfile.mkdtemp(prefix="notify-", dir="/tmp")
    path = os.path.join(folder, "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(120)
    try:
        yield listener, path
    finally:
        listener.close()
        shutil.rmtree(folder, ignore_errors=True)


def _receive_until(listener: socket.socket, wanted: str, seen: list[str]) -> None:
    """Read datagrams into ``seen`` until one holds the line ``wanted`` (or time out)."""
    while True:
        message = listener.recv(4096).decode()
        seen.append(message)
        if wanted in message.splitlines():
            return


@pytest.mark.slow
async def test_serve_speaks_the_notify_protocol(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    listener, path = notify_socket
    config = await initialised_data_dir(tmp_path / "data")
    assert config.source is not None
    text = config.source.read_text(encoding="utf-8")
    text = text.replace('# file = "releves-mailer.log"', 'file = "daemon.log"', 1)
    config.source.write_text(text, encoding="utf-8")
    log = config.data_dir / "daemon.log"

    process = start_serve(
        config, "--log-format", "json", env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}
    )
    try:
        seen: list[str] = []
        _receive_until(listener, "READY=1", seen)
        ready = next(message for message in seen if "READY=1" in message.splitlines())
        assert f"MAINPID={process.pid}" in ready.splitlines()
        assert any(line.startswith("STATUS=prêt (imap ") for line in ready.splitlines())
        ports = wait_for_ports(process, config.data_dir)
        assert str(ports["imap"]) in ready
        # Pings every half WATCHDOG_USEC, from the event loop.
        for _ in range(2):
            _receive_until(listener, "WATCHDOG=1", seen)

        # SIGHUP: the file is re-read; the level applies, the relay needs a restart.
        text = config.source.read_text(encoding="utf-8")
        text = text.replace('level = "INFO"', 'level = "DEBUG"', 1)
        text = text.replace('\nhost = ""', '\nhost = "relais.example"', 1)  # [relay]'s
        config.source.write_text(text, encoding="utf-8")
        seen.clear()
        process.send_signal(signal.SIGHUP)
        _receive_until(listener, "RELOADING=1", seen)
        _receive_until(listener, "READY=1", seen)
        entries = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
        messages = [entry["message"] for entry in entries]
        assert any(
            "log level DEBUG, log format json" in message and "templates reloaded" in message
            for message in messages
        ), messages
        assert any("relay" in message and "restart" in message for message in messages), messages
        assert all({"time", "level", "logger", "message"} <= set(entry) for entry in entries)

        # A file that no longer validates is refused; the daemon goes on with its config.
        config.source.write_text(text + "\n[logging]\nlevel = 3\n", encoding="utf-8")
        seen.clear()
        process.send_signal(signal.SIGHUP)
        _receive_until(listener, "RELOADING=1", seen)
        _receive_until(listener, "READY=1", seen)
        entries = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
        assert any(
            entry["level"] == "ERROR" and "configuration file not reloaded" in entry["message"]
            for entry in entries
        )
        assert process.poll() is None

        seen.clear()
        process.send_signal(signal.SIGTERM)
        _receive_until(listener, "STOPPING=1", seen)
        assert process.wait(timeout=60) == 0
    finally:
        stop(process)


def test_abstract_notify_socket() -> None:
    name = f"releves-mailer-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        listener.settimeout(10)
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": "@" + name})
        assert notifier.enabled
        notifier.notify(READY=1, STATUS="prêt\navec saut")
        assert listener.recv(4096).decode() == "READY=1\nSTATUS=prêt avec saut"
        notifier.close()


def test_without_systemd_nothing_is_sent() -> None:
    notifier = Notifier.from_environment({})
    assert not notifier.enabled
    notifier.notify(READY=1)  # no socket: does nothing, raises nothing
    assert watchdog_interval({}) is None


def test_watchdog_interval_is_half_the_timeout() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "4000000"}) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELEVES_MAILER")}
    return subprocess.run(
        [sys.executable, "-m", "releves_mailer", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_init_system_prepares_the_units_paths(tmp_path: Path) -> None:
    root = tmp_path / "racine"
    user = "nobody"
    result = _run_cli(
        "init", "--system", "--root", str(root), "--domain", "releves.example.fr", "--user", user
    )
    assert result.returncode == 0, result.stderr
    config_path = root / "etc/releves-mailer/releves-mailer.toml"
    data_dir = root / "var/lib/releves-mailer"
    config = load_config(config_path)
    assert config.data_dir == data_dir.resolve()
    assert config.portal.domain == "releves.example.fr"
    for name in ("keys/secrets.key", "tls/cert.pem", "signing/portal-key.pem", "releves.sqlite3"):
        assert (data_dir / name).is_file(), name
    environment = root / "etc/releves-mailer/environment"
    assert environment.stat().st_mode & 0o777 == 0o600
    assert "RELEVES_MAILER__RELAY__PASSWORD" in environment.read_text()
    if os.geteuid() == 0:
        # Run as root: the data belong to the service's user, the config stays root's.
        account = pwd.getpwnam(user)
        assert (data_dir / "keys/secrets.key").stat().st_uid == account.pw_uid
        assert config_path.stat().st_uid == 0
        assert config_path.stat().st_mode & 0o777 == 0o640
    else:
        assert data_dir.stat().st_uid == os.geteuid()
    checked = _run_cli("--config", str(config_path), "check-config")
    assert checked.returncode == 0, checked.stderr

    # Nothing is overwritten by a second run.
    again = _run_cli("init", "--system", "--root", str(root))
    assert again.returncode != 0
    assert "existe déjà" in again.stderr
    refused = _run_cli("init", str(tmp_path / "x"), "--system")
    assert refused.returncode != 0
    assert "soit un DOSSIER, soit --system" in refused.stderr

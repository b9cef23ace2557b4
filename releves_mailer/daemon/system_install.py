"""``init --system``: the paths the systemd unit names, owned by the service's user.

The unit (``deploy/releves-mailer.service``) reads ``/etc/releves-mailer/releves-mailer.toml``
and the optional ``/etc/releves-mailer/environment``, and may write only under
``/var/lib/releves-mailer``. Everything is made under ``root`` (``/`` on a real server, a
scratch folder in tests).
"""

from __future__ import annotations

import asyncio
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from releves_mailer.clock import Clock
from releves_mailer.config import CONFIG_FILE_NAME, Config
from releves_mailer.daemon.bootstrap import initialise_data_dir
from releves_mailer.files import write_atomically

__all__ = ["SERVICE_USER", "SystemInstall", "SystemLayout", "initialise_system"]

SERVICE_USER = "releves-mailer"

_ENVIRONMENT = """\
# Environment of the releves-mailer service (read by systemd as root, mode 0600).
# Secrets belong here rather than in releves-mailer.toml, e.g.:
# RELEVES_MAILER__RELAY__PASSWORD=...
# RELEVES_MAILER__AGGREGATOR__POWENS__CLIENT_SECRET=...
# RELEVES_MAILER__AGGREGATOR__POWENS__WEBHOOK_SECRET=...
"""


@dataclass(frozen=True)
class SystemLayout:
    """Where the unit looks, under ``root``."""

    root: Path

    @property
    def config_dir(self) -> Path:
        return self.root / "etc" / "releves-mailer"

    @property
    def config_path(self) -> Path:
        return self.config_dir / CONFIG_FILE_NAME

    @property
    def environment_file(self) -> Path:
        return self.config_dir / "environment"

    @property
    def data_dir(self) -> Path:
        return self.root / "var" / "lib" / "releves-mailer"


@dataclass(frozen=True)
class SystemInstall:
    config: Config
    layout: SystemLayout
    #: The user now owning the data directory, or None when it was left to the caller.
    owner: str | None


async def initialise_system(
    root: Path, domain: str, clock: Clock, user: str = SERVICE_USER
) -> SystemInstall:
    """Write the config into ``root/etc/releves-mailer``, the data into
    ``root/var/lib/releves-mailer``, and hand the data over to ``user`` when run as root.

    ``root`` must be absolute: the config names the data directory by its full path.
    """
    if not root.is_absolute():
        raise ValueError(f"root must be absolute: {root}")
    layout = SystemLayout(root)
    account = _user(user) if os.geteuid() == 0 else None
    config = await initialise_data_dir(
        layout.data_dir, domain, clock, config_path=layout.config_path
    )
    await asyncio.to_thread(_finish, layout, account)
    return SystemInstall(config, layout, account.pw_name if account is not None else None)


def _user(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _finish(layout: SystemLayout, account: pwd.struct_passwd | None) -> None:
    if not layout.environment_file.exists():
        write_atomically(layout.environment_file, _ENVIRONMENT.encode())
    if account is not None:
        _hand_over(layout, account)


def _hand_over(layout: SystemLayout, account: pwd.struct_passwd) -> None:
    """Data owned by the service's user; config readable by its group, writable by root."""
    uid, gid = account.pw_uid, account.pw_gid
    for folder, folders, files in os.walk(layout.data_dir):
        os.chown(folder, uid, gid, follow_symlinks=False)
        for name in (*folders, *files):
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)
    os.chown(layout.config_dir, 0, gid)
    layout.config_dir.chmod(0o750)
    os.chown(layout.config_path, 0, gid)
    layout.config_path.chmod(0o640)

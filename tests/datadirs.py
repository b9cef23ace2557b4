"""Initialised data directories for tests: made once per run and domain, copied per test."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from releves_mailer.clock import SystemClock
from releves_mailer.config import CONFIG_FILE_NAME, Config, load_config
from releves_mailer.daemon.bootstrap import initialise_data_dir

__all__ = ["initialised_data_dir"]

# Initialising generates two RSA keys and migrates a database (up to a second on a busy
# machine); a copy of a directory made once per run is as good for tests that only need
# one, since its paths are relative to the directory. ``releves-mailer init`` itself keeps
# tests of its own.
_templates: dict[str, Path] = {}


async def initialised_data_dir(directory: Path, domain: str = "releves.localhost") -> Config:
    """What ``initialise_data_dir(directory, domain, SystemClock())`` makes, keys and modes
    (0700 folders, 0600 secrets) included; ``directory`` must not hold a config yet."""
    template = _templates.get(domain)
    if template is None:
        root = Path(tempfile.mkdtemp(prefix="releves-datadir-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        template = root / "data"
        await initialise_data_dir(template, domain, SystemClock())
        _templates[domain] = template
    if (directory / CONFIG_FILE_NAME).exists():
        raise FileExistsError(directory / CONFIG_FILE_NAME)
    shutil.copytree(template, directory, dirs_exist_ok=True)
    return load_config(directory / CONFIG_FILE_NAME)

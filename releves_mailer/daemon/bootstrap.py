"""Creation of a ready-to-run data directory: config, keys, certificates, migrated database."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from releves_mailer.clock import Clock
from releves_mailer.config import CONFIG_FILE_NAME, Config, load_config
from releves_mailer.db import Database
from releves_mailer.db.migrate import upgrade
from releves_mailer.errors import UserError
from releves_mailer.files import make_private_dir, write_atomically
from releves_mailer.resources import example_config_path
from releves_mailer.signing.certificates import write_signing_pair, write_tls_pair
from releves_mailer.signing.secrets import generate_key_file

__all__ = ["initialise_data_dir"]

_DOMAIN = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


async def initialise_data_dir(
    directory: Path, domain: str, clock: Clock, *, config_path: Path | None = None
) -> Config:
    """Write ``directory/releves-mailer.toml`` and everything it names; refuse to overwrite.

    ``config_path`` puts the config file elsewhere (``/etc``), naming ``directory`` as its
    absolute ``portal.data_dir``. The config file is renamed into place last, so that a
    failed run leaves no usable half-initialised directory behind.
    """
    config_path = config_path or directory / CONFIG_FILE_NAME
    staging, config = await asyncio.to_thread(_write_files, directory, domain, clock, config_path)
    database = Database(config.database_url)
    try:
        await upgrade(database)
    finally:
        await database.dispose()
    staging.replace(config_path)
    return load_config(config_path)


def _write_files(
    directory: Path, domain: str, clock: Clock, config_path: Path
) -> tuple[Path, Config]:
    """Staged config, keys and certificates (slow RSA key generation: run in a thread)."""
    if config_path.exists():
        raise UserError(f"{config_path} existe déjà : rien n'a été modifié")
    domain = domain.lower()
    if not _DOMAIN.fullmatch(domain):
        raise UserError(f"nom de domaine invalide « {domain} »")
    make_private_dir(directory)
    make_private_dir(config_path.parent)
    text = example_config_path().read_text(encoding="utf-8")
    text = text.replace('domain = "releves.localhost"', f'domain = "{domain}"', 1)
    if config_path.parent.resolve() != directory.resolve():
        # json.dumps quotes like a TOML basic string (backslashes and quotes escaped).
        absolute = json.dumps(str(directory.resolve()))
        text = text.replace('data_dir = "."', f"data_dir = {absolute}", 1)
    staging = config_path.with_name(config_path.name + ".tmp")
    write_atomically(staging, text.encode("utf-8"))
    config = load_config(staging)
    generated = (
        config.path(config.secrets.key_file),
        config.path(config.tls.key),
        config.path(config.tls.certificate),
        config.path(config.signing.key),
        config.path(config.signing.certificate),
    )
    for path in generated:
        if path.exists():
            staging.unlink()
            raise UserError(f"{path} existe déjà : rien n'a été modifié")
    generate_key_file(config.path(config.secrets.key_file))
    write_tls_pair(
        config.portal.domain,
        config.path(config.tls.key),
        config.path(config.tls.certificate),
        clock.now(),
    )
    write_signing_pair(
        f"portail@{config.portal.domain}",
        config.portal.name,
        config.path(config.signing.key),
        config.path(config.signing.certificate),
        clock.now(),
    )
    return staging, config

"""Creation of a ready-to-run data directory: config, keys, certificates, migrated database."""

from __future__ import annotations

import asyncio
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


async def initialise_data_dir(directory: Path, domain: str, clock: Clock) -> Config:
    """Write ``directory/releves-mailer.toml`` and everything it names; refuse to overwrite.

    The config file is renamed into place last, so that a failed run leaves no usable
    half-initialised directory behind.
    """
    staging, config = await asyncio.to_thread(_write_files, directory, domain, clock)
    database = Database(config.database_url)
    try:
        await upgrade(database)
    finally:
        await database.dispose()
    config_path = directory / CONFIG_FILE_NAME
    staging.replace(config_path)
    return load_config(config_path)


def _write_files(directory: Path, domain: str, clock: Clock) -> tuple[Path, Config]:
    """Staged config, keys and certificates (slow RSA key generation: run in a thread)."""
    config_path = directory / CONFIG_FILE_NAME
    if config_path.exists():
        raise UserError(f"{config_path} existe déjà : rien n'a été modifié")
    domain = domain.lower()
    if not _DOMAIN.fullmatch(domain):
        raise UserError(f"nom de domaine invalide « {domain} »")
    make_private_dir(directory)
    text = example_config_path().read_text(encoding="utf-8")
    text = text.replace('domain = "releves.localhost"', f'domain = "{domain}"', 1)
    staging = directory / (CONFIG_FILE_NAME + ".tmp")
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

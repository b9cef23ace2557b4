"""Taking a backup of a running installation and restoring one into a new folder.

A backup snapshots the database first, then copies the message files that snapshot points
at: message files are content-addressed and never rewritten, and a file is fsynced before
the row naming it commits, so every file the snapshot needs is on disk (the sweep only
removes files no row names). Each copied file is checked against its name (its SHA-256).

A restore extracts into a staging folder beside the target, checking every member against
the manifest, loads the database, checks its counts against the manifest, and renames the
folder into place: a refused or failed restore leaves no half-built installation.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import shutil
import tempfile
import tomllib
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from releves_mailer.backup.archive import (
    KEY_MEMBERS,
    ArchiveReader,
    ArchiveWriter,
    BackupFormatError,
    is_allowed_member,
    write_mode,
)
from releves_mailer.backup.configfile import blank_secrets, set_values
from releves_mailer.backup.snapshot import (
    Census,
    database_kind,
    load_postgres,
    postgres_snapshot,
    sqlite_census,
    sqlite_snapshot,
)
from releves_mailer.clock import Clock
from releves_mailer.config import CONFIG_FILE_NAME, Config, parse_config
from releves_mailer.errors import UserError
from releves_mailer.files import make_private_dir

__all__ = ["BackupReport", "RestoreReport", "restore", "take_backup"]

#: Longest a ``pg_dump`` or ``psql`` run may take.
TOOL_TIMEOUT = 6 * 3600.0
_OUTBOX_FILE = re.compile(r"[0-9]{1,20}\.eml")
#: Where each file goes in a restored data directory, as the restored config names it.
_RESTORED_PATHS = {
    ("secrets", "key_file"): "keys/secrets.key",
    ("signing", "key"): "signing/portal-key.pem",
    ("signing", "certificate"): "signing/portal-cert.pem",
    ("tls", "key"): "tls/key.pem",
    ("tls", "certificate"): "tls/cert.pem",
}


@dataclass(frozen=True, slots=True)
class BackupReport:
    path: Path
    database: str
    counts: dict[str, int]
    with_keys: bool
    size: int


@dataclass(frozen=True, slots=True)
class RestoreReport:
    data_dir: Path
    config_path: Path
    database: str
    counts: dict[str, int]
    #: Key files to put back before starting the daemon: (path, what it is).
    missing_keys: list[tuple[Path, str]] = field(default_factory=list)
    #: Config keys whose secret value was left out of the backup.
    missing_secrets: list[str] = field(default_factory=list)


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


def _software_version() -> str:
    try:
        return version("releves-mailer")
    except PackageNotFoundError:
        return "inconnue"


def _fill(writer: ArchiveWriter, config: Config, census: Census, with_keys: bool) -> list[str]:
    """Add every file but the database and the manifest; returns the config keys blanked."""
    messages = config.data_dir / "messages"
    for blob in census.blobs:
        path = messages / blob[:2] / blob[2:]
        if not path.is_file():
            raise UserError(
                f"{path} : fichier de message absent alors que la base y renvoie "
                "(supprimé pendant la sauvegarde ? relancez-la)"
            )
        writer.add_file(f"messages/{blob[:2]}/{blob[2:]}", path, sha256=blob)
    outbox = config.data_dir / "outbox"
    if outbox.is_dir():
        for path in sorted(outbox.iterdir()):
            if _OUTBOX_FILE.fullmatch(path.name) and path.is_file():
                writer.add_file(f"outbox/{path.name}", path)
    if config.templates.custom_dir is not None:
        root = config.path(config.templates.custom_dir)
        for path in sorted(root.rglob("*")):
            name = f"templates/{path.relative_to(root).as_posix()}"
            if path.is_file() and is_allowed_member(name):
                writer.add_file(name, path)
    for (section, key), name in _RESTORED_PATHS.items():
        path = config.path(getattr(getattr(config, section), key))
        if name in KEY_MEMBERS and not with_keys:
            continue
        if path.is_file():
            writer.add_file(name, path)
        elif name in KEY_MEMBERS:
            raise UserError(f"{path} : fichier de clé introuvable (clé « {section}.{key} »)")
    assert config.source is not None
    text = config.source.read_text(encoding="utf-8")
    where = str(config.source)
    if with_keys:
        # The database URL is given again at restore time; it may hold a password.
        text = set_values(text, {("database", "url"): ""}, where=where)
        blanked: list[str] = []
    else:
        text, blanked = blank_secrets(text, where=where)
    writer.add_bytes(CONFIG_FILE_NAME, text.encode("utf-8"))
    return [key for key in blanked if key != "database.url"]


async def take_backup(
    config: Config, out: Path, *, with_keys: bool, clock: Clock, time_limit: float = TOOL_TIMEOUT
) -> BackupReport:
    """Write a backup of the installation of ``config`` to ``out`` (replaced whole)."""
    out = _absolute(out)
    write_mode(out)
    if not out.parent.is_dir():
        raise UserError(f"{out.parent} : dossier introuvable")
    if config.source is None:
        raise UserError("la sauvegarde a besoin du fichier de configuration (--config)")
    kind = database_kind(config.database_url)
    now = clock.now()
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        writer = await asyncio.to_thread(ArchiveWriter, out, now.timestamp())
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    try:
        if kind == "sqlite":
            dump = work / "releves.sqlite3"
            census = await asyncio.to_thread(sqlite_snapshot, config.database_url, dump)
        else:
            dump = work / "postgresql.sql"
            census = await postgres_snapshot(config.database_url, dump, time_limit)
        await asyncio.to_thread(writer.add_file, dump.name, dump)
        dump.unlink()
        blanked = await asyncio.to_thread(_fill, writer, config, census, with_keys)
        manifest: dict[str, Any] = {
            "created_at": now.astimezone(dt.UTC).isoformat(),
            "software_version": _software_version(),
            "database": kind,
            "schema_revisions": census.revisions,
            "counts": census.counts,
            "keys_included": with_keys,
            "secrets_removed": blanked,
            "templates": config.templates.custom_dir is not None,
        }
        await asyncio.to_thread(writer.finish, manifest)
    except BaseException:
        await asyncio.to_thread(writer.abort)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BackupReport(out, kind, census.counts, with_keys, out.stat().st_size)


def _check_target(data_dir: Path) -> None:
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise UserError(
            f"{data_dir} n'est pas un dossier vide : restaurez dans un dossier neuf ou vide"
        )


def _database_target(manifest: dict[str, Any], database_url: str | None) -> str:
    kind = manifest.get("database")
    if kind not in ("sqlite", "postgresql"):
        raise BackupFormatError(f"type de base inconnu dans le manifeste : {kind!r}")
    if kind == "postgresql":
        if not database_url:
            raise UserError(
                "cette sauvegarde vient de PostgreSQL : donnez la base cible (vide) "
                "avec --database-url"
            )
        if database_kind(database_url) != "postgresql":
            raise UserError("--database-url doit désigner une base PostgreSQL")
    elif database_url:
        raise UserError(
            "cette sauvegarde vient de SQLite : elle se restaure en SQLite, sans --database-url"
        )
    return str(kind)


def _extract_all(reader: ArchiveReader, staging: Path) -> None:
    for name in reader.names:
        target = staging / (".backup.toml" if name == CONFIG_FILE_NAME else name)
        reader.extract(name, target)


def _write_config(staging: Path, manifest: dict[str, Any], database_url: str | None) -> Path:
    original = staging / ".backup.toml"
    values = {("portal", "data_dir"): ".", ("database", "url"): database_url or ""}
    values |= _RESTORED_PATHS
    if manifest.get("templates"):
        make_private_dir(staging / "templates")
        values[("templates", "custom_dir")] = "templates"
    text = set_values(original.read_text(encoding="utf-8"), values, where=CONFIG_FILE_NAME)
    path = staging / CONFIG_FILE_NAME
    parse_config(tomllib.loads(text), file=path, environ={})
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    original.unlink()
    return path


def _check_census(census: Census, manifest: dict[str, Any], staging: Path) -> None:
    expected = manifest.get("counts")
    if census.counts != expected:
        raise BackupFormatError(
            f"la base restaurée ne correspond pas au manifeste ({census.counts} au lieu de "
            f"{expected})"
        )
    for blob in census.blobs:
        if not (staging / "messages" / blob[:2] / blob[2:]).is_file():
            raise BackupFormatError(f"fichier de message manquant dans la sauvegarde : {blob}")


async def restore(
    file: Path, data_dir: Path, *, database_url: str | None = None, time_limit: float = TOOL_TIMEOUT
) -> RestoreReport:
    """Rebuild an installation from the backup ``file`` in the new or empty ``data_dir``."""
    data_dir = _absolute(data_dir)
    _check_target(data_dir)
    reader = await asyncio.to_thread(ArchiveReader, file)
    try:
        manifest = reader.manifest
        kind = _database_target(manifest, database_url)
        staging = data_dir.with_name(f".{data_dir.name}.restauration-{os.getpid()}")
        if staging.exists():
            raise UserError(f"{staging} existe déjà (restauration en cours ?)")
        make_private_dir(staging)
        try:
            await asyncio.to_thread(_extract_all, reader, staging)
            config_path = _write_config(staging, manifest, database_url)
            if kind == "sqlite":
                census = await asyncio.to_thread(sqlite_census, staging / "releves.sqlite3")
            else:
                assert database_url is not None
                dump = staging / "postgresql.sql"
                census = await load_postgres(database_url, dump, time_limit)
                dump.unlink()
            _check_census(census, manifest, staging)
            _check_target(data_dir)
            if data_dir.exists():
                data_dir.rmdir()
            staging.replace(data_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    finally:
        reader.close()
    missing = [
        (data_dir / name, what) for name, what in KEY_MEMBERS.items() if name not in reader.names
    ]
    return RestoreReport(
        data_dir,
        data_dir / config_path.name,
        kind,
        census.counts,
        missing,
        list(manifest.get("secrets_removed", [])),
    )

"""The backup file and its refusals: manifest, hashes, keys only on request, secrets out of
the config, corrupt or truncated files and non-empty folders refused with nothing written."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from releves_mailer.backup import restore, take_backup
from releves_mailer.clock import ManualClock, SystemClock
from releves_mailer.config import Config, load_config
from releves_mailer.db import Database
from releves_mailer.errors import UserError
from releves_mailer.mailbox.store import MessageStore
from tests.backup.installation import (
    KEY_MARKERS,
    archive_members,
    key_fragments,
    names_in,
    rewrite_member,
    stored_messages,
)
from tests.commands import run_command
from tests.datadirs import initialised_data_dir

MOMENT = dt.datetime(2026, 3, 14, 9, 30, tzinfo=dt.UTC)


def mail(number: int) -> bytes:
    return (
        f"From: portail@releves.localhost\r\nTo: demo@releves.localhost\r\n"
        f"Subject: Relevé {number}\r\nMessage-ID: <m{number}@test>\r\n"
        f"Date: Sat, 14 Mar 2026 10:00:00 +0100\r\n\r\nCorps {number}\r\n"
    ).encode()


@pytest.fixture
async def installation(tmp_path: Path) -> Config:
    """A data directory with three messages in two boxes and one mail filed in the outbox."""
    config = await initialised_data_dir(tmp_path / "data")
    database = Database(config.database_url)
    store = MessageStore(database, config.data_dir / "messages", SystemClock())
    try:
        for number, box in ((1, "demo@releves.localhost"), (2, "demo@releves.localhost")):
            await store.deliver(box, mail(number), f"<m{number}@test>")
        await store.deliver("autre@releves.localhost", mail(3), "<m3@test>", folder="Archives")
    finally:
        await store.close()
        await database.dispose()
    (config.data_dir / "outbox").mkdir(mode=0o700)
    (config.data_dir / "outbox" / "00000001.eml").write_bytes(mail(4))
    return config


async def test_round_trip_with_keys_gives_the_same_installation(
    installation: Config, tmp_path: Path
) -> None:
    out = tmp_path / "sauvegarde.tar.xz"
    report = await take_backup(installation, out, with_keys=True, clock=ManualClock(MOMENT))
    assert report.counts["messages"] == 3 and report.counts["message_files"] == 3
    assert out.stat().st_mode & 0o777 == 0o600
    assert [n for n in names_in(tmp_path) if n.startswith(".")] == []

    members = archive_members(out)
    manifest = json.loads(members.pop("manifest.json"))
    assert manifest["format"] == "releves-mailer-backup" and manifest["version"] == 1
    assert manifest["created_at"] == MOMENT.isoformat()
    assert manifest["database"] == "sqlite" and manifest["keys_included"] is True
    assert manifest["counts"]["messages"] == 3
    assert set(manifest["members"]) == set(members)
    for name, data in members.items():
        assert manifest["members"][name]["sha256"] == hashlib.sha256(data).hexdigest()

    restored = await restore(out, tmp_path / "neuf")
    assert restored.missing_keys == [] and restored.counts == report.counts
    config = load_config(restored.config_path)
    assert config.data_dir == (tmp_path / "neuf").resolve()
    assert await stored_messages(config) == await stored_messages(installation)
    for key in ("secrets", "signing", "tls"):
        section = getattr(installation, key)
        for attribute in ("key_file", "key", "certificate"):
            if hasattr(section, attribute):
                path = getattr(section, attribute)
                assert config.path(getattr(getattr(config, key), attribute)).read_bytes() == (
                    installation.path(path).read_bytes()
                )
    assert (config.data_dir / "outbox" / "00000001.eml").read_bytes() == mail(4)
    assert (config.data_dir / "releves-mailer.toml").stat().st_mode & 0o777 == 0o600


async def test_without_keys_no_key_material_and_no_config_secret(
    installation: Config, tmp_path: Path
) -> None:
    assert installation.source is not None
    text = installation.source.read_text(encoding="utf-8")
    text = text.replace('password = ""', 'password = "relais-tres-secret"', 1)
    installation.source.write_text(text, encoding="utf-8")
    assert load_config(installation.source).relay.password.get_secret_value()
    out = tmp_path / "sans-cles.tar.gz"
    result = run_command(installation, "backup", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "Clés non incluses" in result.stdout

    members = archive_members(out)
    fragments = key_fragments(installation)
    for name, data in members.items():
        for marker in (*KEY_MARKERS, *fragments, b"relais-tres-secret"):
            assert marker not in data, f"{marker!r} in member {name}"
    assert json.loads(members["manifest.json"])["secrets_removed"] == ["relay.password"]

    result = run_command(installation, "restore", str(out), "--data", str(tmp_path / "neuf"))
    assert result.returncode == 0, result.stderr
    assert "relay.password" in result.stdout
    for path in ("keys/secrets.key", "signing/portal-key.pem", "tls/key.pem"):
        assert str(tmp_path / "neuf" / path) in result.stdout
    config = load_config(tmp_path / "neuf" / "releves-mailer.toml")
    assert config.relay.password.get_secret_value() == ""
    assert await stored_messages(config) == await stored_messages(installation)


async def test_corrupt_member_is_refused_by_name_and_nothing_is_written(
    installation: Config, tmp_path: Path
) -> None:
    good = tmp_path / "bonne.tar"
    await take_backup(installation, good, with_keys=False, clock=SystemClock())
    name = next(n for n in archive_members(good) if n.startswith("messages/"))
    bad = tmp_path / "abimee.tar.gz"
    rewrite_member(good, bad, name, b"X" * len(archive_members(good)[name]))
    target = tmp_path / "neuf"
    result = run_command(installation, "restore", str(bad), "--data", str(target))
    assert result.returncode != 0
    assert name in result.stderr and "corrompu" in result.stderr
    assert not target.exists()
    assert not [n for n in names_in(tmp_path) if "restauration" in n]


async def test_truncated_file_is_refused(installation: Config, tmp_path: Path) -> None:
    good = tmp_path / "bonne.tar"
    await take_backup(installation, good, with_keys=False, clock=SystemClock())
    with tarfile.open(good) as tar:
        manifest_at = tar.getmember("manifest.json").offset_data
    # Cut in the first header, in the middle, in the manifest (the last member); the
    # padding after it is not data.
    for cut in (100, len(good.read_bytes()) // 2, manifest_at + 10):
        bad = tmp_path / f"coupee-{cut}.tar"
        bad.write_bytes(good.read_bytes()[:cut])
        with pytest.raises(UserError) as refused:
            await restore(bad, tmp_path / "neuf")
        assert str(bad) in refused.value.message
        assert any(word in refused.value.message for word in ("tronquée", "absent", "manifeste")), (
            refused.value.message
        )
        assert not (tmp_path / "neuf").exists()


async def test_member_missing_from_manifest_or_archive_is_named(
    installation: Config, tmp_path: Path
) -> None:
    good = tmp_path / "bonne.tar"
    await take_backup(installation, good, with_keys=False, clock=SystemClock())
    manifest = json.loads(archive_members(good)["manifest.json"])
    manifest["members"]["outbox/00000099.eml"] = {"size": 1, "sha256": "0" * 64}
    bad = tmp_path / "manque.tar.gz"
    rewrite_member(good, bad, "manifest.json", json.dumps(manifest).encode())
    with pytest.raises(UserError, match=r"outbox/00000099\.eml.*absent"):
        await restore(bad, tmp_path / "neuf")


async def test_non_empty_folder_and_wrong_database_are_refused(
    installation: Config, tmp_path: Path
) -> None:
    out = tmp_path / "s.tar"
    await take_backup(installation, out, with_keys=False, clock=SystemClock())
    busy = tmp_path / "occupe"
    busy.mkdir()
    (busy / "fichier").write_text("déjà là")
    result = run_command(installation, "restore", str(out), "--data", str(busy))
    assert result.returncode != 0
    assert "n'est pas un dossier vide" in result.stderr
    assert [p.name for p in busy.iterdir()] == ["fichier"]
    with pytest.raises(UserError, match="sans --database-url"):
        await restore(out, tmp_path / "neuf", database_url="postgresql+asyncpg://x@h/db")
    # An empty folder is fine.
    (tmp_path / "vide").mkdir()
    assert (await restore(out, tmp_path / "vide")).counts["messages"] == 3


async def test_failed_backup_leaves_no_file(installation: Config, tmp_path: Path) -> None:
    out = tmp_path / "s.tar.gz"
    with pytest.raises(UserError, match="extension inconnue"):
        await take_backup(installation, tmp_path / "s.zip", with_keys=False, clock=SystemClock())
    blob = next((installation.data_dir / "messages").glob("??/*"))
    blob.unlink()
    result = run_command(installation, "backup", "--out", str(out))
    assert result.returncode != 0
    assert str(blob) in result.stderr and "absent" in result.stderr
    assert names_in(tmp_path) == ["data"]


def test_help_says_the_file_is_as_secret_as_the_keys(installation: Config) -> None:
    result = run_command(installation, "backup", "--help")
    assert result.returncode == 0
    assert "aussi secret que les" in " ".join(result.stdout.split())


async def test_backup_is_readable_as_a_plain_tar(installation: Config, tmp_path: Path) -> None:
    out = tmp_path / "s.tgz"
    await take_backup(installation, out, with_keys=False, clock=SystemClock())
    with tarfile.open(out, "r:gz") as tar:
        names = tar.getnames()
    assert names[-1] == "manifest.json" and "releves.sqlite3" in names

"""What a backup test compares between an installation and its restored copy."""

from __future__ import annotations

import hashlib
import imaplib
import io
import json
import re
import tarfile
from pathlib import Path

from sqlalchemy import select

from releves_mailer.clock import SystemClock
from releves_mailer.config import Config
from releves_mailer.db import Database
from releves_mailer.db.models import MailFolder, MailMessage
from releves_mailer.mailbox.store import MessageStore
from tests.commands import run_command_async

__all__ = [
    "KEY_MARKERS",
    "archive_members",
    "imap_messages",
    "key_fragments",
    "names_in",
    "rewrite_member",
    "statements_json",
    "stored_messages",
]

#: Bytes that only key material holds (PEM private keys).
KEY_MARKERS = (b"PRIVATE KEY",)
_FETCHED = re.compile(rb"UID (\d+)")

Message = tuple[str, str, int, str]


async def statements_json(config: Config) -> list[dict[str, object]]:
    result = await run_command_async(config, "statements", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, object]] = json.loads(result.stdout)
    return rows


async def stored_messages(config: Config) -> list[Message]:
    """(owner, folder, uid, sha256 of the bytes read from the store) of every message."""
    database = Database(config.database_url)
    store = MessageStore(database, config.data_dir / "messages", SystemClock())
    try:
        async with database.session() as session:
            rows = (
                await session.execute(
                    select(MailFolder.owner, MailFolder.name, MailMessage.uid, MailMessage.blob)
                    .join(MailFolder, MailFolder.id == MailMessage.folder_id)
                    .order_by(MailFolder.owner, MailFolder.name, MailMessage.uid)
                )
            ).all()
        out = []
        for owner, folder, uid, blob in rows:
            raw = await store.read_blob(blob)
            out.append((owner, folder, uid, hashlib.sha256(raw).hexdigest()))
        return out
    finally:
        await store.close()
        await database.dispose()


def imap_messages(
    port: int, logins: dict[str, str], password: str, folders: dict[str, set[str]]
) -> list[Message]:
    """The same, read over IMAP: ``folders[owner]`` through the login ``logins[owner]``."""
    out = []
    for owner, login in sorted(logins.items()):
        client = imaplib.IMAP4("127.0.0.1", port)
        try:
            client.login(login, password)
            for folder in sorted(folders[owner]):
                status, _ = client.select(f'"{folder}"', readonly=True)
                assert status == "OK", (owner, folder)
                _, data = client.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
                for part in data:
                    if isinstance(part, tuple):
                        match = _FETCHED.search(part[0])
                        assert match is not None, part[0]
                        digest = hashlib.sha256(part[1]).hexdigest()
                        out.append((owner, folder, int(match[1]), digest))
        finally:
            client.logout()
    return sorted(out)


def archive_members(path: Path) -> dict[str, bytes]:
    """Every member of a backup file, by name, with its bytes."""
    with tarfile.open(path, "r:*") as tar:
        members = {}
        for info in tar.getmembers():
            handle = tar.extractfile(info)
            members[info.name] = handle.read() if handle else b""
    return members


def rewrite_member(source: Path, target: Path, name: str, data: bytes) -> None:
    """Copy the tar ``source`` to ``target`` with member ``name`` holding ``data``."""
    with tarfile.open(source, "r:*") as tar, tarfile.open(target, "w:gz") as out:
        for info in tar.getmembers():
            handle = tar.extractfile(info)
            content = handle.read() if handle else b""
            if info.name == name:
                content = data
                info.size = len(data)
            out.addfile(info, io.BytesIO(content))


def key_fragments(config: Config) -> list[bytes]:
    """Pieces of the installation's secret keys: the key ring's keys, the private keys'
    base64 lines; a file holding none of them holds no key."""
    ring = config.path(config.secrets.key_file).read_bytes().splitlines()
    fragments = [line.strip() for line in ring if line.strip() and not line.startswith(b"#")]
    for path in (config.path(config.signing.key), config.path(config.tls.key)):
        lines = path.read_bytes().splitlines()
        fragments += [line for line in lines if line and not line.startswith(b"-----")][:3]
    assert fragments
    return fragments


def names_in(folder: Path) -> list[str]:
    """The sorted names in ``folder`` (hidden ones too)."""
    return sorted(path.name for path in folder.iterdir())

"""The backup file: a tar (plain, gzip or xz) whose last member is a manifest of hashes.

Members are named by where they go in a restored data directory (``releves.sqlite3``,
``messages/ab/cdef...``, ``keys/secrets.key``...), so restoring is extracting. The manifest
(``manifest.json``) gives the format version, the date, the database kind, counts, and the
size and SHA-256 of every other member; a reader refuses an archive whose members do not
match it, naming the member. The file is written under a temporary name beside its target
(mode 0600) and renamed once complete: a failed or interrupted backup leaves no file that
looks like a backup.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import re
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any, BinaryIO

from releves_mailer.errors import UserError
from releves_mailer.files import PRIVATE_FILE, make_private_dir

__all__ = [
    "FORMAT",
    "KEY_MEMBERS",
    "MANIFEST",
    "VERSION",
    "ArchiveReader",
    "ArchiveWriter",
    "BackupFormatError",
    "is_allowed_member",
]

FORMAT = "releves-mailer-backup"
VERSION = 1
MANIFEST = "manifest.json"
#: Secret key files, by member name, with what they are for (French: restore names them).
KEY_MEMBERS = {
    "keys/secrets.key": "clé de chiffrement des jetons bancaires (secrets.key_file)",
    "signing/portal-key.pem": "clé privée de signature S/MIME (signing.key)",
    "tls/key.pem": "clé privée TLS (tls.key)",
}
#: Limits on a file being restored, which may come from anywhere.
MAX_MEMBERS = 5_000_000
MAX_MANIFEST_BYTES = 1024 * 1024 * 1024
_COPY_CHUNK = 1024 * 1024

_MEMBER = re.compile(
    r"releves-mailer\.toml|releves\.sqlite3|postgresql\.sql"
    r"|keys/secrets\.key|signing/portal-(?:key|cert)\.pem|tls/(?:key|cert)\.pem"
    r"|messages/[0-9a-f]{2}/[0-9a-f]{62}|outbox/[0-9]{1,20}\.eml"
    r"|templates/(?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}/){0,8}[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}"
)
_WRITE_MODES = {".tar": "w", ".tar.gz": "w:gz", ".tgz": "w:gz", ".tar.xz": "w:xz", ".txz": "w:xz"}
_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError)


class BackupFormatError(UserError):
    """The file is not a usable backup: unreadable, truncated, or not what its manifest says."""


def is_allowed_member(name: str) -> bool:
    """Whether ``name`` is a member this format writes (and the only ones a restore writes)."""
    return _MEMBER.fullmatch(name) is not None and ".." not in name.split("/")


def write_mode(out: Path) -> str:
    """The tarfile mode for the name of ``out``: its extension says the compression."""
    name = out.name.lower()
    for suffix, mode in _WRITE_MODES.items():
        if name.endswith(suffix):
            return mode
    raise UserError(
        f"{out} : extension inconnue, utilisez .tar, .tar.gz (ou .tgz) ou .tar.xz (ou .txz)"
    )


class _Hashing:
    """A reader that hashes what goes through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data


class ArchiveWriter:
    """Adds members one by one, recording their hashes; :meth:`finish` seals the file."""

    def __init__(self, out: Path, mtime: float) -> None:
        self.out = out
        self.mtime = int(mtime)
        self.members: dict[str, dict[str, Any]] = {}
        self._temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        mode = write_mode(out)
        descriptor = os.open(
            self._temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, PRIVATE_FILE
        )
        os.fchmod(descriptor, PRIVATE_FILE)  # a leftover of a crashed run keeps its mode
        self._file: BinaryIO = os.fdopen(descriptor, "wb")
        try:
            # Held open across add_file calls and closed by finish or abort.
            self._tar = tarfile.open(fileobj=self._file, mode=mode)  # type: ignore[call-overload]  # noqa: SIM115
        except BaseException:
            self._file.close()
            self._temporary.unlink(missing_ok=True)
            raise

    def _info(self, name: str, size: int) -> tarfile.TarInfo:
        if not is_allowed_member(name) or name in self.members:
            raise ValueError(f"unexpected member name {name!r}")
        info = tarfile.TarInfo(name)
        info.size = size
        info.mode = PRIVATE_FILE
        info.mtime = self.mtime
        return info

    def add_file(self, name: str, path: Path, *, sha256: str | None = None) -> None:
        """Add the file at ``path``; ``sha256``, when given, is what its bytes must hash to
        (a content-addressed message file), else the copy is refused."""
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            reader = _Hashing(handle)
            self._tar.addfile(self._info(name, size), reader)
        digest = reader.digest.hexdigest()
        if sha256 is not None and digest != sha256:
            raise UserError(
                f"{path} : le contenu ne correspond plus à son empreinte (fichier abîmé) ; "
                "sauvegarde abandonnée"
            )
        self.members[name] = {"size": size, "sha256": digest}

    def add_bytes(self, name: str, data: bytes) -> None:
        self._tar.addfile(self._info(name, len(data)), io.BytesIO(data))
        self.members[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    def finish(self, manifest: dict[str, Any]) -> None:
        """Write the manifest (with every member's hash), flush to disk, rename into place."""
        document = {"format": FORMAT, "version": VERSION, **manifest, "members": self.members}
        data = json.dumps(document, ensure_ascii=False, indent=1, sort_keys=True).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mode, info.mtime = len(data), PRIVATE_FILE, self.mtime
        self._tar.addfile(info, io.BytesIO(data))
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._temporary, self.out)
        directory = os.open(self.out.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def abort(self) -> None:
        with suppress(Exception):
            self._tar.close()
        with suppress(Exception):
            self._file.close()
        self._temporary.unlink(missing_ok=True)


@contextmanager
def _readable(path: Path) -> Iterator[None]:
    try:
        yield
    except BackupFormatError:
        raise
    except _READ_ERRORS as error:
        detail = " ".join(str(error).split())[:200]
        raise BackupFormatError(
            f"{path} : archive illisible ou tronquée ({type(error).__name__}: {detail})"
        ) from None


class ArchiveReader:
    """An opened backup file whose manifest agrees with its list of members.

    Opening reads every member header (a truncated file fails here, naming the first member
    missing); :meth:`extract` checks each member's bytes against the manifest.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise UserError(f"{path} : fichier de sauvegarde introuvable")
        try:
            self._tar = tarfile.open(path, "r:*")  # noqa: SIM115 (closed by close())
        except tarfile.ReadError:
            raise BackupFormatError(
                f"{path} : ce n'est pas une archive tar lisible (.tar, .tar.gz ou .tar.xz), "
                "ou elle est tronquée dès le début"
            ) from None
        except OSError as error:
            raise UserError(f"{path} : lecture impossible ({error.strerror})") from None
        try:
            self.manifest = self._check()
        except BaseException:
            self._tar.close()
            raise

    def close(self) -> None:
        self._tar.close()

    def _check(self) -> dict[str, Any]:
        members: dict[str, tarfile.TarInfo] = {}
        with _readable(self.path):
            for info in self._tar:
                if len(members) >= MAX_MEMBERS:
                    raise BackupFormatError(f"{self.path} : plus de {MAX_MEMBERS} membres")
                members[info.name] = info
        self._members = members
        manifest_info: tarfile.TarInfo | None = members.get(MANIFEST)
        if manifest_info is None:
            raise BackupFormatError(
                f"{self.path} : pas de manifeste ({MANIFEST}) : archive tronquée "
                "ou qui n'est pas une sauvegarde releves-mailer"
            )
        if manifest_info.size > MAX_MANIFEST_BYTES or not manifest_info.isfile():
            raise BackupFormatError(f"{self.path} : manifeste ({MANIFEST}) invalide")
        with _readable(self.path):
            handle = self._tar.extractfile(manifest_info)
            assert handle is not None
            data = handle.read()
        try:
            manifest = json.loads(data)
        except ValueError:
            raise BackupFormatError(f"{self.path} : manifeste ({MANIFEST}) illisible") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise BackupFormatError(f"{self.path} : ce n'est pas une sauvegarde releves-mailer")
        if manifest.get("version") != VERSION:
            raise BackupFormatError(
                f"{self.path} : version de sauvegarde {manifest.get('version')!r} "
                f"non prise en charge (attendu {VERSION})"
            )
        listed = manifest.get("members")
        if not isinstance(listed, dict):
            raise BackupFormatError(f"{self.path} : manifeste sans liste de membres")
        for name, entry in listed.items():
            if not is_allowed_member(name):
                raise BackupFormatError(f"{self.path} : membre interdit « {name} »")
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("size"), int)
                or not isinstance(entry.get("sha256"), str)
            ):
                raise BackupFormatError(f"{self.path} : manifeste invalide pour « {name} »")
            member = members.get(name)
            if member is None:
                raise BackupFormatError(
                    f"{self.path} : membre « {name} » absent de l'archive (archive tronquée ?)"
                )
            if not member.isfile() or member.size != entry["size"]:
                raise BackupFormatError(
                    f"{self.path} : membre « {name} » de taille {member.size} au lieu de "
                    f"{entry['size']} (archive abîmée)"
                )
        extra = sorted(set(members) - set(listed) - {MANIFEST})
        if extra:
            raise BackupFormatError(f"{self.path} : membre « {extra[0]} » absent du manifeste")
        return manifest

    @property
    def names(self) -> list[str]:
        return list(self.manifest["members"])

    def extract(self, name: str, target: Path) -> None:
        """Write member ``name`` to ``target`` (0600), refusing it if its hash differs."""
        entry = self.manifest["members"][name]
        make_private_dir(target.parent)
        with _readable(self.path):
            source = self._tar.extractfile(self._members[name])
            assert source is not None
            digest = hashlib.sha256()
            descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
            with os.fdopen(descriptor, "wb") as out:
                while chunk := source.read(_COPY_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        named = name[len("messages/") :].replace("/", "") if name.startswith("messages/") else None
        if digest.hexdigest() != entry["sha256"] or named not in (None, entry["sha256"]):
            raise BackupFormatError(
                f"{self.path} : membre « {name} » corrompu (empreinte SHA-256 différente "
                "de celle du manifeste)"
            )

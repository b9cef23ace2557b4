"""Encryption at rest of aggregator tokens with a rotating key ring (Fernet).

The key file holds one Fernet key per line, newest first; lines starting with ``#`` are
comments. New data is encrypted with the first key; any key of the file decrypts. Rotation
prepends a fresh key, and :meth:`KeyRing.rotate` re-encrypts a stored value with it, so old
keys can be dropped once every value has been rewritten.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from releves_mailer.signing.keyfiles import create_key_file, replace_key_file

__all__ = ["KeyRing", "KeyRingError", "add_key", "generate_key_file"]

_HEADER = (
    "# releves-mailer: keys encrypting the aggregators' tokens at rest.\n"
    "# Newest first. Never share this file; losing it loses the stored bank connections.\n"
)


class KeyRingError(Exception):
    """The key file is missing, unreadable, or a value cannot be decrypted with it."""


class KeyRing:
    """Encrypts with the newest key, decrypts with any."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise KeyRingError("aucune clé de chiffrement")
        try:
            self._fernets = [Fernet(key) for key in keys]
        except ValueError:
            raise KeyRingError("clé de chiffrement mal formée") from None
        self._multi = MultiFernet(self._fernets)

    @classmethod
    def from_file(cls, path: Path) -> KeyRing:
        try:
            text = path.read_text(encoding="ascii")
        except FileNotFoundError:
            raise KeyRingError(f"{path} : fichier de clés introuvable") from None
        except (OSError, UnicodeDecodeError) as error:
            raise KeyRingError(f"{path} : lecture impossible ({error})") from None
        keys = [
            line.strip().encode()
            for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        try:
            return cls(keys)
        except KeyRingError as error:
            raise KeyRingError(f"{path} : {error}") from None

    def encrypt(self, plaintext: str) -> bytes:
        return self._multi.encrypt(plaintext.encode("utf-8"))

    def decrypt(self, token: bytes) -> str:
        try:
            return self._multi.decrypt(token).decode("utf-8")
        except InvalidToken:
            raise KeyRingError("donnée chiffrée illisible avec les clés actuelles") from None

    def rotate(self, token: bytes) -> bytes:
        """Re-encrypt ``token`` with the newest key."""
        try:
            return self._multi.rotate(token)
        except InvalidToken:
            raise KeyRingError("donnée chiffrée illisible avec les clés actuelles") from None


def generate_key_file(path: Path) -> None:
    """Create ``path`` with one fresh key (mode 0600); refuse to overwrite."""
    if path.exists():
        raise KeyRingError(f"{path} existe déjà")
    create_key_file(path, (_HEADER + Fernet.generate_key().decode() + "\n").encode("ascii"))


def add_key(path: Path) -> None:
    """Prepend a fresh key to the ring: new data uses it, old data stays readable."""
    existing = path.read_text(encoding="ascii")
    body = "\n".join(line for line in existing.splitlines() if not line.startswith("#"))
    text = _HEADER + Fernet.generate_key().decode() + "\n" + body.strip() + "\n"
    replace_key_file(path, text.encode("ascii"))

"""Mailbox passwords: argon2 hashes, computed off the event loop."""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from releves_mailer.errors import UserError

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "check_password_strength",
    "hash_password",
    "use_password_hasher",
    "verify_password",
]

MIN_PASSWORD_LENGTH = 10


class _Hashing:
    """The hasher in use, and a hash of nothing made at the same cost.

    The hash of nothing is checked when a login is unknown, so that a wrong login costs as
    much time as a wrong password and does not reveal which logins exist.
    """

    def __init__(self, hasher: PasswordHasher, dummy_hash: str) -> None:
        self.hasher = hasher
        self.dummy_hash = dummy_hash


# The default hasher's hash of a random password, made once (hashing costs most of a second).
_HASHING = _Hashing(
    PasswordHasher(),
    "$argon2id$v=19$m=65536,t=3,p=4$GTrNd/7bt0vnHR3JajWZMA$"
    "WyB5L8ikVIGFkA/0uSbvOFgpxZKtDX+gt9V0Ni2/vS0",
)


def use_password_hasher(hasher: PasswordHasher) -> None:
    """Hash and verify with ``hasher`` from now on, unknown logins included.

    For the tests, which hash hundreds of passwords: argon2 with minimal costs is still
    argon2. The product never calls it and keeps argon2-cffi's defaults.
    """
    global _HASHING
    _HASHING = _Hashing(hasher, hasher.hash(secrets.token_urlsafe()))


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(
            f"mot de passe trop court : {MIN_PASSWORD_LENGTH} caractères au moins",
            field="password",
        )
    if password != password.strip():
        raise UserError(
            "le mot de passe ne doit pas commencer ni finir par un espace", field="password"
        )


async def hash_password(password: str) -> str:
    check_password_strength(password)
    return await asyncio.to_thread(_HASHING.hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``; ``None`` (an unknown login) costs a
    check too and is never a match."""
    hashing = _HASHING

    def verify() -> bool:
        try:
            hashing.hasher.verify(
                hashing.dummy_hash if password_hash is None else password_hash, password
            )
        except (VerificationError, InvalidHashError):
            return False
        return password_hash is not None

    return await asyncio.to_thread(verify)

"""Mailbox passwords: argon2 hashes, computed off the event loop."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from releves_mailer.errors import UserError

__all__ = ["MIN_PASSWORD_LENGTH", "check_password_strength", "hash_password", "verify_password"]

MIN_PASSWORD_LENGTH = 10
_HASHER = PasswordHasher()


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
    return await asyncio.to_thread(_HASHER.hash, password)


async def verify_password(password_hash: str, password: str) -> bool:
    def verify() -> bool:
        try:
            return _HASHER.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify)

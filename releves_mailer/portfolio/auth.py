"""Mailbox authentication over the portal accounts (the ``Authenticator`` contract)."""

from __future__ import annotations

from sqlalchemy import select

from releves_mailer.db import Database
from releves_mailer.db.models import PortalAccount
from releves_mailer.portfolio.passwords import verify_password
from releves_mailer.portfolio.validation import DEDICATED_PREFIX

__all__ = ["PortfolioAuthenticator", "split_address"]

# Checked when the login is unknown, so that a wrong login costs as much time as a wrong
# password and does not reveal which logins exist.
_DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$GTrNd/7bt0vnHR3JajWZMA$"
    "WyB5L8ikVIGFkA/0uSbvOFgpxZKtDX+gt9V0Ni2/vS0"
)


def split_address(username: str, domain: str) -> tuple[str, bool] | None:
    """``(login, dedicated)`` for a username or address of ``domain``, else ``None``.

    ``demo``, ``demo@domain`` open the account's box; ``releves.demo`` and
    ``releves.demo@domain`` its dedicated statement box.
    """
    name = username.strip().lower()
    if "@" in name:
        name, _, at_domain = name.rpartition("@")
        if at_domain != domain:
            return None
    dedicated = name.startswith(DEDICATED_PREFIX)
    login = name[len(DEDICATED_PREFIX) :] if dedicated else name
    return (login, dedicated) if login else None


class PortfolioAuthenticator:
    """Checks credentials against the accounts' argon2 hashes; the dedicated box shares them."""

    def __init__(self, database: Database, domain: str) -> None:
        self._database = database
        self._domain = domain

    def _address(self, login: str, dedicated: bool) -> str:
        return f"{DEDICATED_PREFIX if dedicated else ''}{login}@{self._domain}"

    async def authenticate(self, username: str, password: str) -> str | None:
        parts = split_address(username, self._domain)
        password_hash = None
        if parts is not None:
            async with self._database.session() as session:
                password_hash = await session.scalar(
                    select(PortalAccount.password_hash).where(PortalAccount.login == parts[0])
                )
        valid = await verify_password(password_hash or _DUMMY_HASH, password)
        if not valid or parts is None or password_hash is None:
            return None
        return self._address(*parts)

    async def is_local_address(self, address: str) -> bool:
        if "@" not in address:
            return False
        parts = split_address(address, self._domain)
        if parts is None:
            return False
        async with self._database.session() as session:
            found = await session.scalar(
                select(PortalAccount.id).where(PortalAccount.login == parts[0])
            )
        return found is not None

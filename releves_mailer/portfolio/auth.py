"""Mailbox authentication over the portal accounts, and the one login guard of every protocol.

:class:`PortfolioAuthenticator` checks credentials (the ``Authenticator`` contract);
:class:`PasswordGuard` limits guessing for IMAP, SMTP AUTH and the portal alike (the
``LoginGuard`` contract), so that no protocol is a softer door than another.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
from collections.abc import Awaitable, Callable, Collection
from typing import TypeVar

from sqlalchemy import select

from releves_mailer.clock import Clock
from releves_mailer.config import AuthSection
from releves_mailer.db import Database
from releves_mailer.db.models import PortalAccount
from releves_mailer.portfolio.boxes import box_address, split_address
from releves_mailer.portfolio.logins import LocalBox, LoginThrottled
from releves_mailer.portfolio.passwords import verify_password
from releves_mailer.portfolio.throttle import GuardStore, MemoryGuardStore

__all__ = [
    "PasswordGuard",
    "PortfolioAuthenticator",
    "address_key",
    "verified_account",
]

T = TypeVar("T")

#: Longest username looked up or remembered (an address is at most 320 characters).
MAX_USERNAME = 320


async def verified_account(database: Database, login: str, password: str) -> PortalAccount | None:
    """The active account of ``login`` when ``password`` is its password, else ``None``.

    An unknown login costs one hash too, so that timing does not tell which logins exist.
    """
    account = None
    if login and len(login) <= MAX_USERNAME:
        async with database.session() as session:
            account = await session.scalar(
                select(PortalAccount).where(PortalAccount.login == login)
            )
    valid = await verify_password(account.password_hash if account is not None else None, password)
    # A deactivated account costs the same check: its login is neither confirmed nor denied.
    if account is None or not account.active or not valid or not password:
        return None
    return account


class PortfolioAuthenticator:
    """Checks credentials against the accounts' argon2 hashes; the dedicated box shares them."""

    def __init__(self, database: Database, domain: str) -> None:
        self._database = database
        self._domain = domain

    async def authenticate(self, username: str, password: str) -> str | None:
        parts = split_address(username, self._domain)
        account = await verified_account(self._database, parts[0] if parts else "", password)
        if account is None or parts is None:
            return None
        return box_address(parts[0], self._domain, dedicated=parts[1])

    async def local_box(self, address: str) -> LocalBox | None:
        if "@" not in address or len(address) > MAX_USERNAME:
            return None
        parts = split_address(address, self._domain)
        if parts is None:
            return None
        async with self._database.session() as session:
            row = (
                await session.execute(
                    select(PortalAccount.id, PortalAccount.parent_id).where(
                        PortalAccount.login == parts[0]
                    )
                )
            ).first()
        if row is None:
            return None
        account_id, parent_id = row
        address = box_address(parts[0], self._domain, dedicated=parts[1])
        return LocalBox(address, parent_id or account_id, parts[1])

    async def credential_stamps(self, addresses: Collection[str]) -> dict[str, bytes]:
        logins: dict[str, list[str]] = {}
        for address in addresses:
            parts = split_address(address, self._domain) if len(address) <= MAX_USERNAME else None
            if parts is not None:
                logins.setdefault(parts[0], []).append(address)
        names = list(logins)
        rows: list[tuple[str, str]] = []
        async with self._database.session() as session:
            for start in range(0, len(names), 500):  # bound the statement's parameters
                result = await session.execute(
                    select(PortalAccount.login, PortalAccount.password_hash).where(
                        PortalAccount.login.in_(names[start : start + 500]),
                        PortalAccount.active.is_(True),
                    )
                )
                rows += [(login, password_hash) for login, password_hash in result]
        stamps: dict[str, bytes] = {}
        for login, password_hash in rows:
            # A digest of the hash: the session holds nothing a password could be checked on.
            stamp = hashlib.sha256(password_hash.encode()).digest()[:16]
            for address in logins.get(login, ()):
                stamps[address] = stamp
        return stamps


def address_key(peer: str) -> str:
    """The client address that limits count against: an IPv4 address, an IPv6 /64.

    One IPv6 client usually holds a whole /64, so counting single addresses would let it
    try its luck 2^64 times; an IPv4-mapped address counts as the IPv4 address.
    """
    try:
        ip = ipaddress.ip_address(peer.split("%")[0])
    except ValueError:
        return peer[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class PasswordGuard:
    """The one login guard (``LoginGuard`` contract) of IMAP, SMTP AUTH and the portal.

    Over a sliding window it counts failed logins, plus the attempts still being checked
    (so that parallel attempts cannot all slip under a limit):

    - per client address and login, and per client address: at the limit, attempts are
      refused at once, without checking the password (:class:`LoginThrottled`);
    - per login, from any address: past ``delay_after_failures`` failures, each attempt
      waits a delay that doubles with every further failure, up to ``max_delay_seconds``.
      A delay, never a lock: an attacker hammering a login from elsewhere slows its owner
      down but cannot shut him out.

    A success forgets the failures of that login (from that address and in all). Logins
    are counted by account, whatever the form (``demo``, ``releves.demo@domain``). The
    counts live in ``store``: in memory by default (a restart forgets them, which gives an
    attacker only a few more tries); the daemon keeps them in the database
    (:class:`~releves_mailer.portfolio.throttle.DatabaseGuardStore`), so that several
    daemons sharing it count the same attempts.
    """

    def __init__(
        self,
        clock: Clock,
        config: AuthSection,
        domain: str,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        store: GuardStore | None = None,
    ) -> None:
        self.config = config
        self._domain = domain
        self._sleep = sleep
        self._store = store or MemoryGuardStore(clock, config.window)

    def login_key(self, username: str) -> str:
        name = username[:MAX_USERNAME]
        parts = split_address(name, self._domain)
        return parts[0] if parts is not None else name.strip().lower()

    def _delay(self, failures: int) -> float:
        config = self.config
        extra = failures - config.delay_after_failures
        if extra < 0:
            return 0.0
        return float(
            min(config.first_delay_seconds * 2 ** min(extra, 32), config.max_delay_seconds)
        )

    def delay(self, username: str) -> float:
        """Seconds the next attempt on ``username`` waits (the in-memory store only)."""
        if not isinstance(self._store, MemoryGuardStore):
            raise TypeError("delay() reads the in-memory store; use next_delay()")
        return self._delay(self._store.count("login:" + self.login_key(username)))

    async def next_delay(self, username: str) -> float:
        """Seconds the next attempt on ``username`` waits before its password is checked."""
        return self._delay(await self._store.failures("login:" + self.login_key(username)))

    async def attempt(
        self, peer: str, username: str, verify: Callable[[], Awaitable[T | None]]
    ) -> T | None:
        login = self.login_key(username)
        address = "ip:" + address_key(peer)
        pair = f"{address} login:{login}"
        config = self.config
        # Checked and counted as pending in one step: parallel attempts see each other.
        ticket = await self._store.enter(
            (
                (pair, config.max_failures_per_login_and_address),
                (address, config.max_failures_per_address),
            )
        )
        if ticket is None:
            raise LoginThrottled(username)
        result: T | None = None
        checked = False
        try:
            wait = await self.next_delay(login)
            if wait > 0:
                await self._sleep(wait)
            result = await verify()
            checked = True
        finally:
            # No longer pending and counted in one step: parallel attempts see either.
            if not checked:
                await self._store.leave(ticket)
            elif result is None:
                await self._store.leave(ticket, fail=(pair, address, "login:" + login))
            else:
                await self._store.leave(ticket, forget=(pair, "login:" + login))
        return result

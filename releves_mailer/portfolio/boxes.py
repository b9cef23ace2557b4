"""Mailbox addresses of the portal accounts: the one place that spells and reads them.

Every account owns the box ``<login>@<domain>``; its dedicated statement box is
``releves.<login>@<domain>`` (same password). Statements go to one or the other, or nowhere,
as the account's reception mode says.
"""

from __future__ import annotations

from releves_mailer.db.models import ReceptionMode

__all__ = ["DEDICATED_PREFIX", "box_address", "split_address", "statement_box"]

#: Local-part prefix of the dedicated statement boxes (a login may not start with it).
DEDICATED_PREFIX = "releves."


def box_address(login: str, domain: str, *, dedicated: bool = False) -> str:
    """``login``'s own box, or its dedicated statement box: ``releves.demo@d.example``."""
    return f"{DEDICATED_PREFIX if dedicated else ''}{login}@{domain}"


def statement_box(login: str, mode: ReceptionMode, domain: str) -> str | None:
    """The box receiving ``login``'s statements, or ``None`` for download only."""
    if mode is ReceptionMode.NONE:
        return None
    return box_address(login, domain, dedicated=mode is ReceptionMode.DEDICATED)


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

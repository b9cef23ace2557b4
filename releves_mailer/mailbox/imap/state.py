"""The states of an IMAP session (RFC 3501 section 3)."""

from __future__ import annotations

import enum

__all__ = ["State"]


class State(enum.Enum):
    NOT_AUTHENTICATED = 1
    AUTHENTICATED = 2
    SELECTED = 3
    LOGOUT = 4

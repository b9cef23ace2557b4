"""The error type whose message is meant for the end user (French, one line).

At the package root: services in every area refuse with it, and each front end (CLI,
portal pages, import reports) shows its message.
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """A refusal the user can act on: the message says what is wrong, in French.

    ``field`` names the input at fault when there is one (a form field, a file column).
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

"""The portal's session cookie: its name and lifetime (the sessions are ``services.sessions``).

The cookie is HttpOnly, SameSite=Lax, limited to ``/portail`` and Secure when the public
URL is https.
"""

from __future__ import annotations

from releves_mailer.services.sessions import MAX_AGE

__all__ = ["COOKIE_NAME", "MAX_AGE"]

COOKIE_NAME = "releves_session"

"""The webmail's engine: an IMAP client of the configured server, for the portal's pages.

``imap`` speaks IMAP (aioimaplib) to one box, ``pool`` keeps the connections and the
encrypted passwords of the portal sessions, ``reading`` turns a message into what the page
shows (text or sanitized HTML, S/MIME signature). :class:`Webmail` gathers them with the
limits; ``releves_mailer.web.portal.webmail`` is its HTTP face.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509

from releves_mailer.clock import Clock
from releves_mailer.config import Config
from releves_mailer.signing.secrets import KeyRing
from releves_mailer.webmail.imap import ImapEndpoint
from releves_mailer.webmail.pool import PasswordVault, WebmailPool

__all__ = ["Webmail", "WebmailLimits", "endpoint_from_config", "limits_from_config"]


@dataclass(frozen=True, slots=True)
class WebmailLimits:
    """What one request may cost."""

    page_size: int = 50
    #: Largest message read whole (for display and signature check).
    message_max_bytes: int = 25 * 1024 * 1024
    #: Largest ZIP of attachments (sum of the attachments put in it).
    zip_max_bytes: int = 100 * 1024 * 1024
    #: Most messages one action (mark, move, delete, ZIP) may name.
    max_selection: int = 500
    #: Longest text of a search field.
    search_max_length: int = 100


@dataclass
class Webmail:
    """What the webmail pages need: where the boxes are, the pool, the trusted signers."""

    endpoint: ImapEndpoint
    pool: WebmailPool
    trusted: Sequence[x509.Certificate] = ()
    limits: WebmailLimits = field(default_factory=WebmailLimits)

    @classmethod
    def create(
        cls,
        endpoint: ImapEndpoint,
        keyring: KeyRing,
        clock: Clock,
        *,
        trusted: Sequence[x509.Certificate] = (),
        limits: WebmailLimits | None = None,
    ) -> Webmail:
        pool = WebmailPool(endpoint, PasswordVault(keyring, clock), clock)
        return cls(endpoint, pool, tuple(trusted), limits or WebmailLimits())


def endpoint_from_config(
    config: Config, own_port: int | None, own_tls_port: int | None
) -> ImapEndpoint:
    """Where the webmail finds the boxes: ``[webmail]``, or the daemon's own IMAP server
    (``own_port`` and ``own_tls_port`` are the ports it actually listens on)."""
    section = config.webmail
    own = not section.imap_host
    host = section.imap_host
    if own:
        listen = config.imap.listen
        wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104
        host = wildcard.get(listen, listen)
    port = section.imap_port or ((own_tls_port if section.tls == "imaps" else own_port) or 0)
    context = None
    if section.tls == "imaps":
        if section.ca_file is not None:
            context = ssl.create_default_context(cafile=config.path(section.ca_file))
        elif own:
            # Our own server's certificate, self-signed by ``init``: trusted alone, by itself.
            context = ssl.create_default_context(cafile=config.path(config.tls.certificate))
            context.check_hostname = False
        else:
            context = ssl.create_default_context()
    return ImapEndpoint(host, port, context)


def limits_from_config(config: Config) -> WebmailLimits:
    section = config.webmail
    return WebmailLimits(
        message_max_bytes=section.message_max_bytes,
        zip_max_bytes=section.zip_max_bytes,
        search_max_length=section.search_max_length,
    )

"""Composition of the partner-mode mails (links, alerts, notifications) from the templates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from typing import Any

from releves_mailer.clock import Clock
from releves_mailer.config import Config
from releves_mailer.portfolio.boxes import box_address
from releves_mailer.render import Renderer

__all__ = ["MailComposer", "PartnerSettings"]


@dataclass(frozen=True, slots=True)
class PartnerSettings:
    """What the partner mode needs from the configuration."""

    #: Base URL of the daemon's HTTP server as seen from outside (no trailing slash).
    public_url: str
    portal_name: str
    domain: str
    support_email: str = ""
    support_phone: str = ""

    @classmethod
    def from_config(cls, config: Config) -> PartnerSettings:
        return cls(
            public_url=config.http.public_url.rstrip("/"),
            portal_name=config.portal.name,
            domain=config.portal.domain,
            support_email=config.portal.support_email,
            support_phone=config.portal.support_phone,
        )

    @property
    def callback_url(self) -> str:
        """Where the webview sends the client back (``redirect_uri``)."""
        return f"{self.public_url}/releves/retour"

    def own_box(self, login: str) -> str:
        """The portal account's own mailbox (fallback of mails to the account holder)."""
        return box_address(login, self.domain)


class MailComposer:
    """Renders ``templates/mail/<name>.*`` into a ready-to-queue :class:`EmailMessage`."""

    def __init__(self, renderer: Renderer, settings: PartnerSettings, clock: Clock) -> None:
        self.renderer = renderer
        self.settings = settings
        self.clock = clock

    def compose(self, name: str, recipient: str, context: Mapping[str, Any]) -> EmailMessage:
        settings = self.settings
        full: dict[str, Any] = {
            "portal_name": settings.portal_name,
            "support_email": settings.support_email,
            "support_phone": settings.support_phone,
            **context,
        }
        rendered = self.renderer.render_mail(name, full)
        message = EmailMessage()
        message["From"] = formataddr((settings.portal_name, f"portail@{settings.domain}"))
        message["Reply-To"] = f"noreply@{settings.domain}"
        message["To"] = recipient
        message["Subject"] = rendered.subject
        message["Date"] = format_datetime(self.clock.now())
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(rendered.text)
        if rendered.html is not None:
            message.add_alternative(rendered.html, subtype="html")
        return message

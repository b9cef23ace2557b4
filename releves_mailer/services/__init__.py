"""Query and command services that the protocol adapters (portal, command line) call.

Each domain has its module returning plain frozen dataclasses: ``portfolio`` (portal
accounts, redevables, the family scope), ``banks`` (bank accounts, their history and
transactions), ``statements`` (searches, detail, files), ``links`` (secure links),
``sessions`` (portal logins), ``health`` (the home page's figures), ``family`` (secondary
accounts, password changes), ``sent`` (mails sent to outside addresses). :class:`Services`
gathers them over one database; ``wiring`` builds them from the config for a command.
``web/`` and ``cli/`` import neither the database layer nor SQLAlchemy: they go through here.
"""

from __future__ import annotations

from releves_mailer.clock import Clock
from releves_mailer.collect.scheduler import RefreshPlan
from releves_mailer.db import Database
from releves_mailer.partner.links import LinkService
from releves_mailer.services.banks import Banks
from releves_mailer.services.family import DEFAULT_MAX_SECONDARIES, Family
from releves_mailer.services.health import Health
from releves_mailer.services.links import Links
from releves_mailer.services.portfolio import Portfolio
from releves_mailer.services.sent import SentMails
from releves_mailer.services.sessions import SessionStore
from releves_mailer.services.statements import Statements

__all__ = ["Services"]


class Services:
    """Every service over one database and one clock.

    ``links`` mails secure links (the remote-entry rule of redevable writes included);
    without it, writes mail nothing and sending a link is refused. ``plan`` is the
    collection window the home page reports on; ``max_secondaries`` the secondary accounts
    a primary account may open.
    """

    def __init__(
        self,
        database: Database,
        clock: Clock,
        links: LinkService | None = None,
        *,
        plan: RefreshPlan | None = None,
        max_secondaries: int = DEFAULT_MAX_SECONDARIES,
    ) -> None:
        self.database = database
        self.clock = clock
        self.portfolio = Portfolio(database, clock, links)
        self.banks = Banks(database, clock)
        self.statements = Statements(database)
        self.links = Links(database, clock, links)
        self.sessions = SessionStore(database, clock)
        self.health = Health(database, clock, plan or RefreshPlan())
        self.family = Family(database, clock, max_secondaries)
        self.sent = SentMails(database)

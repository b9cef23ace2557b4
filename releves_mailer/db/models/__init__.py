"""ORM models of every area; importing this package registers all tables on ``Base.metadata``."""

from releves_mailer.db.models.portfolio import Periodicity, PortalAccount, ReceptionMode, Redevable

__all__ = ["Periodicity", "PortalAccount", "ReceptionMode", "Redevable"]

"""Storage: SQLAlchemy models, sessions and migrations; the only package that speaks SQL."""

from releves_mailer.db.base import Base, UTCDateTime
from releves_mailer.db.engine import Database

__all__ = ["Base", "Database", "UTCDateTime"]

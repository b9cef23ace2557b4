"""Backup and restore of an installation: one tar file with a manifest of sha256 hashes.

``archive`` writes and reads the tar (members named by where they go in a restored data
directory), ``snapshot`` takes the consistent database copy (SQLite online backup, or
``pg_dump`` on an exported PostgreSQL snapshot) and lists what it references,
``configfile`` rewrites the restored config, ``service`` puts them together for the
``backup`` and ``restore`` commands.
"""

from __future__ import annotations

from releves_mailer.backup.service import BackupReport, RestoreReport, restore, take_backup

__all__ = ["BackupReport", "RestoreReport", "restore", "take_backup"]

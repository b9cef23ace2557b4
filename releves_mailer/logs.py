"""Logging set-up from the ``[logging]`` section: text or JSON lines, reopened on SIGHUP.

At the package root: ``serve``, ``demo`` and the daemon's SIGHUP set it up the same way.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from pathlib import Path

from releves_mailer.config import LoggingSection
from releves_mailer.files import PRIVATE_FILE, make_private_dir

__all__ = ["JsonFormatter", "configure_logging"]

_HANDLER_NAME = "releves-mailer"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(section: LoggingSection, data_dir: Path) -> None:
    """(Re)install the daemon's handler; calling it again reopens the log file."""
    root = logging.getLogger()
    # The daemon owns the root logger: drop what the command line installed, and our own
    # previous handler (closing it is what reopens a rotated file).
    for previous in list(root.handlers):
        root.removeHandler(previous)
        previous.close()
    handler: logging.Handler
    if section.file is not None:
        path = section.file if section.file.is_absolute() else data_dir / section.file
        make_private_dir(path.parent)
        # Created 0600 before the handler opens it for appending (it would follow the umask).
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE))
        handler = logging.FileHandler(path, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    if section.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(section.level)
    # Alembic announces its dialect at every schema check: only worth seeing when debugging.
    logging.getLogger("alembic").setLevel(
        logging.DEBUG if section.level == "DEBUG" else logging.WARNING
    )

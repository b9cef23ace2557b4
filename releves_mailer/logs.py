"""Logging set-up from the ``[logging]`` section: text or JSON lines, ids of the job at hand,
secrets masked, reopened on SIGHUP.

At the package root: ``serve``, ``demo`` and the daemon's SIGHUP set it up the same way, and
the job boundaries (collection of a connection, cut of a statement, delivery, outbox)
name their ids with :func:`log_context`.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from pydantic import BaseModel, SecretStr

from releves_mailer.config import LoggingSection
from releves_mailer.files import PRIVATE_FILE, make_private_dir

__all__ = [
    "CONTEXT_FIELDS",
    "JsonFormatter",
    "Redactor",
    "TextFormatter",
    "configure_logging",
    "log_context",
    "secrets_of",
]

_HANDLER_NAME = "releves-mailer"

#: The ids a log line may carry, set by :func:`log_context` or ``extra=``.
CONTEXT_FIELDS = ("account_id", "connection_id", "statement_id", "link_id", "mail_id")

_context: contextvars.ContextVar[Mapping[str, int] | None] = contextvars.ContextVar(
    "releves_mailer_log_context", default=None
)

MASK = "[redacted]"

# What a secret looks like wherever it may travel into a message: in a URL query, as a
# key=value or "key": "value" pair, as an HTTP bearer, in an SMTP/IMAP authentication line.
_SENSITIVE_KEYS = (
    r"(?:password|passwd|mot_de_passe|secret|client_secret|webhook_secret|access_token|"
    r"refresh_token|auth_token|token|jeton|signature|authorization)"
)
# In a URL query, the Powens temporary code and the webview state are secrets too.
_SENSITIVE_PARAMETERS = rf"(?:{_SENSITIVE_KEYS}|code|state)"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(Bearer|Basic|bearer)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {MASK}"),
    (re.compile(r"(?i)\b(AUTH\s+(?:PLAIN|LOGIN|XOAUTH2|CRAM-MD5))\s+\S+"), rf"\1 {MASK}"),
    (
        re.compile(r"\b(LOGIN\s+(?:\"[^\"]*\"|\S+)\s+)(?:\"(?:[^\"\\]|\\.)*\"|\S+)"),
        rf"\1{MASK}",
    ),
    (re.compile(rf"(?i)([?&;]{_SENSITIVE_PARAMETERS}=)[^&\s\"'<>]+"), rf"\1{MASK}"),
    (
        re.compile(
            rf"(?i)(\b{_SENSITIVE_KEYS}[\"']?\s*[:=]\s*[\"']?)(?!{re.escape(MASK)})"
            r"[^\s\"'&,;}>]{6,}"
        ),
        rf"\1{MASK}",
    ),
)


@contextlib.contextmanager
def log_context(**ids: int | None) -> Iterator[None]:
    """Every line logged inside the block (tasks started in it too) carries these ids."""
    unknown = set(ids) - set(CONTEXT_FIELDS)
    if unknown:
        raise TypeError(f"unknown log context field(s): {sorted(unknown)}")
    added = {key: value for key, value in ids.items() if value is not None}
    token = _context.set({**(_context.get() or {}), **added})
    try:
        yield
    finally:
        _context.reset(token)


def _context_of(record: logging.LogRecord) -> dict[str, int]:
    found = dict(_context.get() or {})
    for key in CONTEXT_FIELDS:
        value = getattr(record, key, None)  # ``extra=`` wins over the context
        if value is not None:
            found[key] = value
    return {key: found[key] for key in CONTEXT_FIELDS if key in found}


class Redactor:
    """Masks the known secret values, then anything shaped like a secret."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so that a secret containing another is masked whole.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text


class TextFormatter(logging.Formatter):
    """Today's text lines, then the ids of the job as ``[connection_id=3 statement_id=9]``."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.redactor = redactor or Redactor()

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        context = _context_of(record)
        if context:
            line += " [" + " ".join(f"{key}={value}" for key, value in context.items()) + "]"
        return line

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the job's ids, the exception."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": self.redactor(record.getMessage()),
        }
        entry.update(_context_of(record))
        if record.exc_info:
            entry["exception"] = self.redactor(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = self.redactor(record.exc_text)
        return json.dumps(entry, ensure_ascii=False)


def secrets_of(model: BaseModel) -> list[str]:
    """Every secret value of a config (its ``SecretStr`` fields, at any depth)."""
    found: list[str] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            found.extend(secrets_of(value))
        elif isinstance(value, Mapping):
            found.extend(
                secret
                for item in value.values()
                if isinstance(item, BaseModel)
                for secret in secrets_of(item)
            )
    return [secret for secret in found if secret]


def configure_logging(section: LoggingSection, data_dir: Path, secrets: Iterable[str] = ()) -> None:
    """(Re)install the daemon's handler; calling it again reopens the log file.

    ``secrets`` are masked wherever they appear (:func:`secrets_of` of the config).
    """
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
    redactor = Redactor(secrets)
    if section.format == "json":
        handler.setFormatter(JsonFormatter(redactor))
    else:
        handler.setFormatter(TextFormatter(redactor))
    root.addHandler(handler)
    root.setLevel(section.level)
    # Alembic announces its dialect at every schema check: only worth seeing when debugging.
    logging.getLogger("alembic").setLevel(
        logging.DEBUG if section.level == "DEBUG" else logging.WARNING
    )
    # Libraries whose debug lines carry raw protocol or SQL parameters (AUTH lines, row
    # values): never below INFO, whatever the level asked.
    for name in ("aiosqlite", "asyncpg", "mail.log", "hpack", "httpcore"):
        logging.getLogger(name).setLevel(max(logging.getLevelName(section.level), logging.INFO))

"""Log lines: text or JSON, the ids of the job at hand, secrets masked in both."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from releves_mailer.config import Config, LoggingSection
from releves_mailer.logs import (
    MASK,
    JsonFormatter,
    Redactor,
    TextFormatter,
    configure_logging,
    log_context,
    secrets_of,
)

SECRET = "s3cr3t-de-la-config-0123456789"


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    entry = logging.LogRecord("releves_mailer.test", logging.INFO, __file__, 1, message, args, None)
    entry.__dict__.update(extra)
    return entry


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_json_lines_carry_time_level_logger_message_and_the_jobs_ids() -> None:
    formatter = JsonFormatter()
    with log_context(connection_id=12), log_context(statement_id=5, account_id=None):
        entry = json.loads(formatter.format(record("refresh of %s done", "12")))
    assert entry["level"] == "INFO"
    assert entry["logger"] == "releves_mailer.test"
    assert entry["message"] == "refresh of 12 done"
    assert entry["time"].endswith("+00:00")
    assert entry["connection_id"] == 12 and entry["statement_id"] == 5
    assert "account_id" not in entry
    # Outside the block, no ids; ``extra=`` names them too.
    assert "connection_id" not in json.loads(formatter.format(record("x")))
    assert json.loads(formatter.format(record("x", mail_id=3)))["mail_id"] == 3


def test_text_lines_keep_todays_format_and_add_the_ids() -> None:
    formatter = TextFormatter()
    plain = formatter.format(record("collection round"))
    assert plain.endswith(" INFO releves_mailer.test: collection round")
    with log_context(account_id=7, connection_id=3):
        assert formatter.format(record("cut")).endswith(": cut [account_id=7 connection_id=3]")


def test_unknown_context_field_is_refused() -> None:
    with pytest.raises(TypeError), log_context(password=1):  # type: ignore[arg-type]
        pass


async def test_tasks_started_inside_a_context_keep_its_ids() -> None:
    formatter = JsonFormatter()

    async def job() -> str:
        await asyncio.sleep(0)
        return formatter.format(record("in a task"))

    with log_context(statement_id=9):
        task = asyncio.create_task(job())
    assert json.loads(await task)["statement_id"] == 9


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("_handle_client readline: b'AUTH PLAIN AGNhYmluZXQAbW90IGRlIHBhc3Nl'", "AGNhYmluZXQ"),
        ('client sent: a1 LOGIN cabinet "mot de passe"', "mot de passe"),
        ("a1 LOGIN cabinet motdepasse", "motdepasse"),
        ("GET /releves/saisie?token=AbCdEf0123456789xyz HTTP/1.1", "AbCdEf0123456789xyz"),
        ("callback /releves/retour?state=n0nce-0123456789&code=C0de-0123456789", "C0de-0123456789"),
        ("callback /releves/retour?state=n0nce-0123456789&code=C0de-0123456789", "n0nce-012345"),
        ("headers {'Authorization': 'Bearer eyJhbGciOi.JIUzI1NiJ9.sig'}", "eyJhbGciOi"),
        ('body {"client_secret": "Zm9vYmFyYmF6cXV4", "code": "x"}', "Zm9vYmFyYmF6cXV4"),
        ("relay login failed: password=hunter2hunter2", "hunter2hunter2"),
        ("jeton=Zx81-aa_bbccddee rejected", "Zx81-aa_bbccddee"),
        (f"the configured value {SECRET} leaked", SECRET),
    ],
)
def test_secrets_are_masked_in_both_formats(line: str, secret: str) -> None:
    redactor = Redactor([SECRET])
    for formatter in (TextFormatter(redactor), JsonFormatter(redactor)):
        output = formatter.format(record("%s", line))
        assert secret not in output
        assert MASK in output


def test_exceptions_are_masked_too() -> None:
    redactor = Redactor([SECRET])
    try:
        raise RuntimeError(f"relay refused {SECRET}")
    except RuntimeError:
        entry = record("relay failed")
        entry.exc_info = sys.exc_info()
    for formatter in (TextFormatter(redactor), JsonFormatter(redactor)):
        output = formatter.format(entry)
        assert "RuntimeError" in output and SECRET not in output


def test_ordinary_lines_are_left_alone() -> None:
    redactor = Redactor([SECRET])
    for line in (
        "collection round: 3 refresh(es), 2 statement(s) cut, 2 delivered",
        "callback of link 4: access_denied",
        "portal login cabinet refused",
        "mail 7 not sent (attempt 2): SMTPServerDisconnected: Connection lost",
    ):
        assert redactor(line) == line


def test_secrets_of_a_config_are_its_secret_values() -> None:
    config = Config()
    relay = config.relay.model_copy(update={"password": SecretStr("mot-de-passe-du-relais")})
    powens = config.aggregator.powens.model_copy(
        update={"client_secret": SecretStr("secret-client"), "webhook_secret": SecretStr("wh")}
    )
    aggregator = config.aggregator.model_copy(update={"powens": powens})
    config = config.model_copy(update={"relay": relay, "aggregator": aggregator})
    assert set(secrets_of(config)) == {"mot-de-passe-du-relais", "secret-client", "wh"}


def test_configured_handler_masks_and_caps_chatty_libraries(
    tmp_path: Path, restore_root: None
) -> None:
    section = LoggingSection(level="DEBUG", format="json", file=Path("daemon.log"))
    configure_logging(section, tmp_path, [SECRET])
    logging.getLogger("releves_mailer.test").info("relay password is %s", SECRET)
    # aiosqlite's debug lines hold SQL parameters: never written, even at DEBUG.
    logging.getLogger("aiosqlite").debug("executing %s", ("token-hash", SECRET))
    logging.getLogger("mail.log").debug("AUTH PLAIN %s", base64.b64encode(b"\0a\0b").decode())
    for handler in logging.getLogger().handlers:
        handler.flush()
    lines = (tmp_path / "daemon.log").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["message"] for line in lines] == [f"relay password is {MASK}"]

"""Configuration: the example documents every key; errors name the file and the key path."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from releves_mailer.config import Config, ConfigError, find_config_path, load_config
from releves_mailer.resources import example_config_path


def schema_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= schema_keys(annotation, f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def documented_keys(text: str) -> set[str]:
    """Keys of the example, commented-out ones included, with their section."""
    keys, section = set(), ""
    for line in text.splitlines():
        header = re.fullmatch(r"\[([a-z_.]+)\]", line.strip())
        if header:
            section = header.group(1) + "."
            continue
        assignment = re.match(r"#?\s?([a-z_]+) = ", line)
        if assignment:
            keys.add(section + assignment.group(1))
    return keys


def test_example_documents_every_key_with_a_comment() -> None:
    text = example_config_path().read_text(encoding="utf-8")
    assert documented_keys(text) == schema_keys(Config)
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if re.match(r"#?\s?[a-z_]+ = ", line):
            above = lines[index - 1].strip()
            assert above.startswith("#") or re.match(r"[a-z_]+ = ", above), line


def test_example_is_valid_and_gives_the_defaults(tmp_path: Path) -> None:
    config = load_config(example_config_path(), environ={})
    assert config.imap.port == 1143
    assert config.portal.data_dir == example_config_path().parent.resolve()
    assert config.database_url.endswith("/releves.sqlite3")
    assert config.path(Path("keys/x")) == config.data_dir / "keys/x"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "releves-mailer.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[imap]\nprot = 1\n", "imap.prot", "clé inconnue"),
        ("[imap]\nport = 'abc'\n", "imap.port", "nombre entier"),
        ("[imap]\nport = 70000\n", "imap.port", "au plus 65535"),
        ("[smtp]\nlisten = 3\n", "smtp.listen", "chaîne"),
        ("[collection]\nwindow_start = 'minuit'\n", "collection.window_start", "HH:MM"),
        ("[logging]\nlevel = 'BAVARD'\n", "logging.level", "valeur non autorisée"),
        ("[aggregator.powens]\nenabled = true\n", "aggregator.powens", "client_id"),
        ("[nouveau]\n", "nouveau", "clé inconnue"),
        ("portal = 3\n", "portal", "section"),
        (
            "[database]\nurl = 'mysql://root:secret@db/x'\n",
            "database.url",
            "adresse de base de données non reconnue : 'db/x'",
        ),
    ],
)
def test_errors_name_file_key_and_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.key == key
    assert reason in caught.value.reason
    assert str(path.resolve()) in str(caught.value)


def test_syntax_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="syntaxe TOML invalide"):
        load_config(write(tmp_path, "[imap\n"), environ={})
    with pytest.raises(ConfigError, match="introuvable"):
        load_config(tmp_path / "absent.toml", environ={})


def test_environment_overrides_file_and_keeps_secrets_secret(tmp_path: Path) -> None:
    path = write(tmp_path, "[relay]\nhost = 'smtp.example'\n")
    environ: dict[str, Any] = {
        "RELEVES_MAILER__RELAY__PASSWORD": "s3cr3t-from-env",
        "RELEVES_MAILER__IMAP__PORT": "2143",
        "RELEVES_MAILER__AGGREGATOR__TESTBANK__SEED": "7",
        "UNRELATED": "x",
    }
    config = load_config(path, environ=environ)
    assert config.relay.password.get_secret_value() == "s3cr3t-from-env"
    assert "s3cr3t" not in repr(config) and "s3cr3t" not in str(config.model_dump())
    assert config.imap.port == 2143 and config.aggregator.testbank.seed == 7
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={"RELEVES_MAILER__IMAP__PORT": "x"})
    assert caught.value.key == "imap.port"


def test_config_path_precedence(tmp_path: Path) -> None:
    option = tmp_path / "a.toml"
    assert find_config_path(option, {"RELEVES_MAILER_CONFIG": "/b.toml"}) == option
    assert find_config_path(None, {"RELEVES_MAILER_CONFIG": "/b.toml"}) == Path("/b.toml")
    assert find_config_path(None, {}) == Path("releves-data/releves-mailer.toml")
    assert tomllib.loads(example_config_path().read_text())["portal"]["data_dir"] == "."


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgresql://u@h:5432/b", "postgresql+asyncpg://u@h:5432/b"),
        ("postgres://u@h/b", "postgresql+asyncpg://u@h/b"),
        ("postgresql+asyncpg://u@h/b", "postgresql+asyncpg://u@h/b"),
        ("sqlite:////var/lib/r.sqlite3", "sqlite+aiosqlite:////var/lib/r.sqlite3"),
    ],
)
def test_database_urls_get_the_async_driver(tmp_path: Path, given: str, used: str) -> None:
    config = load_config(write(tmp_path, f"[database]\nurl = '{given}'\n"), environ={})
    assert config.database_url == used

"""Line edits of the config file: comments kept, missing keys and sections added, layouts
the edits do not understand refused rather than mangled."""

from __future__ import annotations

import tomllib

import pytest

from releves_mailer.backup.configfile import blank_secrets, set_values
from releves_mailer.errors import UserError

TEXT = """# top comment
[portal]
# where the data lives
data_dir = "/srv/old"   # old place
domain = "releves.example.fr"

[relay]
host = "smtp.example.fr"
password = "s3cret"

[aggregator.powens]
client_secret = ""
"""


def test_values_are_replaced_added_and_comments_kept() -> None:
    values = {
        ("portal", "data_dir"): ".",
        ("tls", "key"): "tls/key.pem",
        ("secrets", "key_file"): "keys/secrets.key",
        ("portal", "name"): "Cabinet « Dupont »",
    }
    text = set_values(TEXT, values, where="f.toml")
    assert "# where the data lives" in text and "# top comment" in text
    document = tomllib.loads(text)
    assert document["portal"] == {
        "data_dir": ".",
        "domain": "releves.example.fr",
        "name": "Cabinet « Dupont »",
    }
    assert document["tls"] == {"key": "tls/key.pem"}
    assert document["relay"]["password"] == "s3cret"


def test_only_secrets_present_are_blanked() -> None:
    text, blanked = blank_secrets(TEXT, where="f.toml")
    assert blanked == ["relay.password"]
    assert "s3cret" not in text
    assert tomllib.loads(text)["relay"] == {"host": "smtp.example.fr", "password": ""}
    assert blank_secrets(text, where="f.toml") == (text, [])


def test_inline_tables_are_refused_not_mangled() -> None:
    text = 'portal = { data_dir = "/srv/old" }\n'
    with pytest.raises(UserError, match=r"f\.toml"):
        set_values(text, {("portal", "data_dir"): "."}, where="f.toml")

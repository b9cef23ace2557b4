"""Line edits of the config file that keep its comments: secrets blanked, paths rewritten.

Only ``key = value`` lines under a ``[section]`` header are edited (the layout of the
example config and of ``init``); every edit is checked by parsing the result, so a layout
these edits do not understand (inline tables, dotted keys) is refused, never mangled.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from typing import Any

from releves_mailer.errors import UserError

__all__ = ["SECRET_KEYS", "blank_secrets", "set_values"]

#: Keys of the config that hold secrets (they belong in the environment, but may be here).
SECRET_KEYS = (
    ("relay", "password"),
    ("aggregator.powens", "client_secret"),
    ("aggregator.powens", "webhook_secret"),
    ("database", "url"),
)
_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]\s*(?:#.*)?$")


def _lookup(document: Mapping[str, Any], section: str, key: str) -> Any:
    node: Any = document
    for part in [*section.split("."), key]:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _set_line(text: str, section: str, key: str, literal: str) -> str:
    lines = text.splitlines(keepends=True)
    key_line = re.compile(rf"^\s*{re.escape(key)}\s*=")
    start = next(
        (i for i, line in enumerate(lines) if (m := _HEADER.match(line)) and m[1] == section),
        None,
    )
    if start is None:
        tail = "" if not lines or lines[-1].endswith("\n") else "\n"
        return text + f"{tail}\n[{section}]\n{key} = {literal}\n"
    end = next((i for i in range(start + 1, len(lines)) if _HEADER.match(lines[i])), len(lines))
    for i in range(start + 1, end):
        if key_line.match(lines[i]):
            lines[i] = f"{key} = {literal}\n"
            return "".join(lines)
    lines.insert(start + 1, f"{key} = {literal}\n")
    return "".join(lines)


def set_values(text: str, values: Mapping[tuple[str, str], str], *, where: str) -> str:
    """``text`` with each ``(section, key)`` set to the string given; checked by parsing."""
    for (section, key), value in values.items():
        text = _set_line(text, section, key, json.dumps(value, ensure_ascii=False))
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UserError(
            f"{where} : configuration non modifiable automatiquement ({error})"
        ) from None
    for (section, key), value in values.items():
        if _lookup(document, section, key) != value:
            raise UserError(
                f"{where} : clé « {section}.{key} » non modifiable automatiquement "
                "(écrivez-la sous la forme « clé = valeur » dans sa section)"
            )
    return text


def blank_secrets(text: str, *, where: str) -> tuple[str, list[str]]:
    """``text`` without the secret values it holds, and the keys that were blanked."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{where} : syntaxe TOML invalide ({error})") from None
    present = {
        (section, key): ""
        for section, key in SECRET_KEYS
        if _lookup(document, section, key) not in (None, "")
    }
    if not present:
        return text, []
    return set_values(text, present, where=where), [f"{s}.{k}" for s, k in present]

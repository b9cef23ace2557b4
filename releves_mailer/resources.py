"""Files shipped with the package: templates and the example configuration.

At the package root: the shipped folders are found relative to the package itself.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["example_config_path", "example_import_path", "templates_dir"]

_PACKAGE = Path(__file__).resolve().parent
# A wheel carries these folders inside the package; a source checkout has them at its root.
_SOURCE_ROOT = _PACKAGE.parent


def _shipped(in_wheel: str, in_source: str) -> Path:
    packaged = _PACKAGE / in_wheel
    return packaged if packaged.exists() else _SOURCE_ROOT / in_source


def templates_dir() -> Path:
    return _shipped("_templates", "templates")


def example_config_path() -> Path:
    return _shipped("_config/releves-mailer.example.toml", "config/releves-mailer.example.toml")


def example_import_path() -> Path:
    return _shipped("_config/redevables.example.csv", "config/redevables.example.csv")

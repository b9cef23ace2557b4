"""The dependency rules of DESIGN.md that imports can show, checked on the source (ast)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "releves_mailer"


def _modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def _package_of(path: Path) -> str:
    """The package a module's relative imports start from."""
    return ".".join(path.relative_to(PACKAGE.parent).parent.parts)


def _imports(source: str, package: str) -> Iterator[tuple[int, str]]:
    """Every module ``source`` imports (relative imports resolved from ``package``)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            # ``from releves_mailer import db`` imports the package ``releves_mailer.db``.
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _imported(folder: str) -> Iterator[tuple[str, str]]:
    """``(where, module)`` for every import of every module under ``releves_mailer/folder``."""
    for path in _modules(folder):
        source = path.read_text(encoding="utf-8")
        for line, name in _imports(source, _package_of(path)):
            yield f"{path.relative_to(PACKAGE.parent)}:{line}", name


@pytest.mark.parametrize("folder", ["web", "cli"])
def test_adapters_go_through_the_services(folder: str) -> None:
    """The portal and the command line hold no SQL: neither the database layer nor SQLAlchemy."""
    assert _modules(folder)
    refused = ("releves_mailer.db", "sqlalchemy")
    found = [
        f"{where} imports {name}"
        for where, name in _imported(folder)
        if any(_within(name, prefix) for prefix in refused)
    ]
    assert found == []


@pytest.mark.parametrize("folder", ["signing", "cfonb"])
def test_pure_libraries_import_nothing_of_ours(folder: str) -> None:
    """``signing/`` and ``cfonb/`` import nothing of ``releves_mailer`` outside themselves."""
    assert _modules(folder)
    own = f"releves_mailer.{folder}"
    found = [
        f"{where} imports {name}"
        for where, name in _imported(folder)
        if _within(name, "releves_mailer") and not _within(name, own)
    ]
    assert found == []


def test_the_check_sees_relative_and_package_imports() -> None:
    """The rule cannot be dodged by a relative import or ``from releves_mailer import db``."""
    source = "from ...db import models\nfrom releves_mailer import db\nimport sqlalchemy.orm\n"
    names = {name for _, name in _imports(source, "releves_mailer.web.portal")}
    assert {"releves_mailer.db.models", "releves_mailer.db", "sqlalchemy.orm"} <= names


#: Longest module of the package: past it a module holds more than one concern.
MAX_MODULE_LINES = 800


def test_no_module_is_over_800_lines() -> None:
    lengths = {
        str(path.relative_to(PACKAGE.parent)): len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    assert len(lengths) > 100  # the whole package was read
    assert {path: n for path, n in lengths.items() if n > MAX_MODULE_LINES} == {}


def test_every_module_says_its_job_on_its_first_docstring_line() -> None:
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parts[-3:-1] == ("migrations", "versions") or path.name == "__main__.py":
            continue
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        if not docstring or not docstring.splitlines()[0].strip():
            missing.append(str(path.relative_to(PACKAGE.parent)))
    assert missing == []

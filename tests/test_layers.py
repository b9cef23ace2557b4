"""The package's layering rules that imports can show: leaf rooms stand alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import releves_mailer

PACKAGE = Path(releves_mailer.__file__).parent


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


@pytest.mark.parametrize("room", ["signing", "cfonb"])
def test_leaf_rooms_import_nothing_of_ours(room: str) -> None:
    own = f"releves_mailer.{room}"
    for path in sorted((PACKAGE / room).rglob("*.py")):
        foreign = {
            name
            for name in _imported(path)
            if name.startswith("releves_mailer") and not name.startswith(own)
        }
        assert not foreign, f"{path.relative_to(PACKAGE)} imports {sorted(foreign)}"


def test_the_daemon_names_no_aggregator() -> None:
    """Every aggregator is wired through the registry: none by name in the daemon or web/."""
    paths = [*sorted((PACKAGE / "daemon").rglob("*.py")), *sorted((PACKAGE / "web").rglob("*.py"))]
    for path in paths:
        named = {
            name for name in _imported(path) if name.startswith("releves_mailer.aggregators.")
        } - {"releves_mailer.aggregators.registry", "releves_mailer.aggregators.contract"}
        assert not named, f"{path.relative_to(PACKAGE)} imports {sorted(named)}"


@pytest.mark.parametrize(
    "module",
    [
        "releves_mailer.statements.plan",
        "releves_mailer.statements.build",
        "releves_mailer.portfolio.periodicity",
        "releves_mailer.enums",
        "releves_mailer.cfonb",
    ],
)
def test_pure_modules_load_no_database_code(module: str) -> None:
    """The pure build of statements runs without SQLAlchemy or our database package: what a
    fresh interpreter holds after importing the module, not what its source names."""
    probe = (
        f"import sys, {module}; "
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith('sqlalchemy')}"
        " | {m for m in sys.modules if m.startswith('releves_mailer.db')}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]", f"{module} loads {loaded}"

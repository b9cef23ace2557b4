"""Commands are loaded on demand: the lazy tree is the whole tree, and a command that needs
no database starts without loading one. Each check runs in a fresh interpreter."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import releves_mailer.cli

WALK = """
import json, sys, click
from releves_mailer.cli import main

def walk(command, ctx, path):
    found = [path]
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            found += walk(sub, click.Context(sub, parent=ctx, info_name=name), f"{path} {name}")
    return found

print(json.dumps(walk(main, click.Context(main, info_name="releves-mailer"), "releves-mailer")))
"""


def command_paths(prelude: str = "") -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", prelude + WALK], capture_output=True, text=True, check=True
    )
    paths: list[str] = json.loads(done.stdout)
    return paths


def test_the_lazy_tree_is_the_whole_tree() -> None:
    modules = [
        f"releves_mailer.cli.{info.name}"
        for info in pkgutil.iter_modules(releves_mailer.cli.__path__)
    ]
    eager = command_paths("".join(f"import {name}\n" for name in modules))
    lazy = command_paths()
    assert sorted(lazy) == sorted(eager)
    assert "releves-mailer redevables discover-edi" in lazy  # declared in another module
    assert "releves-mailer mailbox move" in lazy
    assert len(lazy) > 40


def test_a_command_without_database_loads_none() -> None:
    code = (
        "import sys, click\n"
        "from releves_mailer.cli import main\n"
        "command = main.get_command(click.Context(main), 'cfonb')\n"
        "assert command is not None\n"
        "heavy = ('sqlalchemy', 'aiohttp', 'alembic')\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"

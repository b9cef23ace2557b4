"""Every help page of the command line is in French, click's own words included."""

from __future__ import annotations

import re

import click
from click.testing import CliRunner

from releves_mailer.cli import main

#: What click writes in English when nobody translates it.
ENGLISH = re.compile(
    r"Usage:|Options:|Commands:|Arguments:|Show this message|Show the version|\[required\]"
    r"|default: |env var: |\b(?:TEXT|INTEGER|FLOAT|BOOLEAN|FILE|FILENAME|DIRECTORY|PATH"
    r"|COMMAND|ARGS)\b"
)


def command_paths() -> list[list[str]]:
    """The arguments that reach each command, through the lazy main group."""
    found: list[list[str]] = []

    def walk(command: click.Command, ctx: click.Context, path: list[str]) -> None:
        found.append(path)
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None
                walk(sub, click.Context(sub, parent=ctx, info_name=name), [*path, name])

    walk(main, click.Context(main, info_name="releves-mailer"), [])
    return found


def test_every_help_page_is_in_french() -> None:
    runner = CliRunner()
    paths = command_paths()
    assert len(paths) > 40
    for path in paths:
        result = runner.invoke(main, [*path, "--help"], prog_name="releves-mailer")
        page = result.output
        assert result.exit_code == 0, (path, page)
        assert page.startswith("Utilisation : releves-mailer"), (path, page)
        assert "Options :" in page and "Affiche cette aide et quitte." in page, (path, page)
        english = ENGLISH.search(page)
        assert english is None, (path, english, page)


def test_click_notes_and_metavars_are_translated() -> None:
    runner = CliRunner()
    page = runner.invoke(main, ["accounts", "add", "--help"]).output
    assert "[obligatoire]" in page
    assert "[par défaut :" in page
    assert "--siret TEXTE" in page and "--password-file FICHIER" in page
    page = runner.invoke(main, ["--help"]).output
    assert "COMMANDE [ARGUMENTS]..." in page and "Commandes :" in page
    assert "Affiche la version et quitte." in page

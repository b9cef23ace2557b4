"""French help pages: click's own words (headings, the help option, metavars) in French.

click writes the frame of every help page itself, in English ("Usage:", "Options:",
"Show this message and exit.", "[required]", "TEXT"); our commands' own texts are French.
:class:`FrenchHelpFormatter` translates that frame as it is written, so that no command
needs its own settings: :func:`in_french` gives a command and all its subcommands the
formatter. A string click adds in a later version stays English until it is listed here
(``tests/test_cli_help.py`` reads every help page for the known English words).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import click

__all__ = ["FrenchContext", "FrenchHelpFormatter", "in_french"]

#: Section headings click writes.
_HEADINGS = {
    "Options": "Options",
    "Commands": "Commandes",
    "Arguments": "Arguments",
    "Positionals": "Arguments",
}

#: Help texts click gives its own options.
_HELP_TEXTS = {
    "Show this message and exit.": "Affiche cette aide et quitte.",
    "Show the version and exit.": "Affiche la version et quitte.",
}

#: Metavars of click's parameter types, as they appear in the left column and the usage.
_METAVARS = {
    "TEXT": "TEXTE",
    "INTEGER": "ENTIER",
    "FLOAT": "NOMBRE",
    "BOOLEAN": "OUI|NON",
    "FILE": "FICHIER",
    "FILENAME": "FICHIER",
    "DIRECTORY": "DOSSIER",
    "PATH": "CHEMIN",
    "UUID": "UUID",
    "COMMAND": "COMMANDE",
    "ARGS": "ARGUMENTS",
}
_METAVAR = re.compile(r"\b(" + "|".join(_METAVARS) + r")\b")

#: The bracketed notes click appends to an option's help.
_EXTRAS = (
    (re.compile(r"\brequired\b"), "obligatoire"),
    (re.compile(r"\bdefault: "), "par défaut : "),
    (re.compile(r"\benv var: "), "variable d'environnement : "),
)
_EXTRA_BLOCK = re.compile(r"\[([^\[\]]*)\]\s*$")


def _metavars(text: str) -> str:
    return _METAVAR.sub(lambda found: _METAVARS[found[1]], text)


def _help_text(text: str) -> str:
    text = _HELP_TEXTS.get(text, text)
    block = _EXTRA_BLOCK.search(text)
    if block is None:
        return text
    inner = block[1]
    for pattern, french in _EXTRAS:
        inner = pattern.sub(french, inner)
    return text[: block.start()] + f"[{inner}]"


class FrenchHelpFormatter(click.HelpFormatter):
    """click's help formatter, writing click's own words in French."""

    def write_usage(self, prog: str, args: str = "", prefix: str | None = None) -> None:
        super().write_usage(prog, _metavars(args), "Utilisation : " if prefix is None else prefix)

    def write_heading(self, heading: str) -> None:
        self.write(f"{'':>{self.current_indent}}{_HEADINGS.get(heading, heading)} :\n")

    def write_dl(
        self, rows: Iterable[tuple[str, str]], col_max: int = 30, col_spacing: int = 2
    ) -> None:
        super().write_dl(
            [(_metavars(term), _help_text(text)) for term, text in rows], col_max, col_spacing
        )


class FrenchContext(click.Context):
    """A context whose help pages are written by :class:`FrenchHelpFormatter`."""

    formatter_class = FrenchHelpFormatter


def in_french(command: click.Command) -> click.Command:
    """``command`` and its subcommands write their help pages in French; returned as is."""
    pending: list[click.Command] = [command]
    while pending:
        current = pending.pop()
        current.context_class = FrenchContext
        if isinstance(current, click.Group):
            # The lazy main group holds none: it hands each command here as it loads it.
            pending.extend(current.commands.values())
    return command

"""French messages for click's usage errors and the operating system's errors.

click writes its errors in English ("Error: Invalid value for 'FILE': File 'x' is a
directory."); every error of our command line is one French line instead, without the
"Error:" prefix. Usage errors are rebuilt from the exception's type and parameter, and the
inner messages of click's parameter types (a finite set) are translated by pattern; an
unknown one is kept as is rather than lost.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable, Sequence

import click

__all__ = ["french_message", "os_error_message"]

Translate = Callable[[re.Match[str]], str]

#: click's parameter type messages (click 8.x), as patterns, and their French rendering.
_TYPE_MESSAGES: Sequence[tuple[re.Pattern[str], Translate]] = [
    (
        re.compile(r"^(?:File|Directory|Path) '(.*)' does not exist\.$", re.S),
        lambda m: f"« {m[1]} » n'existe pas",
    ),
    (
        re.compile(r"^(?:File|Directory|Path) '(.*)' is a directory\.$", re.S),
        lambda m: f"« {m[1]} » est un dossier, pas un fichier",
    ),
    (
        re.compile(r"^(?:File|Directory|Path) '(.*)' is a file\.$", re.S),
        lambda m: f"« {m[1]} » est un fichier, pas un dossier",
    ),
    (
        re.compile(r"^(?:File|Directory|Path) '(.*)' is not readable\.$", re.S),
        lambda m: f"« {m[1]} » n'est pas lisible (droits insuffisants)",
    ),
    (
        re.compile(r"^(?:File|Directory|Path) '(.*)' is not writable\.$", re.S),
        lambda m: f"« {m[1]} » n'est pas accessible en écriture (droits insuffisants)",
    ),
    (
        re.compile(r"^(?:File|Directory|Path) '(.*)' is not executable\.$", re.S),
        lambda m: f"« {m[1]} » n'est pas exécutable",
    ),
    (
        re.compile(r"^'(.*)' is not a valid integer(?: range)?\.$", re.S),
        lambda m: f"« {m[1]} » n'est pas un nombre entier",
    ),
    (
        re.compile(r"^'(.*)' is not a valid float(?: range)?\.$", re.S),
        lambda m: f"« {m[1]} » n'est pas un nombre",
    ),
    (
        re.compile(r"^'(.*)' is not a valid boolean\.$", re.S),
        lambda m: f"« {m[1]} » n'est ni oui ni non",
    ),
    (
        re.compile(r"^(-?\d+(?:\.\d+)?) is not in the range (.*)\.$", re.S),
        lambda m: f"{m[1]} est hors des limites ({m[2]})",
    ),
    (
        re.compile(r"^'(.*)' is not(?: one of)? (.*)\.$", re.S),
        lambda m: f"« {m[1]} » n'est pas une valeur possible (valeurs : {_choices(m[2])})",
    ),
    (
        re.compile(r"^'(.*)' does not match the formats? (.*)\.$", re.S),
        lambda m: f"« {m[1]} » ne suit pas le format attendu ({m[2]})",
    ),
    (
        re.compile(r"^'(.*)': (.*)$", re.S),
        lambda m: f"« {m[1]} » : {_strerror(m[2])}",
    ),
]

#: The operating system's messages met by click's ``File`` type, in French.
_STRERRORS = {
    "No such file or directory": "fichier ou dossier introuvable",
    "Is a directory": "c'est un dossier, pas un fichier",
    "Permission denied": "accès refusé (droits insuffisants)",
    "Not a directory": "un élément du chemin n'est pas un dossier",
}

_ERRNO_TEXT = {
    errno.ENOENT: "fichier ou dossier introuvable",
    errno.EISDIR: "c'est un dossier, pas un fichier",
    errno.ENOTDIR: "un élément du chemin n'est pas un dossier",
    errno.EACCES: "accès refusé (droits insuffisants)",
    errno.EPERM: "opération non permise",
    errno.ENOSPC: "plus de place sur le disque",
    errno.EROFS: "système de fichiers en lecture seule",
    errno.EEXIST: "existe déjà",
    errno.EADDRINUSE: "adresse déjà utilisée",
    errno.EADDRNOTAVAIL: "adresse d'écoute inconnue sur cette machine",
    errno.ECONNREFUSED: "connexion refusée",
}


def _choices(text: str) -> str:
    return ", ".join(part.strip().strip("'") for part in text.split(","))


def _strerror(text: str) -> str:
    return _STRERRORS.get(text.strip(), text)


def _inner(message: str) -> str:
    for pattern, translate in _TYPE_MESSAGES:
        found = pattern.match(message)
        if found is not None:
            return translate(found)
    return message


def _param_name(error: click.UsageError) -> str:
    param = getattr(error, "param", None)
    hint = getattr(error, "param_hint", None)
    if isinstance(hint, str) and hint:
        return hint
    if isinstance(hint, Sequence) and hint:
        return " / ".join(str(item) for item in hint)
    if isinstance(param, click.Option) and param.opts:
        return " / ".join(param.opts)
    if isinstance(param, click.Parameter) and param.name:
        return param.human_readable_name
    return ""


def _usage(error: click.UsageError) -> str:
    name = _param_name(error)
    if isinstance(error, click.exceptions.NoSuchOption):
        text = f"option inconnue : {error.option_name}"
        if error.possibilities:
            text += f" (vouliez-vous dire {', '.join(sorted(error.possibilities))} ?)"
        return text
    if isinstance(error, click.exceptions.BadOptionUsage):
        if "requires an argument" in error.message:
            return f"l'option {error.option_name} attend une valeur"
        if "does not take a value" in error.message:
            return f"l'option {error.option_name} ne prend pas de valeur"
        return f"option {error.option_name} mal employée"
    if isinstance(error, click.exceptions.MissingParameter):
        if isinstance(error.param, click.Argument):
            return f"argument {name} manquant"
        if isinstance(error.param, click.Option):
            return f"option {name} obligatoire"
        return f"paramètre {name} manquant"
    if isinstance(error, click.BadParameter):
        inner = _inner(error.message)
        return f"valeur invalide pour {name} : {inner}" if name else f"valeur invalide : {inner}"
    message = error.message
    found = re.match(r"^No such command '(.*)'\.$", message)
    if found:
        return f"commande inconnue : {found[1]}"
    found = re.match(r"^Got unexpected extra arguments? \((.*)\)$", message)
    if found:
        return f"argument(s) en trop : {found[1]}"
    if message == "Missing command.":
        return "commande manquante"
    found = re.match(r"^Argument '(.*)' takes (\d+) values\.$", message)
    if found:
        return f"l'argument {found[1]} attend {found[2]} valeurs"
    return message


def french_message(error: click.ClickException) -> str:
    """One French line for a click error (usage errors end with where to find help)."""
    if not isinstance(error, click.UsageError):
        return error.format_message()
    text = _usage(error)
    if error.ctx is not None:
        text += f"\nAide : {error.ctx.command_path} --help"
    return text


def os_error_message(error: OSError) -> str:
    """An operating system error in French, naming the file when there is one."""
    reason = _ERRNO_TEXT.get(error.errno or 0) or error.strerror or str(error)
    if error.filename is not None:
        return f"{error.filename} : {reason}"
    return reason

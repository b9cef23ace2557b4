"""Jinja2 rendering of every mail and page of the daemon, from the admin's or the shipped templates.

At the package root: statement delivery, partner mails, web pages and commands all render.

Lookup order: the admin's ``templates.custom_dir`` first, then the templates shipped with the
package (:func:`releves_mailer.resources.templates_dir`), so an admin overrides one file by
dropping a file of the same relative path (``mail/statement.txt``) in their folder.

A mail is three files named after its purpose: ``mail/<name>.subject.txt`` (one line; line
breaks are folded into spaces), ``mail/<name>.txt`` (the text body) and ``mail/<name>.html``
(the HTML alternative, optional). Pages are ``web/<name>.html``. Only ``.html`` templates are
autoescaped; every template runs with :class:`jinja2.StrictUndefined`, so a missing variable is
an error, never a blank in a mail. ``trim_blocks`` and ``lstrip_blocks`` are on, so a
``{% if %}`` line of a text template leaves no blank line behind.

Filters: ``date_fr`` (``26/11/2026``), ``datetime_fr`` (``26/11/2026 à 00:10``, Paris time),
``montant`` (``amount|montant(currency)``: int minor units -> ``1 234,56 EUR``), ``iban``
(groups of four), ``taille`` (``25,3 Ko``) and ``type_compte`` (``checking`` -> ``Compte
courant``).

Templates are read once and cached; :meth:`Renderer.reload` (SIGHUP) re-reads them, after
compiling every template so that a broken override is refused and the previous set kept.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import jinja2

from releves_mailer.account_types import account_type_fr
from releves_mailer.cfonb import format_amount, minor_unit
from releves_mailer.clock import PARIS
from releves_mailer.resources import templates_dir

if TYPE_CHECKING:
    from releves_mailer.config import Config

__all__ = [
    "NBSP",
    "RenderError",
    "RenderedMail",
    "Renderer",
    "format_date_fr",
    "format_datetime_fr",
    "format_iban",
    "format_montant",
    "format_taille",
]

#: Non-breaking space: thousands separator and space before the currency code.
NBSP: Final = "\u00a0"


class RenderError(Exception):
    """A template is missing, does not compile or uses an unknown variable (French message)."""


@dataclass(frozen=True, slots=True)
class RenderedMail:
    """The rendered parts of one mail: a one-line subject, a text body and an HTML body."""

    subject: str
    text: str
    html: str | None


def format_date_fr(value: dt.date) -> str:
    """``date(2026, 11, 26)`` -> ``'26/11/2026'``; an aware datetime is read in Paris time."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(PARIS)
        value = value.date()
    if not isinstance(value, dt.date):
        raise TypeError(f"date_fr expects a date, not {type(value).__name__}")
    return f"{value.day:02d}/{value.month:02d}/{value.year:04d}"


def format_datetime_fr(value: dt.datetime) -> str:
    """An aware datetime as Paris wall time: ``'26/11/2026 à 00:10'``."""
    if not isinstance(value, dt.datetime):
        raise TypeError(f"datetime_fr expects a datetime, not {type(value).__name__}")
    if value.tzinfo is not None:
        value = value.astimezone(PARIS)
    return f"{format_date_fr(value.date())} à {value.hour:02d}:{value.minute:02d}"


def format_montant(amount: int, currency: str) -> str:
    """Minor units as French money text: ``format_montant(123456, 'EUR')`` -> ``'1 234,56 EUR'``.

    The decimals are the currency's ISO 4217 minor unit (JPY 0, EUR 2, KWD 3); the thousands
    separator and the space before the code are non-breaking spaces. The digits come from
    :func:`releves_mailer.cfonb.format_amount`, which refuses a ``float`` (or a ``bool``).
    """
    text = format_amount(amount, minor_unit(currency), thousands=NBSP)
    return f"{text}{NBSP}{currency}"


def format_taille(size: int) -> str:
    """A file size in French units: ``864 o``, ``25,3 Ko``, ``2,1 Mo`` (1 Ko = 1024 o)."""
    if type(size) is not int or size < 0:
        raise TypeError(f"taille expects a non-negative int, not {size!r}")
    if size < 1024:
        return f"{size}{NBSP}o"
    for unit, scale in (("Ko", 1024), ("Mo", 1024**2), ("Go", 1024**3)):
        tenths = (size * 10 + scale // 2) // scale
        if tenths < 10240 or unit == "Go":
            units, tenth = divmod(tenths, 10)
            return f"{units},{tenth}{NBSP}{unit}"
    raise AssertionError("unreachable")


def format_iban(iban: str) -> str:
    """An IBAN in groups of four for reading: ``'FR76 3000 6000 0112 3456 7890 189'``."""
    compact = "".join(iban.split()).upper()
    return " ".join(compact[index : index + 4] for index in range(0, len(compact), 4))


_FILTERS: Final[Mapping[str, Any]] = {
    "date_fr": format_date_fr,
    "datetime_fr": format_datetime_fr,
    "montant": format_montant,
    "iban": format_iban,
    "taille": format_taille,
    "type_compte": account_type_fr,
}


class Renderer:
    """The daemon's one Jinja2 environment: admin overrides first, shipped templates second."""

    def __init__(self, custom_dir: Path | None = None, *, shipped_dir: Path | None = None) -> None:
        self._custom_dir = custom_dir
        self._shipped_dir = shipped_dir if shipped_dir is not None else templates_dir()
        self._lock = threading.Lock()
        self._env = self._build()

    @classmethod
    def from_config(cls, config: Config) -> Renderer:
        """Use ``templates.custom_dir`` of the config (relative to the data directory)."""
        custom = config.templates.custom_dir
        return cls(config.path(custom) if custom is not None else None)

    @property
    def search_path(self) -> tuple[Path, ...]:
        """The folders looked in, first match wins."""
        if self._custom_dir is None:
            return (self._shipped_dir,)
        return (self._custom_dir, self._shipped_dir)

    def _build(self) -> jinja2.Environment:
        for folder in self.search_path:
            if not folder.is_dir():
                raise RenderError(f"dossier de modèles introuvable : {folder}")
        loader = jinja2.ChoiceLoader(
            [jinja2.FileSystemLoader(str(folder), encoding="utf-8") for folder in self.search_path]
        )
        env = jinja2.Environment(
            loader=loader,
            undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html",), default_for_string=False, default=False
            ),
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            # Templates change only on reload (SIGHUP): no stat() of every file at each mail.
            auto_reload=False,
            cache_size=-1,
        )
        env.filters.update(_FILTERS)
        return env

    def check(self) -> list[str]:
        """Compile every ``mail/`` and ``web/`` template; return their names.

        Raises :class:`RenderError` naming the first template that does not compile, so a
        broken override is caught at start or reload rather than when a mail is due.
        """
        return self._compile_all(self._env)

    @staticmethod
    def _compile_all(env: jinja2.Environment) -> list[str]:
        names = env.list_templates(filter_func=lambda name: name.startswith(("mail/", "web/")))
        for name in names:
            try:
                env.get_template(name)
            except jinja2.TemplateSyntaxError as error:
                raise RenderError(
                    f"modèle « {name} » invalide, ligne {error.lineno} : {error.message}"
                ) from error
        return names

    def reload(self, custom_dir: Path | None = None) -> None:
        """Re-read the templates (SIGHUP), optionally from a new custom folder.

        The new set is built and compiled first; on error the current one stays in use and
        :class:`RenderError` is raised.
        """
        with self._lock:
            previous = self._custom_dir
            if custom_dir is not None:
                self._custom_dir = custom_dir
            try:
                env = self._build()
                self._compile_all(env)
            except RenderError:
                self._custom_dir = previous
                raise
            self._env = env

    def _render(self, name: str, context: Mapping[str, Any]) -> str:
        env = self._env
        try:
            return env.get_template(name).render(context)
        except jinja2.TemplateNotFound:
            raise RenderError(f"modèle « {name} » introuvable") from None
        except jinja2.UndefinedError as error:
            raise RenderError(f"modèle « {name} » : variable inconnue ({error.message})") from error
        except jinja2.TemplateSyntaxError as error:
            raise RenderError(
                f"modèle « {name} » invalide, ligne {error.lineno} : {error.message}"
            ) from error

    def has_template(self, name: str) -> bool:
        try:
            self._env.get_template(name)
        except jinja2.TemplateNotFound:
            return False
        return True

    def render_mail(self, name: str, context: Mapping[str, Any]) -> RenderedMail:
        """Render ``mail/<name>.subject.txt``, ``mail/<name>.txt`` and ``mail/<name>.html``.

        The subject is folded to one line (no header injection through a line break); the
        HTML part is ``None`` when no ``.html`` template exists for ``name``.
        """
        subject = " ".join(self._render(f"mail/{name}.subject.txt", context).split())
        text = self._render(f"mail/{name}.txt", context)
        html_name = f"mail/{name}.html"
        html = self._render(html_name, context) if self.has_template(html_name) else None
        return RenderedMail(subject=subject, text=text, html=html)

    def render_page(self, name: str, context: Mapping[str, Any]) -> str:
        """Render the page ``web/<name>.html``."""
        return self._render(f"web/{name}.html", context)

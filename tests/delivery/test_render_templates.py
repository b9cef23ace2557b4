"""The Jinja2 renderer: French filters, admin overrides, strictness, escaping, reload."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from releves_mailer.render import (
    NBSP,
    Renderer,
    RenderError,
    format_date_fr,
    format_datetime_fr,
    format_iban,
    format_montant,
    format_taille,
)
from releves_mailer.resources import templates_dir


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (0, "EUR", "0,00 EUR"),
        (5, "EUR", "0,05 EUR"),
        (123456, "EUR", "1 234,56 EUR"),
        (-123456, "EUR", "-1 234,56 EUR"),
        (123456789012, "EUR", "1 234 567 890,12 EUR"),
        (-99, "EUR", "-0,99 EUR"),
        (0, "JPY", "0 JPY"),
        (1234567, "JPY", "1 234 567 JPY"),
        (-1000, "JPY", "-1 000 JPY"),
        (0, "KWD", "0,000 KWD"),
        (1234567, "KWD", "1 234,567 KWD"),
        (-5, "KWD", "-0,005 KWD"),
    ],
)
def test_montant_uses_the_currency_minor_unit(amount, currency, expected):
    assert format_montant(amount, currency) == expected.replace(" ", NBSP)


def test_montant_separators_are_non_breaking():
    text = format_montant(123456, "EUR")
    assert " " not in text
    assert text == "1\u00a0234,56\u00a0EUR"


@pytest.mark.parametrize("amount", [12.5, Decimal("12.50"), True, "1234"])
def test_montant_refuses_anything_but_int(amount):
    with pytest.raises(TypeError):
        format_montant(amount, "EUR")


def test_montant_refuses_unknown_currency():
    with pytest.raises(ValueError, match="XXX"):
        format_montant(1, "XXX")


def test_dates():
    assert format_date_fr(dt.date(2026, 11, 26)) == "26/11/2026"
    assert format_date_fr(dt.date(2026, 1, 2)) == "02/01/2026"
    # 23:30 UTC on the 25th is already the 26th in Paris.
    late = dt.datetime(2026, 11, 25, 23, 30, tzinfo=dt.UTC)
    assert format_date_fr(late) == "26/11/2026"
    assert format_datetime_fr(late) == "26/11/2026 à 00:30"
    with pytest.raises(TypeError):
        format_date_fr("2026-11-26")


def test_iban_and_size():
    assert format_iban("fr7613026240019300290000029") == "FR76 1302 6240 0193 0029 0000 029"
    assert format_taille(864) == f"864{NBSP}o"
    assert format_taille(25_900) == f"25,3{NBSP}Ko"
    assert format_taille(2 * 1024 * 1024 + 110_000) == f"2,1{NBSP}Mo"


def _write(folder, name, text):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_shipped_templates_compile():
    names = Renderer().check()
    assert {"mail/statement.subject.txt", "mail/statement.txt", "mail/statement.html"} <= set(names)
    assert Renderer().search_path == (templates_dir(),)


def test_custom_dir_overrides_one_file_and_falls_back_for_the_rest(tmp_path):
    _write(tmp_path, "mail/demo.subject.txt", "Sujet du portail {{ name }}\n")
    _write(tmp_path, "mail/demo.txt", "Texte du portail {{ name }}\n")
    shipped = tmp_path / "shipped"
    _write(shipped, "mail/demo.subject.txt", "Sujet livré {{ name }}")
    _write(shipped, "mail/demo.txt", "Texte livré {{ name }}")
    _write(shipped, "mail/demo.html", "<p>HTML livré {{ name }}</p>")
    custom = tmp_path / "custom"
    _write(custom, "mail/demo.subject.txt", "Sujet de l'admin {{ name }}")
    renderer = Renderer(custom, shipped_dir=shipped)
    assert renderer.search_path == (custom, shipped)
    mail = renderer.render_mail("demo", {"name": "ACME"})
    assert mail.subject == "Sujet de l'admin ACME"
    assert mail.text == "Texte livré ACME"
    assert mail.html == "<p>HTML livré ACME</p>"


def test_subject_is_folded_to_one_line(tmp_path):
    _write(tmp_path, "mail/x.subject.txt", "Ligne une\nLigne\r\ndeux  {{ v }}\n")
    _write(tmp_path, "mail/x.txt", "corps")
    mail = Renderer(tmp_path, shipped_dir=tmp_path).render_mail("x", {"v": "\ninjecté: oui"})
    assert mail.subject == "Ligne une Ligne deux injecté: oui"
    assert mail.html is None


def test_strict_undefined_catches_a_missing_variable(tmp_path):
    _write(tmp_path, "mail/x.subject.txt", "Relevé {{ periodicite }}")
    _write(tmp_path, "mail/x.txt", "Bonjour {{ company }}")
    renderer = Renderer(tmp_path, shipped_dir=tmp_path)
    with pytest.raises(RenderError, match=r"mail/x\.txt.*company"):
        renderer.render_mail("x", {"periodicite": "QUOTIDIEN"})


def test_shipped_statement_needs_all_its_variables():
    with pytest.raises(RenderError, match="statement"):
        Renderer().render_mail("statement", {"company": "ACME"})


def test_missing_template_and_missing_folder(tmp_path):
    with pytest.raises(RenderError, match="introuvable"):
        Renderer(tmp_path, shipped_dir=tmp_path).render_mail("absent", {})
    with pytest.raises(RenderError, match=r"dossier de modèles introuvable : .*nulle-part"):
        Renderer(tmp_path / "nulle-part")


def test_autoescape_only_for_html(tmp_path):
    _write(tmp_path, "mail/x.subject.txt", "{{ v }}")
    _write(tmp_path, "mail/x.txt", "{{ v }}")
    _write(tmp_path, "mail/x.html", "<p>{{ v }}</p>")
    _write(tmp_path, "web/page.html", "<h1>{{ v }}</h1>")
    renderer = Renderer(tmp_path, shipped_dir=tmp_path)
    mail = renderer.render_mail("x", {"v": "Dupont & <Fils>"})
    assert mail.subject == "Dupont & <Fils>"
    assert mail.text == "Dupont & <Fils>"
    assert mail.html == "<p>Dupont &amp; &lt;Fils&gt;</p>"
    assert renderer.render_page("page", {"v": "<script>"}) == "<h1>&lt;script&gt;</h1>"


def test_filters_are_available_in_templates(tmp_path):
    _write(tmp_path, "mail/x.subject.txt", "{{ d|date_fr }}")
    _write(tmp_path, "mail/x.txt", "{{ a|montant('EUR') }} {{ i|iban }}")
    renderer = Renderer(tmp_path, shipped_dir=tmp_path)
    mail = renderer.render_mail("x", {"d": dt.date(2026, 11, 26), "a": 100, "i": "FR7612"})
    assert mail.subject == "26/11/2026"
    assert mail.text == f"1,00{NBSP}EUR FR76 12"


def test_reload_reads_changed_templates(tmp_path):
    _write(tmp_path, "mail/x.subject.txt", "avant")
    _write(tmp_path, "mail/x.txt", "corps")
    renderer = Renderer(tmp_path, shipped_dir=tmp_path)
    assert renderer.render_mail("x", {}).subject == "avant"
    _write(tmp_path, "mail/x.subject.txt", "après")
    assert renderer.render_mail("x", {}).subject == "avant"  # cached until SIGHUP
    renderer.reload()
    assert renderer.render_mail("x", {}).subject == "après"


def test_reload_refuses_a_broken_template_and_keeps_the_old_set(tmp_path):
    _write(tmp_path, "mail/x.subject.txt", "bon")
    _write(tmp_path, "mail/x.txt", "corps")
    renderer = Renderer(tmp_path, shipped_dir=tmp_path)
    renderer.render_mail("x", {})
    _write(tmp_path, "mail/x.txt", "{% if %}")
    with pytest.raises(RenderError, match=r"mail/x\.txt.*ligne 1"):
        renderer.reload()
    assert renderer.render_mail("x", {}).text == "corps"


def test_reload_can_switch_custom_folder(tmp_path):
    first, second = tmp_path / "un", tmp_path / "deux"
    _write(first, "mail/x.subject.txt", "un")
    _write(second, "mail/x.subject.txt", "deux")
    _write(tmp_path / "livré", "mail/x.txt", "corps")
    renderer = Renderer(first, shipped_dir=tmp_path / "livré")
    renderer.reload(second)
    assert renderer.render_mail("x", {}).subject == "deux"
    with pytest.raises(RenderError):
        renderer.reload(tmp_path / "absent")
    assert renderer.search_path[0] == second


def test_from_config_uses_custom_dir(tmp_path):
    from releves_mailer.config import parse_config

    _write(tmp_path, "modeles/mail/x.subject.txt", "depuis la config")
    config = parse_config(
        {"portal": {"data_dir": str(tmp_path)}, "templates": {"custom_dir": "modeles"}},
        file=None,
        environ={},
    )
    renderer = Renderer.from_config(config)
    assert renderer.search_path[0] == tmp_path / "modeles"
    assert renderer._render("mail/x.subject.txt", {}) == "depuis la config"

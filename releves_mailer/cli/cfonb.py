"""The ``cfonb`` command group: check a CFONB120 file against the standard, show its statements."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import click

from releves_mailer.cfonb import CURRENCIES, Deviation, Movement, ReadResult, Statement, parse
from releves_mailer.cfonb.amounts import format_amount
from releves_mailer.cfonb.complements import QUALIFIERS
from releves_mailer.cfonb.opcodes import OP_CODES

__all__ = ["cfonb"]


def _load(path: Path) -> str:
    """The text of a file: UTF-8, else Latin-1 (LCL sends accented Latin-1)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise click.ClickException(f"{path} : fichier introuvable") from None
    except IsADirectoryError:
        raise click.ClickException(f"{path} : c'est un répertoire, pas un fichier") from None
    except PermissionError:
        raise click.ClickException(f"{path} : lecture non autorisée") from None
    except OSError as error:
        raise click.ClickException(f"{path} : lecture impossible ({error})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _day(value: date) -> str:
    return value.strftime("%d/%m/%Y")


def _money(amount: int, currency: str) -> str:
    decimals = CURRENCIES.get(currency)
    if decimals is None:
        return f"{amount} unités {currency}"
    return f"{format_amount(amount, decimals)} {currency}"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count > 1 else ''}"


@click.group(name="cfonb")
def cfonb() -> None:
    """Relevés CFONB120 : contrôle à la lettre de la norme et affichage."""


@cfonb.command(name="check")
@click.argument(
    "files", nargs=-1, required=True, metavar="FICHIER...", type=click.Path(path_type=Path)
)
def check_command(files: tuple[Path, ...]) -> None:
    """Contrôle chaque FICHIER à la lettre de la norme CFONB120 et liste chaque écart.

    Chaque écart est affiché sous la forme FICHIER:LIGNE:COLONNE: message. Code de
    sortie 0 si tous les fichiers sont conformes, 1 sinon.
    """
    texts = [(path, _load(path)) for path in files]
    total = 0
    for path, text in texts:
        result = parse(text)
        for deviation in result.deviations:
            click.echo(f"{path}:{deviation.line}:{deviation.column}: {deviation.message}")
        total += len(result.deviations)
        movements = sum(len(s.movements) for s in result.statements)
        summary = f"{_plural(len(result.statements), 'relevé')}, {_plural(movements, 'mouvement')}"
        if result.deviations:
            count = _plural(len(result.deviations), "écart")
            click.echo(f"{path} : non conforme, {count} ({summary} lus)", err=True)
        else:
            click.echo(f"{path} : conforme ({summary})", err=True)
    if total:
        raise click.exceptions.Exit(1)


def _movement_json(m: Movement, decimals: int | None) -> dict[str, Any]:
    return {
        "date_comptable": m.booking_date.isoformat(),
        "date_valeur": (m.value_date or m.booking_date).isoformat(),
        "montant": _amount_json(m.amount, decimals),
        "libelle": m.label,
        "code_operation": m.op_code,
        "libelle_code_operation": OP_CODES.get(m.op_code),
        "numero_ecriture": m.entry_number,
        "code_rejet": m.reject_code,
        "code_interne": m.internal_code,
        "exonere": m.exempt,
        "indisponible": m.unavailable,
        "reference": m.reference,
        "complements": [
            {
                "qualifiant": x.qualifier,
                "signification": QUALIFIERS.get(x.qualifier),
                "donnees": x.data,
            }
            for x in m.complements
        ],
    }


def _amount_json(amount: int, decimals: int | None) -> dict[str, Any]:
    value = None if decimals is None else format_amount(amount, decimals, separator=".")
    return {"unites_mineures": amount, "decimales": decimals, "valeur": value}


def _statement_json(s: Statement) -> dict[str, Any]:
    decimals = CURRENCIES.get(s.account.currency)
    return {
        "compte": {
            "code_banque": s.account.bank_code,
            "code_guichet": s.account.branch_code,
            "numero_compte": s.account.number,
            "devise": s.account.currency,
        },
        "date_ancien_solde": s.opening_date.isoformat(),
        "ancien_solde": _amount_json(s.opening_balance, decimals),
        "date_nouveau_solde": s.closing_date.isoformat(),
        "nouveau_solde": _amount_json(s.closing_balance, decimals),
        "equilibre": s.is_balanced,
        "mouvements": [_movement_json(m, decimals) for m in s.movements],
    }


def _deviation_json(d: Deviation) -> dict[str, Any]:
    return {"ligne": d.line, "colonne": d.column, "message": d.message, "bloquant": d.fatal}


def _show_text(result: ReadResult) -> None:
    for index, s in enumerate(result.statements):
        if index:
            click.echo()
        account, currency = s.account, s.account.currency
        click.echo(
            f"Compte {account.bank_code} {account.branch_code} {account.number} ({currency})"
            f" — du {_day(s.opening_date)} au {_day(s.closing_date)}"
        )
        click.echo(
            f"  Ancien solde au {_day(s.opening_date)} : {_money(s.opening_balance, currency)}"
        )
        for m in s.movements:
            value = m.value_date or m.booking_date
            click.echo(
                f"  {_day(m.booking_date)}  val. {_day(value)}  {m.op_code:2}  {m.entry_number:7}"
                f"  {m.label:<40} {_money(m.amount, currency):>24}"
            )
            for x in m.complements:
                meaning = QUALIFIERS.get(x.qualifier, "qualifiant hors norme")
                click.echo(f"      {x.qualifier} ({meaning}) : {' '.join(x.data.split())}")
        click.echo(
            f"  Nouveau solde au {_day(s.closing_date)} : {_money(s.closing_balance, currency)}"
            f" ({_plural(len(s.movements), 'mouvement')})"
        )


@cfonb.command(name="show")
@click.argument("file", metavar="FICHIER", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Sortie JSON (montants en unités mineures).")
def show_command(file: Path, as_json: bool) -> None:
    """Affiche les relevés de FICHIER : compte, dates, soldes, mouvements et compléments.

    Lit aussi les variantes des banques (CRLF, sans séparateur, minuscules...). Code de
    sortie 1 si une partie du fichier n'a pas pu être lue.
    """
    result = parse(_load(file))
    if as_json:
        document = {
            "fichier": str(file),
            "releves": [_statement_json(s) for s in result.statements],
            "ecarts": [_deviation_json(d) for d in result.deviations],
        }
        click.echo(json.dumps(document, ensure_ascii=False, indent=2))
    else:
        _show_text(result)
    fatal = result.fatal
    for deviation in fatal:
        click.echo(f"{file}:{deviation.line}:{deviation.column}: {deviation.message}", err=True)
    if fatal:
        verb = "empêchent" if len(fatal) > 1 else "empêche"
        raise click.ClickException(
            f"{file} : {_plural(len(fatal), 'écart')} {verb} de lire une partie du fichier"
        )
    if result.deviations and not as_json:
        count = _plural(len(result.deviations), "écart")
        click.echo(f"{file} : {count} à la norme (voir « cfonb check »)", err=True)

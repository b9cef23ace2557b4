"""``releves-mailer tokens``: the secure links of a redevable (list, send, open for oneself)."""

from __future__ import annotations

import datetime as dt

import click

from releves_mailer.cli.common import (
    AppContext,
    async_command,
    echo_json,
    link_service,
    open_database,
)
from releves_mailer.clock import PARIS, SystemClock
from releves_mailer.partner.links import IssuedLink, LinkOrigin, LinkService
from releves_mailer.portfolio.redevables import find_redevable
from releves_mailer.vocabulary import french

__all__ = ["echo_issued", "link_service", "tokens"]


def _when(moment: dt.datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(PARIS).strftime("%d/%m/%y %H:%M")


@click.group(name="tokens")
def tokens() -> None:
    """Liens sécurisés (jetons) d'ajout de comptes et de mise à jour des identifiants."""


@tokens.command(name="list")
@click.argument("siren")
@click.option("--account", "login", help="Compte portail du redevable (si le SIREN est ambigu).")
@click.option("--json", "as_json", is_flag=True, help="Sortie JSON.")
@async_command
async def list_tokens(app: AppContext, siren: str, login: str | None, as_json: bool) -> None:
    """Les 10 derniers jetons transmis au redevable."""
    async with open_database(app.config) as database, database.session() as session:
        redevable = await find_redevable(session, siren, login)
        rows = await LinkService.recent(session, redevable.id, SystemClock().now())
    if as_json:
        echo_json(
            [
                {
                    "id": row.id,
                    "type": french(row.kind),
                    "type_libelle": row.kind_label,
                    "connexion": row.connection_id,
                    "date_creation": row.created_at,
                    "date_expiration": row.expires_at,
                    "date_utilisation": row.used_at,
                    "destinataire": row.recipient,
                    "etat": french(row.state),
                    "origine": french(LinkOrigin(row.created_by)),
                    "motif": row.reason,
                }
                for row in rows
            ]
        )
        return
    if not rows:
        click.echo(f"Aucun jeton pour le redevable {redevable.siret} {redevable.company_name}.")
        return
    click.echo(
        "La liste suivante présente les 10 derniers jetons transmis par mail au redevable pour "
        "l'ajout / mise à jour d'identifiants bancaires :"
    )
    for row in rows:
        click.echo(
            f"{row.kind_label:<60}  {_when(row.created_at):<14}  {_when(row.expires_at):<14}  "
            f"{_when(row.used_at):<14}  {row.recipient:<30}  {row.state_label}"
        )


def echo_issued(issued: IssuedLink, mailed: bool) -> None:
    link = issued.link
    expires = _when(link.expires_at)
    if mailed:
        click.echo(
            f"Lien sécurisé transmis à {link.recipient} (valide jusqu'au {expires}) ; "
            "le mail part avec le démon."
        )
    else:
        click.echo(f"Lien sécurisé à ouvrir vous-même (valide jusqu'au {expires}) :")
        click.echo(issued.url)


@tokens.command(name="send")
@click.argument("siren")
@click.option("--connection", "connection_id", type=int, help="Connexion à mettre à jour.")
@click.option("--account", "login", help="Compte portail du redevable (si le SIREN est ambigu).")
@async_command
async def send(app: AppContext, siren: str, connection_id: int | None, login: str | None) -> None:
    """Envoie au redevable un lien d'ajout de comptes (ou de mise à jour avec --connection)."""
    async with open_database(app.config) as database:
        async with database.session() as session:
            redevable = await find_redevable(session, siren, login)
        issued = await link_service(app.config, database).send(
            redevable.id, connection_id=connection_id
        )
    echo_issued(issued, mailed=True)


@tokens.command(name="open")
@click.argument("siren")
@click.option("--connection", "connection_id", type=int, help="Connexion à mettre à jour.")
@click.option("--account", "login", help="Compte portail du redevable (si le SIREN est ambigu).")
@async_command
async def open_link(
    app: AppContext, siren: str, connection_id: int | None, login: str | None
) -> None:
    """Donne un lien à ouvrir soi-même quand le redevable est la société du compte (4.1.1)."""
    async with open_database(app.config) as database:
        async with database.session() as session:
            redevable = await find_redevable(session, siren, login)
        issued = await link_service(app.config, database).open_for_holder(
            redevable.id, connection_id=connection_id
        )
    echo_issued(issued, mailed=False)

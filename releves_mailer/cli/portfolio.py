"""Commands on portal accounts (``accounts``) and redevables (``redevables``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from releves_mailer.cli.common import AppContext, async_command, echo_json, open_services
from releves_mailer.cli.tokens import echo_issued
from releves_mailer.errors import UserError
from releves_mailer.portfolio import accounts as account_service
from releves_mailer.portfolio import redevables as redevable_service
from releves_mailer.portfolio.boxes import box_address
from releves_mailer.portfolio.redevables import FIELD_LABELS, RedevableSearch
from releves_mailer.services import Services
from releves_mailer.services.portfolio import AccountView, ReceptionMode, RedevableView
from releves_mailer.vocabulary import french

__all__ = ["accounts", "redevables"]

RECEPTION = click.Choice([mode.value for mode in ReceptionMode])


def read_password(password_file: Path | None, *, confirm: bool = True) -> str:
    """The password from a file (its first line) or a hidden prompt, never from argv."""
    if password_file is not None:
        try:
            lines = password_file.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise UserError(f"{password_file} : lecture impossible ({error.strerror})") from None
        if not lines or not lines[0]:
            raise UserError(f"{password_file} : le fichier de mot de passe est vide")
        return lines[0]
    # click's own confirmation would answer a mismatch in English: asked here instead.
    while True:
        value: str = click.prompt("Mot de passe", hide_input=True, err=True)
        if not confirm or value == click.prompt(
            "Confirmez le mot de passe", hide_input=True, err=True
        ):
            return value
        click.echo("Les deux mots de passe diffèrent, recommencez.", err=True)


def account_json(account: AccountView, parent_login: str | None) -> dict[str, Any]:
    return {
        "login": account.login,
        "raison_sociale": account.company_name,
        "siret": account.siret,
        "responsable": account.contact_name,
        "email": account.email,
        "telephone": account.phone,
        "profil": "principal" if account.is_primary else "secondaire",
        "compte_principal": parent_login,
        "abonne": account.subscribed,
        "cgau_acceptees_le": account.terms_accepted_at,
        "reception": french(account.reception_mode),
        "date_creation": account.created_at,
    }


def redevable_json(redevable: RedevableView) -> dict[str, Any]:
    return {
        "id": redevable.id,
        "compte": redevable.account_login,
        "siren": redevable.siren,
        "nic": redevable.nic,
        "siret": redevable.siret,
        "raison_sociale": redevable.company_name,
        "raison_sociale_suite": redevable.company_name_2,
        "email": redevable.email,
        "periodicite": redevable.periodicity.value,
        "mois": redevable.month,
        "jour": redevable.day,
        "calendrier": redevable.schedule,
        "saisie_deportee": redevable.remote_entry,
        "sans_lien_auto": redevable.no_auto_link,
        "avec_operations_en_attente": redevable.include_pending,
        "sans_mail_si_vide": redevable.skip_empty_mail,
        "actif": redevable.active,
        "date_desactivation": redevable.deactivated_at,
        "date_creation": redevable.created_at,
    }


async def resolve_account(services: Services, login: str | None) -> AccountView:
    """``--account LOGIN``, or the only account of the installation when there is one."""
    if login:
        return await services.portfolio.account(login)
    found = await services.portfolio.accounts()
    if len(found) == 1:
        return found[0]
    if not found:
        raise UserError("aucun compte : créez-en un avec « releves-mailer accounts add »")
    raise UserError("plusieurs comptes existent : précisez --account LOGIN")


# ---------------------------------------------------------------------------- accounts


@click.group()
def accounts() -> None:
    """Comptes du portail (principaux et secondaires)."""


@accounts.command(name="add")
@click.argument("login")
@click.option("--siret", required=True, help="SIRET de l'entreprise titulaire du compte.")
@click.option("--name", "company_name", required=True, help="Raison sociale.")
@click.option("--email", required=True, help="E-mail de contact du responsable.")
@click.option("--contact", "contact_name", default="", help="Nom du responsable.")
@click.option("--phone", default="", help="Téléphone du responsable.")
@click.option("--parent", "parent_login", help="Compte principal (crée un compte secondaire).")
@click.option(
    "--reception",
    type=RECEPTION,
    default="default",
    show_default=True,
    help="Réception des relevés : none, default (boîte du compte), dedicated.",
)
@click.option(
    "--accept-cgau",
    is_flag=True,
    help="Souscrit au service en acceptant les CGAU (date enregistrée) ; leur texte : "
    "page /portail/cgau du portail.",
)
@click.option(
    "--password-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Fichier dont la première ligne est le mot de passe (sinon demandé).",
)
@click.option("--json", "as_json", is_flag=True, help="Sortie JSON.")
@async_command
async def accounts_add(
    app: AppContext,
    login: str,
    siret: str,
    company_name: str,
    email: str,
    contact_name: str,
    phone: str,
    parent_login: str | None,
    reception: str,
    accept_cgau: bool,
    password_file: Path | None,
    as_json: bool,
) -> None:
    """Crée un compte du portail et sa boîte aux lettres LOGIN@domaine."""
    password = read_password(password_file)
    data = account_service.AccountInput(
        login=login,
        company_name=company_name,
        siret=siret,
        email=email,
        contact_name=contact_name,
        phone=phone,
        parent_login=parent_login,
        reception_mode=ReceptionMode(reception),
    )
    async with open_services(app.config) as services:
        created = await services.portfolio.create_account(data, password, accept_terms=accept_cgau)
    account, parent = created.account, created.parent_login
    if as_json:
        echo_json(account_json(account, parent))
        return
    kind = f"secondaire de « {parent} »" if parent else "principal"
    click.echo(
        f"Compte {kind} « {account.login} » créé : boîte "
        f"{box_address(account.login, app.config.portal.domain)}"
    )


@accounts.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Sortie JSON.")
@async_command
async def accounts_list(app: AppContext, as_json: bool) -> None:
    """Liste les comptes du portail."""
    async with open_services(app.config) as services:
        found = await services.portfolio.accounts()
    logins = {account.id: account.login for account in found}
    rows = [account_json(a, logins.get(a.parent_id) if a.parent_id else None) for a in found]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("Aucun compte.")
    for row in rows:
        parent = row["compte_principal"]
        profile = f"secondaire de {parent}" if parent else "principal"
        click.echo(
            f"{row['login']:<20} {row['siret']}  {row['raison_sociale']:<35} "
            f"{profile}, réception {row['reception']}"
        )


@accounts.command(name="show")
@click.argument("login")
@click.option("--json", "as_json", is_flag=True, help="Sortie JSON.")
@async_command
async def accounts_show(app: AppContext, login: str, as_json: bool) -> None:
    """Affiche un compte du portail."""
    async with open_services(app.config) as services:
        detail = await services.portfolio.account_detail(login)
    row = account_json(detail.account, detail.parent_login)
    row["redevables"] = detail.redevables
    if as_json:
        echo_json(row)
        return
    labels = {
        "login": "Login",
        "raison_sociale": "Raison sociale",
        "siret": "SIRET",
        "responsable": "Responsable",
        "email": "Email",
        "telephone": "Téléphone",
        "profil": "Profil",
        "compte_principal": "Compte principal",
        "abonne": "Abonné",
        "cgau_acceptees_le": "CGAU acceptées le",
        "reception": "Réception des relevés",
        "date_creation": "Création",
        "redevables": "Redevables",
    }
    for key, label in labels.items():
        value = row[key]
        shown = (
            ""
            if value is None
            else ("oui" if value is True else "non" if value is False else str(value))
        )
        click.echo(f"{label:<22} {shown}")


@accounts.command(name="passwd")
@click.argument("login")
@click.option(
    "--password-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Fichier dont la première ligne est le mot de passe (sinon demandé).",
)
@async_command
async def accounts_passwd(app: AppContext, login: str, password_file: Path | None) -> None:
    """Change le mot de passe d'un compte (et de sa boîte dédiée)."""
    password = read_password(password_file)
    async with open_services(app.config) as services:
        account = await services.portfolio.set_password(login, password)
    click.echo(f"Mot de passe de « {account.login} » changé.")


@accounts.command(name="edit")
@click.argument("login")
@click.option("--siret")
@click.option("--name", "company_name")
@click.option("--email")
@click.option("--contact", "contact_name")
@click.option("--phone")
@click.option("--reception", type=RECEPTION)
@click.option(
    "--accept-cgau",
    is_flag=True,
    help="Souscrit au service en acceptant les CGAU (texte : page /portail/cgau du portail).",
)
@async_command
async def accounts_edit(
    app: AppContext,
    login: str,
    siret: str | None,
    company_name: str | None,
    email: str | None,
    contact_name: str | None,
    phone: str | None,
    reception: str | None,
    accept_cgau: bool,
) -> None:
    """Modifie un compte du portail."""
    mode = ReceptionMode(reception) if reception else None
    changes = account_service.AccountChanges(
        company_name=company_name,
        siret=siret,
        email=email,
        contact_name=contact_name,
        phone=phone,
        reception_mode=mode,
    )
    async with open_services(app.config) as services:
        account = await services.portfolio.edit_account(login, changes, accept_terms=accept_cgau)
    click.echo(f"Compte « {account.login} » modifié.")


# -------------------------------------------------------------------------- redevables

PERIODICITIES = click.Choice(
    ["JOURNALIERE", "HEBDOMADAIRE", "MENSUELLE", "TRIMESTRIELLE", "SEMESTRIELLE", "ANNUELLE"],
    case_sensitive=False,
)
#: How an import issue on a SIRET already on the account says what would replace it.
UPDATE_REMEDY = "option --update pour le modifier"
ACCOUNT_OPTION = click.option(
    "--account", "account_login", help="Compte du portail (facultatif s'il n'y en a qu'un)."
)


def _raise_first(problems: list[UserError]) -> None:
    if problems:
        if len(problems) == 1:
            raise problems[0]
        raise UserError(
            " ; ".join(
                f"{FIELD_LABELS.get(p.field or '', p.field)} : {p.message}" for p in problems
            )
        )


@click.group()
def redevables() -> None:
    """Redevables (entreprises clientes dont les relevés sont collectés)."""


@redevables.command(name="add")
@ACCOUNT_OPTION
@click.option("--siren", required=True)
@click.option("--nic", default="")
@click.option("--name", "company_name", required=True, help="Raison sociale (35 caractères).")
@click.option("--name2", "company_name_2", default="", help="Suite de la raison sociale.")
@click.option("--email", default="", help="Obligatoire avec --remote-entry.")
@click.option("--periodicity", type=PERIODICITIES, required=True)
@click.option(
    "--month", type=int, help="Mois (TRIMESTRIELLE 1-3, SEMESTRIELLE 1-6, ANNUELLE 1-12)."
)
@click.option("--day", type=int, help="Jour (HEBDOMADAIRE 1=dimanche..7; 0 = fin du mois).")
@click.option(
    "--remote-entry/--direct-entry",
    default=False,
    help="Saisie des identifiants bancaires déportée chez le redevable.",
)
@click.option(
    "--no-auto-link",
    is_flag=True,
    help="Ne pas générer automatiquement le jeton (ni à la création avec --remote-entry, "
    "ni à la mise à jour des identifiants).",
)
@click.option(
    "--include-pending",
    is_flag=True,
    help="Inclut les transactions non consolidées (à venir) dans les relevés.",
)
@click.option("--skip-empty-mail", is_flag=True, help="N'envoie pas les relevés sans mouvement.")
@click.option("--json", "as_json", is_flag=True)
@async_command
async def redevables_add(
    app: AppContext,
    account_login: str | None,
    siren: str,
    nic: str,
    company_name: str,
    company_name_2: str,
    email: str,
    periodicity: str,
    month: int | None,
    day: int | None,
    remote_entry: bool,
    no_auto_link: bool,
    include_pending: bool,
    skip_empty_mail: bool,
    as_json: bool,
) -> None:
    """Crée un redevable ; avec --remote-entry, le lien de saisie lui est envoyé par mail."""
    data, problems = redevable_service.validate_redevable(
        siren=siren,
        nic=nic,
        company_name=company_name,
        company_name_2=company_name_2,
        email=email,
        periodicity=periodicity,
        month=month,
        day=day,
        remote_entry=remote_entry,
        no_auto_link=no_auto_link,
        include_pending=include_pending,
        skip_empty_mail=skip_empty_mail,
    )
    _raise_first(problems)
    assert data is not None
    async with open_services(app.config, links=True) as services:
        account = await resolve_account(services, account_login)
        redevable, sent = await services.portfolio.create_redevable(account.id, data)
    row = redevable_json(redevable)
    row["lien_envoye_a"] = sent[0].recipient if sent else None
    if as_json:
        echo_json(row)
        return
    click.echo(f"Redevable {row['siret']} « {row['raison_sociale']} » créé ({row['calendrier']}).")
    for issued in sent:
        echo_issued(issued, mailed=True)


@redevables.command(name="list")
@ACCOUNT_OPTION
@click.option("--siret", default="", help="SIRET ou début de SIRET.")
@click.option("--name", default="", help="Partie de la raison sociale.")
@click.option("--iban", default="", help="Partie de l'IBAN d'un de ses comptes bancaires.")
@click.option(
    "--state",
    "collection_state",
    type=click.Choice(["succes", "erreur", "aucune"]),
    help="État de la collecte : succes (connexions OK), erreur ou aucune (sans connexion).",
)
@click.option("--inactive", "include_inactive", is_flag=True, help="Inclut les désactivés.")
@click.option(
    "--secondaries",
    "include_secondaries",
    is_flag=True,
    help="Inclut les redevables des comptes secondaires (compte principal).",
)
@click.option("--limit", type=click.IntRange(1, 100000), default=1000, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0)
@click.option("--json", "as_json", is_flag=True)
@async_command
async def redevables_list(
    app: AppContext,
    account_login: str | None,
    siret: str,
    name: str,
    iban: str,
    collection_state: str | None,
    include_inactive: bool,
    include_secondaries: bool,
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    """Recherche des redevables (comme l'écran « Paramétrage »)."""
    criteria = RedevableSearch(
        siret=siret,
        name=name,
        iban=iban,
        collection_state=collection_state or "",
        include_inactive=include_inactive,
        include_secondaries=include_secondaries,
        limit=limit,
        offset=offset,
    )
    async with open_services(app.config) as services:
        account = await resolve_account(services, account_login)
        page = await services.portfolio.search(account, criteria)
    rows = [redevable_json(r) for r in page.rows]
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        prefix = f"{row['compte']:<15} " if include_secondaries else ""
        state = "" if row["actif"] else "  [désactivé]"
        click.echo(
            f"{prefix}{row['siret']:<14}  {row['raison_sociale']:<35} {row['calendrier']}{state}"
        )
    click.echo(f"{len(rows)} redevable(s) affiché(s) sur {page.total}.", err=True)


async def _find(services: Services, account_login: str | None, siret: str) -> RedevableView:
    account = await resolve_account(services, account_login)
    return await services.portfolio.redevable_by_siret(account, siret)


@redevables.command(name="show")
@click.argument("siret")
@ACCOUNT_OPTION
@click.option("--json", "as_json", is_flag=True)
@async_command
async def redevables_show(
    app: AppContext, siret: str, account_login: str | None, as_json: bool
) -> None:
    """Affiche un redevable (SIRET, ou SIREN s'il est sans ambiguïté)."""
    async with open_services(app.config) as services:
        row = redevable_json(await _find(services, account_login, siret))
    if as_json:
        echo_json(row)
        return
    for key, value in row.items():
        click.echo(f"{key:<16} {'' if value is None else value}")


@redevables.command(name="edit")
@click.argument("siret")
@ACCOUNT_OPTION
@click.option("--siren")
@click.option("--nic")
@click.option("--name", "company_name")
@click.option("--name2", "company_name_2")
@click.option("--email")
@click.option("--periodicity", type=PERIODICITIES)
@click.option("--month", type=int)
@click.option("--day", type=int)
@click.option("--remote-entry/--direct-entry", default=None)
@click.option("--no-auto-link/--auto-link", default=None)
@click.option("--include-pending/--booked-only", default=None)
@click.option("--skip-empty-mail/--mail-empty", default=None)
@async_command
async def redevables_edit(
    app: AppContext,
    siret: str,
    account_login: str | None,
    siren: str | None,
    nic: str | None,
    company_name: str | None,
    company_name_2: str | None,
    email: str | None,
    periodicity: str | None,
    month: int | None,
    day: int | None,
    remote_entry: bool | None,
    no_auto_link: bool | None,
    include_pending: bool | None,
    skip_empty_mail: bool | None,
) -> None:
    """Modifie un redevable ; changer de périodicité demande les mois/jour qui lui vont."""
    async with open_services(app.config, links=True) as services:
        redevable = await _find(services, account_login, siret)
        new_periodicity = periodicity or redevable.periodicity.value
        periodicity_changed = new_periodicity.upper() != redevable.periodicity.value
        data, problems = redevable_service.validate_redevable(
            siren=siren if siren is not None else redevable.siren,
            nic=nic if nic is not None else redevable.nic,
            company_name=company_name if company_name is not None else redevable.company_name,
            company_name_2=(
                company_name_2 if company_name_2 is not None else redevable.company_name_2
            ),
            email=email if email is not None else redevable.email,
            periodicity=new_periodicity,
            month=month if month is not None or periodicity_changed else redevable.month,
            day=day if day is not None or periodicity_changed else redevable.day,
            remote_entry=remote_entry if remote_entry is not None else redevable.remote_entry,
            no_auto_link=no_auto_link if no_auto_link is not None else redevable.no_auto_link,
            include_pending=(
                include_pending if include_pending is not None else redevable.include_pending
            ),
            skip_empty_mail=(
                skip_empty_mail if skip_empty_mail is not None else redevable.skip_empty_mail
            ),
        )
        _raise_first(problems)
        assert data is not None
        redevable, sent = await services.portfolio.update_redevable(redevable.id, data)
    click.echo(f"Redevable {redevable.siret} modifié.")
    for issued in sent:
        echo_issued(issued, mailed=True)


@redevables.command(name="deactivate")
@click.argument("siret")
@ACCOUNT_OPTION
@async_command
async def redevables_deactivate(app: AppContext, siret: str, account_login: str | None) -> None:
    """Désactive un redevable (conservé ; ses comptes bancaires deviennent inactifs)."""
    async with open_services(app.config) as services:
        redevable = await _find(services, account_login, siret)
        count = await services.portfolio.set_redevable_active(redevable.id, False)
    click.echo(f"Redevable {redevable.siret} désactivé, ainsi que {count} compte(s) bancaire(s).")


@redevables.command(name="reactivate")
@click.argument("siret")
@ACCOUNT_OPTION
@async_command
async def redevables_reactivate(app: AppContext, siret: str, account_login: str | None) -> None:
    """Réactive un redevable désactivé."""
    async with open_services(app.config) as services:
        redevable = await _find(services, account_login, siret)
        count = await services.portfolio.set_redevable_active(redevable.id, True)
    click.echo(f"Redevable {redevable.siret} réactivé, ainsi que {count} compte(s) bancaire(s).")


@redevables.command(name="import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@ACCOUNT_OPTION
@click.option("--dry-run", is_flag=True, help="Vérifie le fichier sans rien enregistrer.")
@click.option("--update", is_flag=True, help="Met à jour les SIRET déjà présents sur ce compte.")
@click.option(
    "--no-auto-link",
    is_flag=True,
    help="Ne pas générer automatiquement le jeton pour les redevables du fichier "
    "(aucun lien de saisie envoyé, même avec le champ 9 à 1).",
)
@click.option("--json", "as_json", is_flag=True)
@async_command
async def redevables_import(
    app: AppContext,
    file: Path,
    account_login: str | None,
    dry_run: bool,
    update: bool,
    no_auto_link: bool,
    as_json: bool,
) -> None:
    """Importe des redevables depuis un fichier au format de l'Annexe 1.

    Chaque redevable créé avec le champ 9 à 1 (ou qui y passe avec --update) reçoit par mail
    le lien de saisie de ses identifiants bancaires ; --dry-run n'envoie rien.
    """
    data = await asyncio.to_thread(file.read_bytes)
    async with open_services(app.config, links=True) as services:
        account = await resolve_account(services, account_login)
        report = await services.portfolio.import_file(
            account.id,
            data,
            update=update,
            dry_run=dry_run,
            no_auto_link=no_auto_link,
            max_lines=app.config.portal.import_max_lines,
        )
    issues = [issue.with_remedy(UPDATE_REMEDY) for issue in report.issues]
    if as_json:
        echo_json(
            {
                "fichier": str(file),
                "essai": dry_run,
                "crees": report.created,
                "mis_a_jour": report.updated,
                "liens_envoyes": report.links_sent,
                "nombre_erreurs": report.issue_count,
                "arret_ligne": report.stopped_at,
                "erreurs": [
                    {
                        "ligne": i.line,
                        "champ": FIELD_LABELS.get(i.field, i.field),
                        "valeur": i.value,
                        "motif": i.reason,
                    }
                    for i in issues
                ],
            }
        )
    else:
        for issue in issues:
            click.echo(f"{file}: {issue}", err=True)
    if not report.ok:
        raise UserError(f"{file} : {report.summary}")
    if not as_json:
        verb = "seraient" if dry_run else "ont été"
        click.echo(
            f"{report.created} redevable(s) {verb} créé(s), {report.updated} mis à jour ({file})."
        )
        if report.links_sent:
            click.echo(
                f"{report.links_sent} lien(s) sécurisé(s) de saisie des identifiants bancaires "
                "transmis par mail (valides 72 heures) ; les mails partent avec le démon."
            )


# ``redevables discover-edi`` is declared with the EDI commands it shares its body with; the
# group is complete once they are loaded (commands are loaded on demand, see cli/__init__).
import releves_mailer.cli.edi  # noqa: E402, F401

"""``releves-mailer banks``: connect a redevable's bank, list, show, switch and inspect accounts."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from releves_mailer.account_types import account_type_fr
from releves_mailer.aggregators.testbank import TestBank, parse_error_schedule
from releves_mailer.cli.common import (
    AppContext,
    account_filter,
    async_command,
    echo_json,
    exit_on_failed_refresh,
    find_redevable,
    format_money,
    listed_accounts,
    open_collection,
    open_services,
    parse_datetime,
)
from releves_mailer.clock import PARIS, Clock, ManualClock, SystemClock
from releves_mailer.collect.errors import describe_error
from releves_mailer.errors import UserError
from releves_mailer.services.banks import BankAccountEntry, ConnectionState
from releves_mailer.vocabulary import french

__all__ = ["banks"]


def _when(moment: dt.datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(PARIS).strftime("%d/%m/%Y %H:%M")


@click.group(name="banks")
def banks() -> None:
    """Connexions bancaires et comptes bancaires des redevables."""


@banks.command(name="connect")
@click.argument("siren")
@click.option(
    "--provider",
    default="testbank",
    show_default=True,
    help="Agrégateur (seul « testbank » permet la connexion directe).",
)
@click.option("--account", "login", help="Compte portail du redevable (si le SIREN est ambigu).")
@click.option("--seed", type=int, help="Graine du connecteur de test (sinon celle du fichier).")
@click.option(
    "--error",
    "errors",
    multiple=True,
    metavar="CODE@AAAA-MM-JJ[..AAAA-MM-JJ]",
    help="Erreur de connexion programmée (répétable).",
)
@click.option(
    "--at",
    "at",
    metavar="AAAA-MM-JJTHH:MM",
    help="Moment de l'activation sur la chronologie simulée (heure de Paris ; défaut : "
    "maintenant).",
)
@async_command
async def connect(
    app: AppContext,
    siren: str,
    provider: str,
    login: str | None,
    seed: int | None,
    errors: tuple[str, ...],
    at: str | None,
) -> None:
    """Connecte la banque d'un redevable (connexion directe au connecteur de test).

    Code de sortie 3 si la première actualisation échoue (elle compte comme une vérification
    du démon : lien de mise à jour et alerte à partir du second échec).
    """
    config = app.config
    if provider != TestBank.name:
        raise UserError(
            f"le fournisseur « {provider} » n'accepte pas de connexion directe : "
            "seul « testbank » le permet (le lien sécurisé viendra plus tard)"
        )
    if not config.aggregator.testbank.enabled:
        raise UserError("le connecteur de test est désactivé (aggregator.testbank.enabled)")
    schedule = parse_error_schedule(errors)
    clock: Clock = SystemClock() if at is None else ManualClock(parse_datetime(at))
    async with open_collection(config, clock) as collection:
        bank = collection.aggregators.providers[TestBank.name]
        assert isinstance(bank, TestBank)
        redevable = await find_redevable(collection.services, siren, login)
        connection_id = await collection.connect_test_bank(
            redevable.id, bank, seed=seed, errors=schedule
        )
        report = await collection.collector.round(refresh_now=[connection_id])
        result = next(r for r in report.refreshed if r.connection_id == connection_id)
    click.echo(
        f"Connexion {connection_id} créée pour {redevable.siret} {redevable.company_name} "
        f"({bank.display_name}) le {_when(clock.now())}."
    )
    if result.ok:
        click.echo(
            f"{result.accounts} compte(s) bancaire(s), {result.inserted} transaction(s) "
            "collectée(s)."
        )
    else:
        message = describe_error(result.error_code or "bug").message
        click.echo(f"Connexion en erreur ({result.error_code}) : {message}")
    exit_on_failed_refresh(int(not result.ok))


def _list_row(entry: BankAccountEntry) -> dict[str, Any]:
    account, connection, redevable = entry.account, entry.connection, entry.redevable
    return {
        "id": account.id,
        "siren": redevable.siren,
        "nic": redevable.nic,
        "raison_sociale": redevable.company_name,
        "banque": connection.bank_name,
        "libelle": account.label,
        "iban": account.iban,
        "devise": account.currency,
        "actif": account.active,
        "connexion": connection.id,
        "etat_connexion": french(connection.state),
        "code_erreur": connection.error_code,
        "derniere_connexion": connection.last_check_at,
        "derniere_collecte": account.last_collected_at,
    }


@banks.command(name="list")
@click.option("--siren", help="Seulement les comptes de ce SIREN.")
@click.option("--all", "show_inactive", is_flag=True, help="Inclut les comptes désactivés.")
@account_filter
@click.option("--json", "as_json", is_flag=True, help="Sortie JSON.")
@async_command
async def list_accounts(
    app: AppContext,
    siren: str | None,
    show_inactive: bool,
    account_login: str | None,
    include_secondaries: bool,
    as_json: bool,
) -> None:
    """Liste les comptes bancaires collectés."""
    async with open_services(app.config) as services:
        entries = await services.banks.entries(
            siren=siren,
            include_inactive=show_inactive,
            account_ids=await listed_accounts(services, account_login, include_secondaries),
        )
    rows = [_list_row(entry) for entry in entries]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("Aucun compte bancaire.")
        return
    for row in rows:
        state = "✓" if row["etat_connexion"] == french(ConnectionState.OK) else "⚠"
        active = "" if row["actif"] else " [désactivé]"
        click.echo(
            f"{row['id']:>5}  {row['siren']} {row['raison_sociale'][:24]:<24}  "
            f"{row['libelle'][:28]:<28}  {row['iban'] or '-':<27}  "
            f"{state} {_when(row['derniere_connexion'])}  "
            f"collecte {_when(row['derniere_collecte'])}{active}"
        )


@banks.command(name="show")
@click.argument("account_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Sortie JSON.")
@async_command
async def show(app: AppContext, account_id: int, as_json: bool) -> None:
    """Détail d'un compte bancaire et historique de ses événements."""
    async with open_services(app.config) as services:
        entry = await services.banks.detail(account_id)
    account, connection, redevable, events = (
        entry.account,
        entry.connection,
        entry.redevable,
        entry.events,
    )
    detail: dict[str, Any] = {
        "id": account.id,
        "redevable": {
            "siren": redevable.siren,
            "nic": redevable.nic,
            "raison_sociale": redevable.company_name,
        },
        "banque": connection.bank_name,
        "fournisseur": connection.provider,
        "connexion": connection.id,
        "etat_connexion": french(connection.state),
        "code_erreur": connection.error_code,
        "echecs_consecutifs": connection.consecutive_failures,
        "type": account_type_fr(account.type),
        "libelle": account.label,
        "iban": account.iban,
        "bic": account.bic,
        "devise": account.currency,
        "actif": account.active,
        "date_creation": account.created_at,
        "date_activation": account.activated_at,
        "date_desactivation": account.deactivated_at,
        "derniere_connexion": connection.last_check_at,
        "derniere_collecte": account.last_collected_at,
        "derniere_date_relevee": account.last_reported_date,
        "solde_banque": account.balance,
        "solde_date": account.balance_at,
        "evenements": [
            {
                "date": event.at,
                "type": french(event.kind),
                "message": event.message,
                "ancienne_valeur": event.old_value,
                "nouvelle_valeur": event.new_value,
                "code_erreur": event.error_code,
            }
            for event in events
        ],
    }
    if as_json:
        echo_json(detail)
        return
    error = (
        f" — {connection.error_code} : {describe_error(connection.error_code).message}"
        if connection.error_code
        else ""
    )
    lines = [
        f"Redevable : {redevable.siret} {redevable.company_name}",
        f"Banque : {connection.bank_name}    Connexion {connection.id} : "
        f"{french(connection.state)}{error}",
        f"Type : {account_type_fr(account.type)}    Libellé : {account.label}",
        f"IBAN : {account.iban or '-'}    BIC : {account.bic or '-'}    "
        f"Monnaie : {account.currency}",
        f"Date création : {_when(account.created_at)}    "
        f"Dernière connexion : {_when(connection.last_check_at)}",
        f"Dernière collecte : {_when(account.last_collected_at)}    "
        f"Date de désactivation : {_when(account.deactivated_at)}",
        f"Solde banque : {format_money(account.balance, account.currency)} "
        f"au {_when(account.balance_at)}",
        "",
        "Événements :",
    ]
    for event in events:
        change = ""
        if event.old_value is not None or event.new_value is not None:
            old, new = event.old_value or "", event.new_value or ""
            change = f" (ancienne valeur={old}, nouvelle valeur={new})"
        lines.append(f"  {_when(event.at)}  {event.message}{change}")
    click.echo("\n".join(lines))


async def _switch(app: AppContext, account_id: int, active: bool, at: str | None) -> None:
    clock: Clock = SystemClock() if at is None else ManualClock(parse_datetime(at))
    async with open_services(app.config, clock) as services:
        account = await services.banks.set_active(account_id, active)
    word = "réactivé" if active else "désactivé"
    click.echo(
        f"Compte bancaire {account.id} ({account.label}, {account.iban or '-'}) {word} "
        f"le {_when(clock.now())}."
    )


#: ``--at`` of the commands that change a bank account on a simulated timeline.
_at_option = click.option(
    "--at",
    "at",
    metavar="AAAA-MM-JJTHH:MM",
    help="Moment du changement sur la chronologie simulée (heure de Paris ; défaut : maintenant).",
)


@banks.command(name="deactivate")
@click.argument("account_id", type=int)
@_at_option
@async_command
async def deactivate(app: AppContext, account_id: int, at: str | None) -> None:
    """Désactive un compte bancaire : il n'est plus collecté."""
    await _switch(app, account_id, False, at)


@banks.command(name="reactivate")
@click.argument("account_id", type=int)
@_at_option
@async_command
async def reactivate(app: AppContext, account_id: int, at: str | None) -> None:
    """Réactive un compte bancaire : la collecte reprend depuis la dernière date relevée."""
    await _switch(app, account_id, True, at)


@banks.command(name="transactions")
@click.argument("account_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Sortie JSON.")
@async_command
async def transactions(app: AppContext, account_id: int, as_json: bool) -> None:
    """Toutes les transactions collectées d'un compte, avec leur état et leur relevé."""
    async with open_services(app.config) as services:
        rows = await services.banks.transactions(account_id)
    entries = [
        {
            "id": row.id,
            "id_fournisseur": row.provider_id,
            "date_comptable": row.booking_date,
            "date_valeur": row.value_date,
            "date_operation": row.real_date,
            "montant": row.amount,
            "devise": row.currency,
            "libelle": row.raw_label,
            "type": row.type,
            "etat": french(row.status),
            "modifiee": row.changed,
            "supprimee_le": row.deleted_at,
            "remplacee_par": row.replaced_by_id,
            "releve": row.reported_statement_id,
            "correction_a_signaler": row.correction_pending,
        }
        for row in rows
    ]
    if as_json:
        echo_json(entries)
        return
    if not entries:
        click.echo("Aucune transaction collectée pour ce compte.")
        return
    for row in rows:
        state = french(row.status)
        if row.changed:
            state += ", modifiée"
        if row.replaced_by_id is not None:
            state += f" par {row.replaced_by_id}"
        statement = f"relevé {row.reported_statement_id}" if row.reported_statement_id else "-"
        click.echo(
            f"{row.id:>7}  {row.booking_date:%d/%m/%Y}  "
            f"{format_money(row.amount, row.currency):>18}  {row.raw_label[:40]:<40}  "
            f"{state:<24}  {statement}"
        )

"""Sync of a connection's accounts: match the provider's accounts, record what changed.

New accounts, accounts reattached to a new connection (same IBAN), changed fields, refused
IBANs, balances and accounts gone, each with its event in the account's history.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import flag_modified

from releves_mailer.collect.provider import ProviderAccount
from releves_mailer.db.models.collect import BankAccount, BankConnection, BankEvent, BankEventKind

if TYPE_CHECKING:
    from releves_mailer.collect.sync import RefreshResult

__all__ = ["new_bank_account", "normalise_iban", "reattach_account", "reconcile_accounts"]


def new_bank_account(
    redevable_id: int,
    connection_id: int,
    remote: ProviderAccount,
    now: dt.datetime,
    *,
    active: bool = True,
) -> BankAccount:
    """A bank account row for an account the provider shows for the first time."""
    return BankAccount(
        redevable_id=redevable_id,
        connection_id=connection_id,
        provider_account_id=remote.provider_id,
        iban=normalise_iban(remote.iban),
        bic=remote.bic[:11],
        label=remote.label[:200],
        type=remote.type[:40],
        currency=remote.currency[:3],
        number=remote.number[:64],
        active=active,
        activated_at=now,
        deactivated_at=None if active else now,
        created_at=now,
        updated_at=now,
    )


def normalise_iban(value: str | None) -> str | None:
    """Compact upper-case IBAN, or None for an empty value."""
    if value is None:
        return None
    compact = re.sub(r"[\s.-]", "", value).upper()
    return compact or None


_FIELD_EVENTS = (
    ("iban", BankEventKind.IBAN_CHANGED, "Mise à jour de l'IBAN"),
    ("bic", BankEventKind.BIC_CHANGED, "Mise à jour du code BIC"),
    ("type", BankEventKind.TYPE_CHANGED, "Mise à jour du type de compte"),
    ("label", BankEventKind.LABEL_CHANGED, "Mise à jour du libellé du compte"),
    ("currency", BankEventKind.CURRENCY_CHANGED, "Mise à jour de la monnaie du compte"),
)


def _account_event(
    session: AsyncSession,
    result: RefreshResult,
    account: BankAccount,
    kind: BankEventKind,
    now: dt.datetime,
    message: str,
    old: str | None = None,
    new: str | None = None,
) -> None:
    session.add(
        BankEvent(
            at=now,
            kind=kind,
            connection_id=account.connection_id,
            account_id=account.id,
            old_value=None if old is None else old[:200],
            new_value=None if new is None else new[:200],
            message=message,
        )
    )
    result.events.append(kind.value)


def reattach_account(
    session: AsyncSession,
    account: BankAccount,
    connection_id: int,
    provider_account_id: str,
    now: dt.datetime,
) -> None:
    """Move an account (same IBAN) to a new connection, keeping its history, with its event."""
    old_ref = f"{account.provider_account_id} (connexion {account.connection_id})"
    account.connection_id = connection_id
    account.provider_account_id = provider_account_id
    account.reattached_at = now
    account.gone_at = None
    account.updated_at = now
    session.add(
        BankEvent(
            at=now,
            kind=BankEventKind.ACCOUNT_REATTACHED,
            connection_id=connection_id,
            account_id=account.id,
            old_value=old_ref[:200],
            new_value=f"{provider_account_id} (connexion {connection_id})"[:200],
            message="Compte rattaché à la nouvelle connexion bancaire",
        )
    )


async def reconcile_accounts(
    session: AsyncSession,
    connection: BankConnection,
    known: list[BankAccount],
    listed: Sequence[ProviderAccount],
    now: dt.datetime,
    result: RefreshResult,
) -> dict[str, BankAccount]:
    """Match the provider's accounts to ``known`` (the redevable's, new ones are appended);
    returns them by provider account id."""
    by_provider = {a.provider_account_id: a for a in known if a.connection_id == connection.id}
    by_iban = {a.iban: a for a in known if a.iban is not None}
    matched: dict[str, BankAccount] = {}
    for remote in listed:
        iban = normalise_iban(remote.iban)
        account = by_provider.get(remote.provider_id)
        if account is None and iban is not None and iban in by_iban:
            account = by_iban[iban]
            reattach_account(session, account, connection.id, remote.provider_id, now)
            result.events.append(BankEventKind.ACCOUNT_REATTACHED.value)
        if account is None:
            # An account the client left unticked at the provider is not collected there:
            # it is created switched off, for the portfolio's owner to see and decide.
            account = new_bank_account(
                connection.redevable_id, connection.id, remote, now, active=not remote.disabled
            )
            session.add(account)
            await session.flush()
            known.append(account)
            if iban is not None:
                by_iban[iban] = account
            unticked = " (non coché par le client : collecte désactivée)" if remote.disabled else ""
            _account_event(
                session,
                result,
                account,
                BankEventKind.ACCOUNT_ADDED,
                now,
                f"Nouveau compte bancaire : {remote.label}{unticked}",
                None,
                iban,
            )
        else:
            _update_account_fields(session, result, account, remote, iban, by_iban, now)
        if remote.rejected_iban is not None:
            await _report_rejected_iban(session, result, account, remote.rejected_iban, now)
        if remote.balance is not None and (
            account.balance != remote.balance or account.balance_at != remote.balance_at
        ):
            account.balance = remote.balance
            account.balance_at = remote.balance_at or now
            # Written even when only its date moved: the accounts of a batch then change the
            # same columns, which the ORM writes in one executemany instead of row by row.
            flag_modified(account, "balance")
        gone = remote.deleted_at
        if gone is not None and account.gone_at is None:
            account.gone_at = gone
            _account_event(
                session,
                result,
                account,
                BankEventKind.ACCOUNT_GONE,
                now,
                "Compte bancaire supprimé chez la banque",
            )
        elif gone is None and account.gone_at is not None:
            account.gone_at = None
        matched[remote.provider_id] = account
    for account in known:
        if (
            account.connection_id == connection.id
            and account.provider_account_id not in matched
            and account.gone_at is None
        ):
            account.gone_at = now
            _account_event(
                session,
                result,
                account,
                BankEventKind.ACCOUNT_GONE,
                now,
                "Compte bancaire absent de la connexion",
            )
    result.accounts = len(matched)
    return matched


async def _report_rejected_iban(
    session: AsyncSession,
    result: RefreshResult,
    account: BankAccount,
    rejected: str,
    now: dt.datetime,
) -> None:
    """An event in the account's history, once per refused value (not at every check)."""
    shown = rejected[:200]
    last = await session.scalar(
        select(BankEvent.new_value)
        .where(BankEvent.account_id == account.id, BankEvent.kind == BankEventKind.IBAN_REJECTED)
        .order_by(BankEvent.id.desc())
        .limit(1)
    )
    if last == shown:
        return
    _account_event(
        session,
        result,
        account,
        BankEventKind.IBAN_REJECTED,
        now,
        "IBAN transmis par l'agrégateur refusé (caractères ou clé de contrôle invalides) : "
        "non enregistré",
        None,
        shown,
    )


def _update_account_fields(
    session: AsyncSession,
    result: RefreshResult,
    account: BankAccount,
    remote: ProviderAccount,
    iban: str | None,
    by_iban: dict[str, BankAccount],
    now: dt.datetime,
) -> None:
    new_values = {
        # A refused IBAN leaves the stored one as it is.
        "iban": iban if remote.rejected_iban is None else account.iban,
        "bic": remote.bic[:11],
        "type": remote.type[:40],
        "label": remote.label[:200],
        "currency": remote.currency[:3],
    }
    for name, kind, message in _FIELD_EVENTS:
        old = getattr(account, name)
        new = new_values[name]
        if old == new:
            continue
        if name == "iban" and new is not None and new in by_iban and by_iban[new] is not account:
            _account_event(
                session,
                result,
                account,
                BankEventKind.IBAN_CONFLICT,
                now,
                f"IBAN déjà porté par le compte {by_iban[new].id} : non modifié",
                old,
                new,
            )
            continue
        if name == "iban":
            if old is not None:
                by_iban.pop(old, None)
            if new is not None:
                by_iban[new] = account
        setattr(account, name, new)
        account.updated_at = now
        _account_event(session, result, account, kind, now, message, old or "", new or "")
    if account.number != remote.number[:64]:
        account.number = remote.number[:64]

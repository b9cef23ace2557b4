"""Redevables: Annexe 1 validation, creation, edition, (de)activation and search."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

from sqlalchemy import ColumnElement, Select, func, select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload

from releves_mailer.clock import Clock
from releves_mailer.db.models import (
    BankAccount,
    BankConnection,
    ConnectionState,
    PortalAccount,
    Redevable,
    SecureLink,
)
from releves_mailer.errors import UserError
from releves_mailer.portfolio.accounts import family_ids
from releves_mailer.portfolio.periodicity import Schedule
from releves_mailer.portfolio.validation import check_email, check_nic, check_siren, check_text

__all__ = [
    "FIELD_LABELS",
    "RedevableInput",
    "RedevableSearch",
    "SearchPage",
    "Written",
    "apply_input",
    "collection_condition",
    "create_redevable",
    "deactivate_redevable",
    "find_by_siret",
    "find_redevable",
    "get_redevable",
    "latest_link_in_state",
    "reactivate_redevable",
    "search_redevables",
    "update_redevable",
    "validate_redevable",
]

#: French names of the Annexe 1 fields, as error reports and forms show them.
FIELD_LABELS = {
    "siren": "SIREN",
    "nic": "NIC",
    "company_name": "Raison Sociale",
    "company_name_2": "Raison Sociale (Suite)",
    "email": "Email",
    "periodicity": "Périodicité",
    "month": "Mois",
    "day": "Jour",
    "remote_entry": "Saisie Identifiants Bancaires Déportés",
}


@dataclasses.dataclass(frozen=True)
class RedevableInput:
    """A validated redevable, ready to be stored."""

    siren: str
    nic: str
    company_name: str
    company_name_2: str
    email: str
    schedule: Schedule
    remote_entry: bool
    no_auto_link: bool = False
    include_pending: bool = False
    skip_empty_mail: bool = False

    @property
    def siret(self) -> str:
        return self.siren + self.nic


@dataclasses.dataclass(frozen=True)
class Written:
    """A redevable just created or updated, with what the secure-link rule needs to know.

    ``was_remote``: Annexe 1 field 9 was already 1 before this write (always False for a
    creation), so turning it on now is not news.
    """

    redevable: Redevable
    was_remote: bool = False


def _optional_int(value: str | int | None, field: str, errors: list[UserError]) -> int | None:
    if value is None or isinstance(value, int):
        return value
    text = value.strip()
    if not text:
        return None
    if not text.isdigit():
        errors.append(UserError(f"nombre entier attendu (reçu « {value} »)", field=field))
        return None
    return int(text)


def _flag(value: str | bool, field: str, errors: list[UserError]) -> bool:
    if isinstance(value, bool):
        return value
    text = value.strip()
    if text in ("0", "1"):
        return text == "1"
    errors.append(UserError(f"0 ou 1 attendu (reçu « {value} »)", field=field))
    return False


def validate_redevable(
    *,
    siren: str,
    nic: str = "",
    company_name: str,
    company_name_2: str = "",
    email: str = "",
    periodicity: str,
    month: str | int | None = None,
    day: str | int | None = None,
    remote_entry: str | bool = False,
    no_auto_link: bool = False,
    include_pending: bool = False,
    skip_empty_mail: bool = False,
) -> tuple[RedevableInput | None, list[UserError]]:
    """Check every Annexe 1 rule; return the input, or every error found (each with its field)."""
    errors: list[UserError] = []

    checked_siren = ""
    try:
        checked_siren = check_siren(siren)
    except UserError as error:
        errors.append(error)
    checked_nic = ""
    if checked_siren:
        try:
            checked_nic = check_nic(checked_siren, nic)
        except UserError as error:
            errors.append(error)
    names: list[str] = []
    for field, value, required in (
        ("company_name", company_name, True),
        ("company_name_2", company_name_2, False),
    ):
        try:
            names.append(
                check_text(
                    value, field=field, label="raison sociale", max_length=35, required=required
                )
            )
        except UserError as error:
            errors.append(error)
    remote = _flag(remote_entry, "remote_entry", errors)
    checked_email = ""
    try:
        checked_email = check_email(email, required=remote)
    except UserError as error:
        if remote and not email.strip():
            errors.append(
                UserError(
                    "adresse e-mail obligatoire quand la saisie des identifiants bancaires est "
                    "déportée (champ 9 = 1)",
                    field="email",
                )
            )
        else:
            errors.append(error)
    month_value = _optional_int(month, "month", errors)
    day_value = _optional_int(day, "day", errors)
    problems = Schedule.problems(periodicity.strip().upper(), month_value, day_value)
    errors.extend(problems)
    if errors:
        return None, errors
    schedule = Schedule.checked(periodicity.strip().upper(), month_value, day_value)
    return (
        RedevableInput(
            siren=checked_siren,
            nic=checked_nic,
            company_name=names[0],
            company_name_2=names[1],
            email=checked_email,
            schedule=schedule,
            remote_entry=remote,
            no_auto_link=no_auto_link,
            include_pending=include_pending,
            skip_empty_mail=skip_empty_mail,
        ),
        [],
    )


def apply_input(redevable: Redevable, data: RedevableInput) -> None:
    redevable.siren = data.siren
    redevable.nic = data.nic
    redevable.company_name = data.company_name
    redevable.company_name_2 = data.company_name_2
    redevable.email = data.email
    redevable.periodicity = data.schedule.periodicity
    redevable.month = data.schedule.month
    redevable.day = data.schedule.day
    redevable.remote_entry = data.remote_entry
    redevable.no_auto_link = data.no_auto_link
    redevable.include_pending = data.include_pending
    redevable.skip_empty_mail = data.skip_empty_mail


def _duplicate_error(siret: str, owner: Redevable, owner_login: str) -> UserError:
    return UserError(
        f"le SIRET {siret} existe déjà (redevable « {owner.company_name} » du compte "
        f"« {owner_login} ») : il n'est pas possible de créer deux redevables de même SIRET, "
        "que ce soit sur le même compte, ou sur un compte principal et ses comptes secondaires",
        field="siren",
    )


async def find_by_siret(
    session: AsyncSession, family_id: int, siren: str, nic: str
) -> Redevable | None:
    return await session.scalar(
        select(Redevable)
        .options(joinedload(Redevable.account))
        .where(Redevable.family_id == family_id, Redevable.siren == siren, Redevable.nic == nic)
    )


async def create_redevable(
    session: AsyncSession, clock: Clock, account: PortalAccount, data: RedevableInput
) -> Redevable:
    existing = await find_by_siret(session, account.family_id, data.siren, data.nic)
    if existing is not None:
        raise _duplicate_error(data.siret, existing, existing.account.login)
    now = clock.now()
    redevable = Redevable(
        account_id=account.id,
        family_id=account.family_id,
        active=True,
        created_at=now,
        updated_at=now,
    )
    apply_input(redevable, data)
    session.add(redevable)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        # Another writer created the same SIRET between our check and our insert.
        raise UserError(f"le SIRET {data.siret} existe déjà", field="siren") from None
    return redevable


async def update_redevable(
    session: AsyncSession, clock: Clock, redevable: Redevable, data: RedevableInput
) -> Redevable:
    if (data.siren, data.nic) != (redevable.siren, redevable.nic):
        existing = await find_by_siret(session, redevable.family_id, data.siren, data.nic)
        if existing is not None and existing.id != redevable.id:
            raise _duplicate_error(data.siret, existing, existing.account.login)
    apply_input(redevable, data)
    redevable.updated_at = clock.now()
    await session.flush()
    return redevable


async def deactivate_redevable(session: AsyncSession, clock: Clock, redevable: Redevable) -> None:
    """Keep the redevable but stop its statements (its bank accounts follow)."""
    if not redevable.active:
        raise UserError(f"le redevable {redevable.siret} est déjà désactivé")
    now = clock.now()
    redevable.active = False
    redevable.deactivated_at = now
    redevable.updated_at = now
    await session.flush()


async def reactivate_redevable(session: AsyncSession, clock: Clock, redevable: Redevable) -> None:
    if redevable.active:
        raise UserError(f"le redevable {redevable.siret} est déjà actif")
    redevable.active = True
    redevable.deactivated_at = None
    redevable.updated_at = clock.now()
    await session.flush()


async def get_redevable(session: AsyncSession, viewer: PortalAccount, siret: str) -> Redevable:
    """The redevable of ``viewer``'s family (with its secondaries) by SIRET, or by SIREN alone
    when that is unambiguous."""
    digits = siret.strip().replace(" ", "")
    siren, nic = digits[:9], digits[9:]
    query = (
        select(Redevable)
        .options(joinedload(Redevable.account))
        .where(Redevable.account_id.in_(await family_ids(session, viewer)))
        .where(Redevable.siren == siren)
    )
    if len(digits) == 14:
        query = query.where(Redevable.nic == nic)
    elif len(digits) != 9 or not digits.isdigit():
        raise UserError(f"SIREN (9 chiffres) ou SIRET (14 chiffres) attendu, reçu « {siret} »")
    found = (await session.scalars(query)).all()
    if not found:
        raise UserError(f"aucun redevable {digits} sur le compte « {viewer.login} »")
    if len(found) > 1:
        choices = ", ".join(r.siret for r in found)
        raise UserError(f"plusieurs redevables ont le SIREN {siren} ({choices}) : donnez le SIRET")
    return found[0]


async def find_redevable(
    session: AsyncSession, siren_or_siret: str, login: str | None = None
) -> Redevable:
    """The redevable with this SIREN (or SIRET) across the installation, for admin commands.

    ``login`` narrows the search to one portal account; an ambiguous SIREN is refused with
    the candidates and their accounts, so the admin can say which one.
    """
    key = siren_or_siret.replace(" ", "")
    if not key.isdigit() or len(key) not in (9, 14):
        raise UserError(f"SIREN (9 chiffres) ou SIRET (14 chiffres) attendu, reçu « {key} »")
    query = (
        select(Redevable)
        .options(joinedload(Redevable.account))
        .where(Redevable.siren == key[:9])
        .order_by(Redevable.id)
    )
    if len(key) == 14:
        query = query.where(Redevable.nic == key[9:])
    if login is not None:
        query = query.join(PortalAccount, PortalAccount.id == Redevable.account_id).where(
            PortalAccount.login == login.strip().lower()
        )
    found = list((await session.scalars(query)).all())
    if not found:
        where = f" sur le compte « {login} »" if login else ""
        kind = "SIREN" if len(key) == 9 else "SIRET"
        raise UserError(f"aucun redevable de {kind} {key}{where}")
    if len(found) > 1:
        listed = ", ".join(f"{r.account.login} ({r.siret} {r.company_name})" for r in found)
        # ``field``: the caller says how its user names the account (an option, a field).
        raise UserError(
            f"plusieurs redevables ont le SIREN {key[:9]} : {listed} ; "
            "donnez le SIRET complet ou le compte portail",
            field="account",
        )
    return found[0]


@dataclasses.dataclass(frozen=True)
class RedevableSearch:
    """The filters of the "Paramétrage" screen."""

    siret: str = ""
    name: str = ""
    #: Any part of an IBAN of one of the redevable's bank accounts (spaces ignored).
    iban: str = ""
    #: ``"succes"``: every active connection is OK; ``"erreur"``: one is in error;
    #: ``"aucune"``: no active connection at all.
    collection_state: str = ""
    #: ``"valide"`` or ``"expire"``: the state of the redevable's latest secure link.
    link_state: str = ""
    include_inactive: bool = False
    include_secondaries: bool = False
    limit: int = 50
    offset: int = 0


def collection_condition(state: str) -> ColumnElement[bool]:
    """The "État de la collecte" filter on ``Redevable``: ``succes`` (every active connection
    is OK), ``erreur`` (one is in error) or ``aucune`` (no active connection)."""
    live = (BankConnection.redevable_id == Redevable.id) & BankConnection.active
    failing = select(BankConnection.id).where(live, BankConnection.state == ConnectionState.ERROR)
    if state == "erreur":
        return failing.exists()
    if state == "aucune":
        return ~select(BankConnection.id).where(live).exists()
    if state == "succes":
        healthy = select(BankConnection.id).where(live, BankConnection.state == ConnectionState.OK)
        return healthy.exists() & ~failing.exists()
    raise UserError(
        f"état de collecte inconnu « {state} » (succes, erreur ou aucune)", field="state"
    )


def latest_link_in_state(state: str, now: dt.datetime) -> ColumnElement[bool]:
    """The redevable's most recent secure link is still valid, or expired unused."""
    latest = (
        select(SecureLink.id)
        .where(SecureLink.redevable_id == Redevable.id)
        .order_by(SecureLink.created_at.desc(), SecureLink.id.desc())
        .limit(1)
        .correlate(Redevable)
        .scalar_subquery()
    )
    unused = select(SecureLink.id).where(SecureLink.id == latest, SecureLink.used_at.is_(None))
    if state == "valide":
        return unused.where(SecureLink.expires_at > now).exists()
    if state == "expire":
        return unused.where(SecureLink.expires_at <= now).exists()
    raise UserError(f"état de jeton inconnu « {state} » (valide ou expire)", field="link")


@dataclasses.dataclass(frozen=True)
class SearchPage:
    rows: Sequence[Redevable]
    total: int


async def search_redevables(
    session: AsyncSession,
    viewer: PortalAccount,
    criteria: RedevableSearch,
    now: dt.datetime | None = None,
) -> SearchPage:
    """One page of the "Paramétrage" search; ``now`` dates the secure links' states."""
    if criteria.include_secondaries and not viewer.is_primary:
        raise UserError(
            "seul un compte principal peut afficher les redevables de ses comptes secondaires"
        )
    accounts = await family_ids(session, viewer) if criteria.include_secondaries else [viewer.id]
    query: Select[Redevable] = select(Redevable).where(Redevable.account_id.in_(accounts))
    siret = criteria.siret.replace(" ", "")
    if siret:
        query = query.where((Redevable.siren + Redevable.nic).startswith(siret, autoescape=True))
    if criteria.name.strip():
        pattern = criteria.name.strip().lower()
        full_name = func.lower(Redevable.company_name + " " + Redevable.company_name_2)
        query = query.where(full_name.contains(pattern, autoescape=True))
    iban = criteria.iban.replace(" ", "").upper()
    if iban:
        query = query.where(
            select(BankAccount.id)
            .where(BankAccount.redevable_id == Redevable.id)
            .where(BankAccount.iban.contains(iban, autoescape=True))
            .exists()
        )
    if criteria.collection_state:
        query = query.where(collection_condition(criteria.collection_state))
    if criteria.link_state:
        if now is None:
            raise ValueError("a search on link states needs the clock's now")
        query = query.where(latest_link_in_state(criteria.link_state, now))
    query = query.where(true() if criteria.include_inactive else Redevable.active)
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = (
        await session.scalars(
            query.options(joinedload(Redevable.account))
            .order_by(Redevable.company_name, Redevable.siren, Redevable.nic)
            .limit(criteria.limit)
            .offset(criteria.offset)
        )
    ).all()
    return SearchPage(rows=rows, total=int(total or 0))

"""The configuration of a private Dovecot 2.3 instance holding an installation's boxes.

Users are the boxes (``LOGIN@domain`` and ``releves.LOGIN@domain``), whose passwords Dovecot
checks itself against the accounts' argon2 hashes with its SQL passdb on the installation's
PostgreSQL database: no program of ours runs per login, and a password changed in the
portal holds at once. Mail is kept in Maildir; the daemon delivers over LMTP, and looks
into a box as a master user (``box*releves-mailer``) when a crash left a delivery in doubt.
"""

from __future__ import annotations

import base64
import grp
import hashlib
import json
import os
import pwd
import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path

import jinja2
from sqlalchemy.engine import make_url

from releves_mailer.errors import UserError
from releves_mailer.files import PRIVATE_FILE, write_atomically
from releves_mailer.resources import templates_dir

__all__ = [
    "MASTER_USER",
    "SETUP_FILE",
    "DovecotPorts",
    "DovecotSetup",
    "load_dovecot_setup",
    "write_dovecot_config",
]

#: The daemon's master login in Dovecot (it opens any box: ``box*releves-mailer``).
MASTER_USER = "releves-mailer"
_FILES = ("dovecot.conf", "dovecot-sql.conf.ext")
#: What the daemon reads back to reach the instance (addresses, ports, domain, certificate).
SETUP_FILE = "releves-mailer-setup.json"


@dataclass(frozen=True, slots=True)
class DovecotPorts:
    imap: int = 143
    imaps: int = 993
    lmtp: int = 24


@dataclass(frozen=True, slots=True)
class DovecotSetup:
    """What the daemon needs to reach the Dovecot instance written in ``folder``."""

    folder: Path
    listen: str
    ports: DovecotPorts
    domain: str
    #: The TLS certificate Dovecot shows (the installation's).
    certificate: Path

    @property
    def master_password_file(self) -> Path:
        return self.folder / "master-password"

    def master_password(self) -> str:
        return self.master_password_file.read_text(encoding="utf-8").strip()


def _connect_string(database_url: str) -> str:
    url = make_url(database_url)
    if not url.drivername.startswith("postgresql"):
        raise UserError(
            "Dovecot lit les comptes dans la base PostgreSQL de l'installation : "
            "configurez [database] url vers PostgreSQL (releves-mailer db copy --to …)"
        )
    values = {
        "host": url.host or "127.0.0.1",
        "port": str(url.port or 5432),
        "dbname": url.database or "",
        "user": url.username or "",
        "password": url.password or "",
    }
    return " ".join(f"{key}={shlex.quote(value)}" for key, value in values.items() if value)


def master_hash(password: str) -> str:
    """The master password as Dovecot checks it: salted SHA-512 (``{SSHA512}``).

    The password is 256 random bits, beyond any guessing: a slow hash would protect nothing
    and cost every master login its time (argon2id with 64 MiB took 0.3-0.45 s per login on
    the 2-core test machine, the whole cost of a delivery over LMTP)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.sha512(password.encode() + salt).digest()
    return "{SSHA512}" + base64.b64encode(digest + salt).decode()


def write_dovecot_config(
    folder: Path,
    *,
    database_url: str,
    domain: str,
    certificate: Path,
    key: Path,
    listen: str = "127.0.0.1",
    ports: DovecotPorts | None = None,
    internal_user: str | None = None,
    mail_user: str | None = None,
) -> DovecotSetup:
    """Write the configuration of a Dovecot instance into ``folder`` (made if missing).

    ``internal_user`` runs Dovecot's own processes and ``mail_user`` owns the mail; both
    default to the current user, or to ``dovecot`` and ``nobody`` when run by root."""
    root = os.geteuid() == 0
    internal_user = internal_user or ("dovecot" if root else pwd.getpwuid(os.geteuid()).pw_name)
    mail_user = mail_user or ("nobody" if root else internal_user)
    try:
        mail_account = pwd.getpwnam(mail_user)
        pwd.getpwnam(internal_user)
    except KeyError as error:
        raise UserError(f"utilisateur système inconnu : {error.args[0]}") from None
    mail_group = grp.getgrgid(mail_account.pw_gid).gr_name
    ports = ports or DovecotPorts()
    connect = _connect_string(database_url)
    for sub in ("mail", "log", "state"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    if root:
        os.chown(folder / "mail", mail_account.pw_uid, mail_account.pw_gid)
    values = {
        "source": "releves-mailer.toml",
        "folder": folder.resolve(),
        "listen": listen,
        "domain": domain,
        "certificate": certificate.resolve(),
        "key": key.resolve(),
        "internal_user": internal_user,
        "mail_user": mail_user,
        "mail_group": mail_group,
        "master_user": MASTER_USER,
        "imap_port": ports.imap,
        "imaps_port": ports.imaps,
        "lmtp_address": "127.0.0.1" if listen in ("127.0.0.1", "localhost") else listen,
        "lmtp_port": ports.lmtp,
        "connect": connect,
    }
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir() / "dovecot"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701  (configuration files, not HTML)
    )
    for name in _FILES:
        text = environment.get_template(name).render(values)
        write_atomically(folder / name, text.encode())
    # The master password: kept beside the configuration for the daemon, hashed for Dovecot.
    password = secrets.token_urlsafe(32)
    write_atomically(folder / "master-password", (password + "\n").encode())
    write_atomically(
        folder / "master-users", f"{MASTER_USER}@{domain}:{master_hash(password)}\n".encode()
    )
    for name in ("dovecot-sql.conf.ext", "master-users", "master-password"):
        (folder / name).chmod(PRIVATE_FILE)
    if root:
        # Dovecot's auth processes read these as its internal user.
        internal = pwd.getpwnam(internal_user)
        for name in ("dovecot-sql.conf.ext", "master-users"):
            os.chown(folder / name, internal.pw_uid, internal.pw_gid)
    setup = DovecotSetup(folder.resolve(), listen, ports, domain, certificate.resolve())
    description = {
        "listen": setup.listen,
        "ports": {"imap": ports.imap, "imaps": ports.imaps, "lmtp": ports.lmtp},
        "domain": setup.domain,
        "certificate": str(setup.certificate),
    }
    write_atomically(folder / SETUP_FILE, (json.dumps(description, indent=2) + "\n").encode())
    return setup


def load_dovecot_setup(folder: Path) -> DovecotSetup:
    """Read back what :func:`write_dovecot_config` wrote into ``folder``.

    Raises :class:`UserError` naming the file and the field when it is missing or damaged."""
    path = folder / SETUP_FILE
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(
            f"{path} : fichier absent ; écrivez d'abord la configuration de Dovecot "
            f"(releves-mailer dovecot-config {folder})"
        ) from None
    except (OSError, ValueError) as error:
        raise UserError(f"{path} : illisible ({error})") from None
    try:
        ports = description["ports"]
        setup = DovecotSetup(
            folder.resolve(),
            str(description["listen"]),
            DovecotPorts(int(ports["imap"]), int(ports["imaps"]), int(ports["lmtp"])),
            str(description["domain"]),
            Path(description["certificate"]),
        )
    except KeyError as error:
        raise UserError(f"{path} : champ {error.args[0]!r} manquant") from None
    except (TypeError, ValueError) as error:
        raise UserError(f"{path} : valeur invalide ({error})") from None
    if not setup.master_password_file.is_file():
        raise UserError(f"{setup.master_password_file} : fichier absent")
    return setup

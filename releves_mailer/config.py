"""Admin configuration: one TOML file, validated at start with errors naming file and key.

At the package root: every area reads its own section of it.

Every key may also come from the environment as ``RELEVES_MAILER__<SECTION>__<KEY>``
(upper case, nested sections joined by ``__``), which is how secrets stay out of the file:
``RELEVES_MAILER__RELAY__PASSWORD=...``. The environment wins over the file.
"""

from __future__ import annotations

import datetime as dt
import os
import tomllib
from collections.abc import Mapping
from ipaddress import ip_network
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from releves_mailer.errors import UserError

__all__ = [
    "CONFIG_ENV_VARIABLE",
    "CONFIG_FILE_NAME",
    "DEFAULT_CONFIG_PATH",
    "ENV_PREFIX",
    "Config",
    "ConfigError",
    "async_database_url",
    "find_config_path",
    "load_config",
]

CONFIG_FILE_NAME = "releves-mailer.toml"
CONFIG_ENV_VARIABLE = "RELEVES_MAILER_CONFIG"
DEFAULT_CONFIG_PATH = Path("releves-data") / CONFIG_FILE_NAME
ENV_PREFIX = "RELEVES_MAILER__"

Port = Annotated[int, Field(ge=0, le=65535)]


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the key path."""

    def __init__(self, message: str, *, file: Path | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        self.reason = message
        where = f"{file}" if file else "configuration"
        if key:
            where += f", clé « {key} »"
        super().__init__(f"{where} : {message}")


class Section(BaseModel):
    """Base of every section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PortalSection(Section):
    domain: str = "releves.localhost"
    name: str = "Portail"
    data_dir: Path = Path(".")
    support_email: str = ""
    support_phone: str = ""
    #: Lines read at most from a redevables import file (portal and command line).
    import_max_lines: int = Field(default=100_000, ge=1)
    #: Active secondary accounts a primary account may open in the portal.
    max_secondary_accounts: int = Field(default=10, ge=0, le=10_000)

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        value = value.strip().lower()
        if not value or " " in value or "@" in value:
            raise ValueError("nom de domaine invalide")
        return value


class DatabaseSection(Section):
    url: str = ""

    @field_validator("url")
    @classmethod
    def _supported(cls, value: str) -> str:
        if value:
            try:
                async_database_url(value)
            except UserError as error:
                raise ValueError(error.message) from None
        return value


class ImapSection(Section):
    listen: str = "127.0.0.1"
    port: Port = 1143
    tls_port: Port = 1993
    plaintext_auth_from_loopback: bool = True
    max_line_length: int = Field(default=65536, ge=1024)
    max_literal_size: int = Field(default=64 * 1024 * 1024, ge=1024)
    max_connections_per_login: int = Field(default=20, ge=1)
    idle_timeout_seconds: int = Field(default=1800, ge=60)
    #: Seconds between checks that logged-in sessions' passwords and accounts are unchanged.
    credentials_check_seconds: int = Field(default=30, ge=1, le=3600)
    # Before login: the smallest limits (an unauthenticated peer costs next to nothing).
    preauth_max_line_length: int = Field(default=8192, ge=512)
    preauth_max_literal_size: int = Field(default=8192, ge=512)
    preauth_idle_timeout_seconds: int = Field(default=60, ge=1)
    # Literals above this go to a temporary file; message bodies above it are streamed.
    spool_threshold: int = Field(default=1024 * 1024, ge=4096)
    #: Folders one user may create (INBOX included); CREATE beyond gets NO [LIMIT].
    max_folders_per_user: int = Field(default=1000, ge=1)
    #: Caps on open connections (IMAP and IMAPS together), see ``releves_mailer.listeners``.
    max_connections: int = Field(default=1000, ge=1)
    max_connections_per_address: int = Field(default=50, ge=1)


class MailboxSection(Section):
    """Which engine holds the boxes: the daemon's own store and IMAP server, or Dovecot."""

    engine: Literal["builtin", "dovecot"] = "builtin"
    #: With ``engine = "dovecot"``: the folder ``releves-mailer dovecot-config`` wrote.
    dovecot_dir: Path = Path("dovecot")


class SmtpSection(Section):
    listen: str = "127.0.0.1"
    port: Port = 2525
    max_message_size: int = Field(default=50 * 1024 * 1024, ge=1024)
    #: Networks (CIDR) whose clients may deliver without authenticating; empty: none.
    trusted_networks: list[IPvAnyNetwork] = Field(default_factory=list, max_length=100)
    #: Bytes one mail address may hold (all its folders) before SMTP answers 552 and IMAP
    #: APPEND or COPY answer NO [OVERQUOTA]; statements are delivered whatever it holds.
    mailbox_quota: int = Field(default=1024 * 1024 * 1024, ge=1024)
    #: Caps on open connections, see ``releves_mailer.listeners``.
    max_connections: int = Field(default=200, ge=1)
    max_connections_per_address: int = Field(default=20, ge=1)


class AuthSection(Section):
    """The login guard shared by IMAP, SMTP AUTH and the portal."""

    window_minutes: int = Field(default=15, ge=1, le=24 * 60)
    #: Failed or pending logins of one login from one client address before refusals.
    max_failures_per_login_and_address: int = Field(default=5, ge=1, le=1000)
    #: Failed or pending logins from one client address (any login) before refusals.
    max_failures_per_address: int = Field(default=30, ge=1, le=1000)
    #: Failures of one login (from anywhere) before its attempts are slowed down.
    delay_after_failures: int = Field(default=3, ge=0, le=1000)
    first_delay_seconds: float = Field(default=1.0, ge=0, le=60)
    max_delay_seconds: float = Field(default=15.0, ge=0, le=120)

    @property
    def window(self) -> dt.timedelta:
        return dt.timedelta(minutes=self.window_minutes)


class HttpSection(Section):
    listen: str = "127.0.0.1"
    port: Port = 8080
    public_url: str = "http://127.0.0.1:8080"
    max_connections: int = Field(default=1000, ge=1)
    max_connections_per_address: int = Field(default=50, ge=1)
    #: Client networks (CIDR) that may read ``/health`` and ``/metrics``; others get 403.
    metrics_allowed: list[IPvAnyNetwork] = Field(
        default_factory=lambda: [ip_network("127.0.0.0/8"), ip_network("::1/128")],
        max_length=100,
    )
    #: ``/health`` says the outbox is stuck when a mail has waited longer than this.
    health_outbox_max_age_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)
    #: ``/health`` says collection is stuck when no round has ended for this long.
    health_collection_max_age_minutes: int = Field(default=30, ge=1, le=7 * 24 * 60)


class WebmailSection(Section):
    """The portal's webmail: the IMAP server it reads the boxes from, and its limits."""

    #: Empty: the engine holding the boxes: the daemon's own IMAP server (its plain port,
    #: over the loopback), or with ``[mailbox] engine = "dovecot"`` Dovecot's.
    imap_host: str = ""
    #: 0: the engine's port (``imap.port``, or ``imap.tls_port`` with ``tls = "imaps"``;
    #: Dovecot's IMAP or IMAPS port).
    imap_port: Port = 0
    tls: Literal["none", "imaps"] = "none"
    #: CA certificates (PEM) trusted for IMAPS; empty: the system's, plus ``[tls]``'s own.
    ca_file: Path | None = None
    message_max_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    zip_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)
    search_max_length: int = Field(default=100, ge=1, le=1000)


class TlsSection(Section):
    certificate: Path = Path("tls/cert.pem")
    key: Path = Path("tls/key.pem")


class SigningSection(Section):
    certificate: Path = Path("signing/portal-cert.pem")
    key: Path = Path("signing/portal-key.pem")


class SecretsSection(Section):
    key_file: Path = Path("keys/secrets.key")


class CollectionSection(Section):
    window_start: dt.time = dt.time(0, 0)
    window_end: dt.time = dt.time(6, 0)
    refresh_hours: int = Field(default=24, ge=1)
    jitter_hours: int = Field(default=3, ge=0)
    max_concurrency_per_provider: int = Field(default=4, ge=1)
    #: Lease of a worker's claim on a refresh, a cut or a delivery (several daemons).
    claim_lease_seconds: int = Field(default=300, ge=1, le=86_400)

    @model_validator(mode="after")
    def _window(self) -> CollectionSection:
        if self.window_start == self.window_end:
            raise ValueError("la fenêtre de collecte est vide (début = fin)")
        return self


class RelaySection(Section):
    host: str = ""
    port: Port = 587
    username: str = ""
    password: SecretStr = SecretStr("")
    starttls: bool = True
    from_address: str = ""


class PowensSection(Section):
    enabled: bool = False
    domain: str = ""
    #: Overrides of the API and webview addresses (a proxy, a test double); empty: Powens'.
    api_url: str = ""
    webview_url: str = ""
    client_id: str = ""
    client_secret: SecretStr = SecretStr("")
    webhook_secret: SecretStr = SecretStr("")
    #: Webhook bodies above this are refused (413) before more is read.
    webhook_max_body: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    #: Webhook signatures older than this are refused, and replays within it.
    webhook_max_age_seconds: int = Field(default=300, ge=30, le=3600)

    @model_validator(mode="after")
    def _required_when_enabled(self) -> PowensSection:
        if self.enabled:
            missing = [
                name
                for name, value in (
                    ("domain", self.domain),
                    ("client_id", self.client_id),
                    ("client_secret", self.client_secret.get_secret_value()),
                )
                if not value
            ]
            if missing:
                raise ValueError(
                    "valeur obligatoire quand Powens est activé : " + ", ".join(missing)
                )
        return self


class TestBankSection(Section):
    enabled: bool = True
    seed: int = 1
    errors: list[str] = Field(default_factory=list)


class AggregatorSection(Section):
    powens: PowensSection = Field(default_factory=PowensSection)
    testbank: TestBankSection = Field(default_factory=TestBankSection)


class TemplatesSection(Section):
    custom_dir: Path | None = None


class LoggingSection(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"
    file: Path | None = None


class EdiSection(Section):
    """Redevables created from EDI deposits: their schedule (Annexe 1 fields 6 to 8)."""

    periodicity: Literal[
        "JOURNALIERE", "HEBDOMADAIRE", "MENSUELLE", "TRIMESTRIELLE", "SEMESTRIELLE", "ANNUELLE"
    ] = "MENSUELLE"
    month: int | None = Field(default=None, ge=1, le=12)
    #: 0: the last day of the month.
    day: int | None = Field(default=0, ge=0, le=31)


class Config(Section):
    """The whole validated configuration. Relative paths are resolved against ``data_dir``."""

    portal: PortalSection = Field(default_factory=PortalSection)
    database: DatabaseSection = Field(default_factory=DatabaseSection)
    imap: ImapSection = Field(default_factory=ImapSection)
    mailbox: MailboxSection = Field(default_factory=MailboxSection)
    smtp: SmtpSection = Field(default_factory=SmtpSection)
    auth: AuthSection = Field(default_factory=AuthSection)
    http: HttpSection = Field(default_factory=HttpSection)
    webmail: WebmailSection = Field(default_factory=WebmailSection)
    tls: TlsSection = Field(default_factory=TlsSection)
    signing: SigningSection = Field(default_factory=SigningSection)
    secrets: SecretsSection = Field(default_factory=SecretsSection)
    collection: CollectionSection = Field(default_factory=CollectionSection)
    relay: RelaySection = Field(default_factory=RelaySection)
    aggregator: AggregatorSection = Field(default_factory=AggregatorSection)
    templates: TemplatesSection = Field(default_factory=TemplatesSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)
    edi: EdiSection = Field(default_factory=EdiSection)

    #: Where the file was read from (not a key of the file).
    source: Path | None = Field(default=None, exclude=True)

    @property
    def data_dir(self) -> Path:
        return self.portal.data_dir

    def path(self, relative: Path) -> Path:
        """Resolve a path of the config against the data directory."""
        return relative if relative.is_absolute() else self.data_dir / relative

    @property
    def database_url(self) -> str:
        if self.database.url:
            return async_database_url(self.database.url)
        return f"sqlite+aiosqlite:///{self.data_dir / 'releves.sqlite3'}"


#: The async drivers the daemon uses, for URLs that name none (``postgresql://…``).
_ASYNC_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}


def async_database_url(url: str) -> str:
    """``url`` with the async driver the daemon uses when it names none; a URL of another
    database is refused (only PostgreSQL and SQLite are supported)."""
    scheme, separator, rest = url.partition("://")
    engine, plus, _driver = scheme.partition("+")
    if not separator or engine not in _ASYNC_DRIVERS:
        shown = url.rsplit("@", 1)[-1]  # never the password
        raise UserError(
            f"adresse de base de données non reconnue : {shown!r} "
            "(attendu postgresql://… ou sqlite:///…)"
        )
    return url if plus else f"{_ASYNC_DRIVERS[engine]}://{rest}"


_FRENCH_REASONS = {
    "missing": "valeur obligatoire manquante",
    "extra_forbidden": "clé inconnue",
    "int_parsing": "doit être un nombre entier",
    "int_type": "doit être un nombre entier",
    "float_parsing": "doit être un nombre",
    "float_type": "doit être un nombre",
    "ip_any_network": "doit être un réseau IP (ex. 192.0.2.0/24)",
    "bool_parsing": "doit être true ou false",
    "bool_type": "doit être true ou false",
    "string_type": "doit être une chaîne de caractères",
    "list_type": "doit être une liste",
    "model_type": "doit être une section [table]",
    "dict_type": "doit être une section [table]",
    "time_parsing": "doit être une heure HH:MM",
    "time_type": "doit être une heure HH:MM",
    "path_type": "doit être un chemin",
    "literal_error": "valeur non autorisée",
}


def _french_reason(error: Mapping[str, Any]) -> str:
    kind = str(error.get("type", ""))
    if kind in ("greater_than_equal", "less_than_equal"):
        limits = error.get("ctx", {})
        bound = next(iter(limits.values()), "?")
        word = "au moins" if kind == "greater_than_equal" else "au plus"
        return f"doit valoir {word} {bound}"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"valeur non autorisée (attendu : {expected})"
    if kind == "value_error":
        return str(error.get("ctx", {}).get("error", error.get("msg", "")))
    reason = _FRENCH_REASONS.get(kind, str(error.get("msg", kind)))
    if kind != "missing" and "input" in error and not isinstance(error["input"], dict):
        reason += f" (reçu : {error['input']!r})"
    return reason


def _environment_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part]
        if not parts:
            continue
        node = overrides
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return overrides


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def find_config_path(option: Path | None, environ: Mapping[str, str] | None = None) -> Path:
    """Pick ``--config``, else ``$RELEVES_MAILER_CONFIG``, else the default path."""
    environ = os.environ if environ is None else environ
    if option is not None:
        return option
    if environ.get(CONFIG_ENV_VARIABLE):
        return Path(environ[CONFIG_ENV_VARIABLE])
    return DEFAULT_CONFIG_PATH


def parse_config(
    raw: Mapping[str, Any], *, file: Path | None, environ: Mapping[str, str] | None = None
) -> Config:
    """Validate a decoded TOML document (plus environment overrides) into a :class:`Config`."""
    environ = os.environ if environ is None else environ
    document = _merge(dict(raw), _environment_overrides(environ))
    try:
        config = Config.model_validate(document)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise ConfigError(_french_reason(first), file=file, key=key) from None
    base = file.parent if file else Path.cwd()
    data_dir = config.portal.data_dir
    data_dir = (data_dir if data_dir.is_absolute() else base / data_dir).resolve()
    portal = config.portal.model_copy(update={"data_dir": data_dir})
    return config.model_copy(update={"portal": portal, "source": file})


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config file at ``path``; raise :class:`ConfigError` otherwise."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            "fichier introuvable (créez-le avec « releves-mailer init DOSSIER »)", file=path
        ) from None
    except UnicodeDecodeError:
        raise ConfigError("le fichier n'est pas en UTF-8", file=path) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"syntaxe TOML invalide : {error}", file=path) from None
    except OSError as error:
        raise ConfigError(f"lecture impossible : {error.strerror}", file=path) from None
    return parse_config(raw, file=path.resolve(), environ=environ)

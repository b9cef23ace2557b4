"""Fixtures of the delivery tests: a portal key pair made at run time, and openssl."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from releves_mailer.delivery.compose import StatementMail
from releves_mailer.render import Renderer
from releves_mailer.signing.certificates import write_signing_pair
from releves_mailer.signing.smime import SmimeSigner

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


@pytest.fixture(scope="session")
def signing_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(key, certificate) PEM paths of a self-signed portal pair made once per run (RSA key
    generation is slow), never committed."""
    folder = tmp_path_factory.mktemp("portal")
    key, cert = folder / "keys" / "portal-key.pem", folder / "keys" / "portal-cert.pem"
    write_signing_pair("portail@releves.example", "Portail", key, cert, dt.datetime.now(dt.UTC))
    return key, cert


@pytest.fixture(scope="session")
def signer(signing_pair: tuple[Path, Path]) -> SmimeSigner:
    return SmimeSigner.from_files(*signing_pair)


@pytest.fixture
def openssl_verify(
    tmp_path: Path, signing_pair: tuple[Path, Path]
) -> Callable[[bytes], subprocess.CompletedProcess[bytes]]:
    """Run ``openssl smime -verify -CAfile <portal cert>`` on a mail; stdout is the content."""
    if not Path(OPENSSL).exists():
        pytest.skip("the openssl binary is not installed: cannot check signatures for real")

    def verify(raw: bytes) -> subprocess.CompletedProcess[bytes]:
        mail = tmp_path / "mail.eml"
        mail.write_bytes(raw)
        return subprocess.run(
            [OPENSSL, "smime", "-verify", "-in", str(mail), "-CAfile", str(signing_pair[1])],
            capture_output=True,
            check=False,
        )

    return verify


CFONB_LINE = b"04" + b"1" * 118 + b"\r\n"


def statement_mail(**overrides: object) -> StatementMail:
    """A small weekly statement; any field can be replaced."""
    fields: dict[str, object] = {
        "statement_id": 42,
        "periodicity": "HEBDOMADAIRE",
        "company_name": "ACME Société",
        "siret": "40483304800022",
        "bank_name": "Connecteur de test",
        "account_label": "Compte chèque",
        "iban": "FR7613026240019300290000029",
        "period_start": dt.date(2026, 11, 19),
        "period_end": dt.date(2026, 11, 25),
        "due_date": dt.date(2026, 11, 25),
        "movement_count": 3,
        "opening_balance": 123456,
        "closing_balance": 120000,
        "currency": "EUR",
        "cfonb": CFONB_LINE * 5,
        "recipient": "demo@releves.example",
        "domain": "releves.example",
        "portal_name": "Portail ASPOne.fr",
        "created_at": dt.datetime(2026, 11, 25, 23, 10, tzinfo=dt.UTC),
    }
    fields.update(overrides)
    return StatementMail(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def renderer() -> Renderer:
    return Renderer()


@pytest.fixture
def make_statement() -> Callable[..., StatementMail]:
    """Factory of :class:`StatementMail` (see :func:`statement_mail`)."""
    return statement_mail

"""Fixtures of the signing tests: a portal key pair made at run time, and openssl."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

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

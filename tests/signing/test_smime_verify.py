"""The S/MIME check of received mails: valid, altered, unknown or expired signer, unsigned."""

from __future__ import annotations

import datetime as dt
from email.message import EmailMessage
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from releves_mailer.signing.smime import SmimeSigner
from releves_mailer.signing.verify import SignatureState, check_signature


def message() -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "portail@releves.example"
    mail["To"] = "releves.demo@releves.example"
    mail["Subject"] = "Relevé"
    mail.set_content("Bonjour,\nvotre relevé est joint.\n")
    mail.add_attachment(b"0400001\r\n", maintype="application", subtype="octet-stream",
                        filename="Releve.cfonb")  # fmt: skip
    return mail


@pytest.fixture
def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def test_a_mail_signed_by_the_trusted_certificate_is_valid(
    signer: SmimeSigner, now: dt.datetime
) -> None:
    raw = signer.sign(message())
    check = check_signature(raw, [signer.certificate], now)
    assert check.state is SignatureState.VALID
    assert check.summary == "Signé par Portail <portail@releves.example> : signature valide."


@pytest.mark.parametrize(
    ("old", "new"),
    [(b"votre relev", b"notre relev"), (b"MDQwMDAwMQ0K", b"MDQwMDAwMg0K")],
)
def test_an_altered_body_or_attachment_is_invalid(
    signer: SmimeSigner, now: dt.datetime, old: bytes, new: bytes
) -> None:
    raw = signer.sign(message())
    assert old in raw
    check = check_signature(raw.replace(old, new, 1), [signer.certificate], now)
    assert check.state is SignatureState.INVALID
    assert "modifié après sa signature" in check.summary


def test_an_outer_header_is_outside_the_signature(signer: SmimeSigner, now: dt.datetime) -> None:
    raw = signer.sign(message()).replace(b"Subject: ", b"Subject: Re: ", 1)
    assert check_signature(raw, [signer.certificate], now).state is SignatureState.VALID


def test_an_unknown_or_expired_signer_is_not_trusted(signer: SmimeSigner, now: dt.datetime) -> None:
    raw = signer.sign(message())
    unknown = check_signature(raw, [], now)
    assert unknown.state is SignatureState.UNTRUSTED
    assert "certificat du signataire inconnu" in unknown.summary
    late = signer.certificate.not_valid_after_utc + dt.timedelta(days=1)
    expired = check_signature(raw, [signer.certificate], late)
    assert expired.state is SignatureState.UNTRUSTED
    assert "hors de sa période de validité" in expired.summary


def test_a_signer_issued_by_a_trusted_authority_is_valid(tmp_path: Path, now: dt.datetime) -> None:
    authority = trustme.CA()
    leaf = authority.issue_cert("portail@releves.example")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    leaf.private_key_pem.write_to_path(str(key))
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    raw = SmimeSigner.from_files(key, cert).sign(message())
    anchor = x509.load_pem_x509_certificate(authority.cert_pem.bytes())
    assert check_signature(raw, [anchor], now).state is SignatureState.VALID


def test_unsigned_and_unreadable_signatures(signer: SmimeSigner, now: dt.datetime) -> None:
    assert check_signature(message().as_bytes(), [], now).state is SignatureState.UNSIGNED
    raw = signer.sign(message())
    marker = b"S/MIME Cryptographic Signature\r\n\r\n"
    start = raw.index(marker) + len(marker)
    end = raw.rindex(b"\r\n--=_smime-")
    broken = check_signature(raw[:start] + b"AAAA" + raw[end:], [signer.certificate], now)
    assert broken.state is SignatureState.INVALID
    assert broken.summary == "Signature : signature illisible"

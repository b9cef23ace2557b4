"""S/MIME signing: openssl accepts what we sign, rejects tampering; clear key/cert errors."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from releves_mailer.signing.certificates import write_signing_pair
from releves_mailer.signing.smime import SigningError, SmimeSigner, canonical_bytes, split_entity

RAW = (
    b"From: Portail <portail@releves.example>\n"
    b"To: demo@releves.example\n"
    b"Subject: essai\n"
    b"Message-ID: <essai-1@releves.example>\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: text/plain; charset=us-ascii\n"
    b"Content-Transfer-Encoding: 7bit\n"
    b"\n"
    b"Bonjour,\n"
    b"ligne deux\n"
)


def _message() -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Portail <portail@releves.example>"
    message["To"] = "demo@releves.example"
    message["Reply-To"] = "noreply@releves.example"
    message["Subject"] = "Relevé QUOTIDIEN du compte bancaire ACME - Compte chèque"
    message["Date"] = "Thu, 26 Nov 2026 00:10:00 +0100"
    message["Message-ID"] = "<releve-1@releves.example>"
    message.set_content(
        "Bonjour,\n\nVeuillez trouver en pièce jointe le relevé.\n", cte="quoted-printable"
    )
    message.add_attachment(b"0" * 120 + b"\r\n", "application", "octet-stream", filename="r.cfonb")
    return message


def test_signed_bytes_verify_with_openssl(signer, openssl_verify):
    signed = signer.sign(RAW)
    result = openssl_verify(signed)
    assert result.returncode == 0, result.stderr.decode()
    assert b"Verification successful" in result.stderr
    # The verified content is the body we gave, canonicalised to CRLF.
    assert b"Bonjour,\r\nligne deux" in result.stdout


def test_signed_email_message_verifies_and_keeps_headers_outside(signer, openssl_verify):
    signed = signer.sign(_message())
    result = openssl_verify(signed)
    assert result.returncode == 0, result.stderr.decode()
    parsed = email.message_from_bytes(signed, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/signed"
    assert parsed.get_param("protocol") == "application/pkcs7-signature"
    assert parsed.get_param("micalg") == "sha-256"
    assert parsed["From"] == "Portail <portail@releves.example>"
    assert parsed["To"] == "demo@releves.example"
    assert parsed["Reply-To"] == "noreply@releves.example"
    assert parsed["Subject"] == "Relevé QUOTIDIEN du compte bancaire ACME - Compte chèque"
    assert parsed["Message-ID"] == "<releve-1@releves.example>"
    assert parsed["Date"] == "Thu, 26 Nov 2026 00:10:00 +0100"
    signed_part, signature = parsed.get_payload()
    assert signed_part.get_content_type() == "multipart/mixed"
    assert signed_part["From"] is None and signed_part["Subject"] is None
    assert signature.get_content_type() == "application/pkcs7-signature"
    assert parsed.get_all("MIME-Version") == ["1.0"]


def test_every_line_ends_with_crlf(signer):
    signed = signer.sign(RAW)
    assert b"\n" not in signed.replace(b"\r\n", b"")
    assert signed.endswith(b"--\r\n")


@pytest.mark.parametrize(
    ("old", "new"),
    [(b"ligne deux", b"ligne DEUX"), (b"Content-Type: text/plain", b"Content-Type: text/html")],
)
def test_tampered_mail_fails_verification(signer, openssl_verify, old, new):
    signed = signer.sign(RAW)
    assert old in signed
    result = openssl_verify(signed.replace(old, new, 1))
    assert result.returncode != 0
    assert b"Verification successful" not in result.stderr


def test_outer_header_change_does_not_break_signature(signer, openssl_verify):
    """Outer headers are outside the signed entity (RFC 8551): the signature covers the body."""
    signed = signer.sign(RAW).replace(b"Subject: essai", b"Subject: autre", 1)
    assert openssl_verify(signed).returncode == 0


def test_signature_framing_is_deterministic(signer):
    first, second = signer.sign(RAW), signer.sign(RAW)
    boundary = email.message_from_bytes(first).get_boundary()
    assert boundary is not None and boundary.startswith("=_smime-")
    assert email.message_from_bytes(second).get_boundary() == boundary
    head = first.split(b"\r\n\r\n--" + boundary.encode() + b"\r\n", 1)[0]
    assert second.startswith(head)


def test_split_entity_moves_content_headers_inside():
    outer, entity = split_entity(canonical_bytes(RAW))
    assert [field.split(b":")[0] for field in outer] == [b"From", b"To", b"Subject", b"Message-ID"]
    assert entity.startswith(b"Content-Type: text/plain; charset=us-ascii\r\n")
    assert b"MIME-Version" not in entity
    assert entity.endswith(b"\r\n\r\nBonjour,\r\nligne deux\r\n")


def test_folded_header_stays_whole():
    raw = b"Subject: un\r\n deux\r\nContent-Type: text/plain;\r\n charset=utf-8\r\n\r\ncorps"
    outer, entity = split_entity(raw)
    assert outer == [b"Subject: un\r\n deux"]
    assert entity == b"Content-Type: text/plain;\r\n charset=utf-8\r\n\r\ncorps"


async def test_sign_async_runs_in_a_thread(signer, openssl_verify):
    signed = await signer.sign_async(RAW)
    assert openssl_verify(signed).returncode == 0


def test_missing_files_are_named(tmp_path, signing_pair):
    key, cert = signing_pair
    with pytest.raises(SigningError, match=r"clé de signature introuvable : .*absent-key\.pem"):
        SmimeSigner.from_files(tmp_path / "absent-key.pem", cert)
    with pytest.raises(SigningError, match=r"certificat de signature introuvable : .*absent\.pem"):
        SmimeSigner.from_files(key, tmp_path / "absent.pem")


def test_invalid_pem_is_named(tmp_path, signing_pair):
    key, cert = signing_pair
    junk = tmp_path / "junk.pem"
    junk.write_text("pas un PEM\n")
    with pytest.raises(SigningError, match=r"clé de signature invalide .*junk\.pem"):
        SmimeSigner.from_files(junk, cert)
    with pytest.raises(SigningError, match=r"certificat de signature invalide .*junk\.pem"):
        SmimeSigner.from_files(key, junk)


def test_mismatched_pair_is_refused(tmp_path, signing_pair):
    key, _ = signing_pair
    other_key, other_cert = tmp_path / "o" / "key.pem", tmp_path / "o" / "cert.pem"
    write_signing_pair(
        "portail@autre.example", "Autre", other_key, other_cert, dt.datetime.now(dt.UTC)
    )
    with pytest.raises(SigningError, match=r"ne correspond pas au certificat .*o/cert\.pem"):
        SmimeSigner.from_files(key, other_cert)


def test_chain_certificates_after_the_first_are_embedded(tmp_path, signing_pair, openssl_verify):
    key, cert = signing_pair
    extra_key, extra_cert = tmp_path / "x" / "key.pem", tmp_path / "x" / "cert.pem"
    write_signing_pair("ca@autre.example", "Autre", extra_key, extra_cert, dt.datetime.now(dt.UTC))
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(cert.read_bytes() + extra_cert.read_bytes())
    signer = SmimeSigner.from_files(key, bundle)
    signed = signer.sign(RAW)
    assert openssl_verify(signed).returncode == 0
    assert signer.expires_at > dt.datetime.now(dt.UTC)


def test_from_config_resolves_against_data_dir(signing_pair):
    from releves_mailer.config import parse_config

    key, _ = signing_pair
    config = parse_config(
        {
            "portal": {"data_dir": str(key.parent.parent)},
            "signing": {"key": "keys/portal-key.pem", "certificate": "keys/portal-cert.pem"},
        },
        file=None,
        environ={},
    )
    assert (
        SmimeSigner.from_files(
            config.path(config.signing.key), config.path(config.signing.certificate)
        ).certificate.subject
        is not None
    )
    assert Path(config.path(config.signing.key)) == key

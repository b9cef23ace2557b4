"""Self-signed key pairs written by ``init``: the TLS certificate and the mail signing one."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from releves_mailer.signing.keyfiles import create_key_file

__all__ = ["write_signing_pair", "write_tls_pair"]

_VALIDITY = dt.timedelta(days=3 * 365)


def _private_key() -> rsa.RSAPrivateKey:
    # RSA rather than EC: S/MIME readers (Outlook, older openssl builds) all accept it.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_pair(
    key: rsa.RSAPrivateKey, cert: x509.Certificate, key_path: Path, cert_path: Path
) -> None:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # The certificate is public, but nothing in the data directory is others' to read.
    create_key_file(key_path, key_pem)
    create_key_file(cert_path, cert.public_bytes(serialization.Encoding.PEM))


def _builder(
    subject: x509.Name, key: rsa.RSAPrivateKey, now: dt.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )


def write_tls_pair(domain: str, key_path: Path, cert_path: Path, now: dt.datetime) -> None:
    """A self-signed server certificate for ``domain``, localhost and the loopback addresses."""
    key = _private_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    names: list[x509.GeneralName] = [
        x509.DNSName(domain),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    cert = (
        _builder(subject, key, now)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_pair(key, cert, key_path, cert_path)


def write_signing_pair(
    address: str, organisation: str, key_path: Path, cert_path: Path, now: dt.datetime
) -> None:
    """A self-signed S/MIME signing certificate for the portal's sender ``address``."""
    key = _private_key()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, organisation),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, address),
        ]
    )
    cert = (
        _builder(subject, key, now)
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    _write_pair(key, cert, key_path, cert_path)

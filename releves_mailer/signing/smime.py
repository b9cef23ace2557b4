"""S/MIME signing of outgoing mail: ``multipart/signed`` with a detached PKCS#7 SHA-256 signature.

How a message is signed (RFC 8551 §3.5.3, RFC 1847):

1. The message is serialised once with CRLF line ends (an :class:`email.message.EmailMessage`
   through the SMTP policy; raw bytes have their bare LF turned into CRLF).
2. Its header block is split: ``Content-*`` fields stay with the body and form the signed
   MIME entity; every other field (From, To, Subject, Date, Message-ID, Reply-To...) moves to
   the outer ``multipart/signed`` header, readable by every client and IMAP ENVELOPE.
3. The entity's canonical bytes are signed as they are (``PKCS7Options.Binary``: no second
   canonicalisation), the signature is a detached CMS SignedData carrying the certificate.
4. The outer boundary is derived from a hash of the entity: the same content always gives
   the same framing, and the boundary cannot occur inside the signed part.

For the signature to survive transport, the entity should be 7-bit (quoted-printable text,
base64 attachments): :mod:`releves_mailer.delivery.compose` builds it so.

Verify a signed mail with ``openssl smime -verify -in mail.eml -CAfile portal-cert.pem``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
from email import policy
from email.message import Message
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs7

__all__ = ["SigningError", "SmimeSigner", "canonical_bytes", "split_entity"]

_CRLF: Final = b"\r\n"
_SIGN_OPTIONS: Final = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
_SMTP_POLICY: Final = policy.SMTP
_PREAMBLE: Final = b"This is an S/MIME signed message."
_SIGNATURE_HEADERS: Final = (
    b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="smime.p7s"\r\n'
    b"Content-Description: S/MIME Cryptographic Signature\r\n"
)

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class SigningError(Exception):
    """The signing key or certificate cannot be used; the message names the file (French)."""


def canonical_bytes(message: Message | bytes) -> bytes:
    """Serialise ``message`` with CRLF line ends everywhere (bare LF and CR become CRLF)."""
    raw = message.as_bytes(policy=_SMTP_POLICY) if isinstance(message, Message) else message
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return raw.replace(b"\n", _CRLF)


def _header_fields(head: bytes) -> list[bytes]:
    """Split a CRLF header block into fields (a field keeps its folded continuation lines)."""
    fields: list[bytes] = []
    for line in head.split(_CRLF):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += _CRLF + line
        elif line:
            fields.append(line)
    return fields


def split_entity(raw: bytes) -> tuple[list[bytes], bytes]:
    """Split canonical message bytes into the outer header fields and the MIME entity to sign.

    ``Content-*`` fields go into the entity; ``MIME-Version`` is dropped (the signed wrapper
    carries its own); every other field is returned, in order, for the outer header.
    """
    head, separator, body = raw.partition(_CRLF + _CRLF)
    if not separator:
        if raw.endswith(_CRLF):
            head, body = raw[: -len(_CRLF)], b""
        else:
            head, body = raw, b""
    outer: list[bytes] = []
    content: list[bytes] = []
    for field in _header_fields(head):
        name = field.split(b":", 1)[0].strip().lower()
        if name.startswith(b"content-"):
            content.append(field)
        elif name != b"mime-version":
            outer.append(field)
    if not content:
        content.append(b"Content-Type: text/plain; charset=us-ascii")
    entity = _CRLF.join(content) + _CRLF + _CRLF + body
    return outer, entity


def _spki(public_key: CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SigningError(f"{what} introuvable : {path}") from None
    except OSError as error:
        raise SigningError(f"{what} illisible : {path} ({error.strerror})") from None


class SmimeSigner:
    """Signs mails with the portal's key and certificate (any extra certificates of the chain
    found after the first one in the certificate file are embedded too)."""

    def __init__(
        self,
        key: SigningKey,
        certificate: x509.Certificate,
        chain: tuple[x509.Certificate, ...] = (),
    ) -> None:
        if _spki(key.public_key()) != _spki(certificate.public_key()):
            raise SigningError("la clé de signature ne correspond pas au certificat")
        self._key = key
        self._certificate = certificate
        self._chain = chain
        builder = pkcs7.PKCS7SignatureBuilder().add_signer(certificate, key, hashes.SHA256())
        for extra in chain:
            builder = builder.add_certificate(extra)
        self._builder = builder

    @classmethod
    def from_files(
        cls, key_path: Path, cert_path: Path, *, password: bytes | None = None
    ) -> SmimeSigner:
        """Load a PEM private key and a PEM certificate (optionally followed by its chain)."""
        key_pem = _read(key_path, "clé de signature")
        cert_pem = _read(cert_path, "certificat de signature")
        try:
            key = serialization.load_pem_private_key(key_pem, password=password)
        except TypeError:
            raise SigningError(
                f"clé de signature protégée par un mot de passe, non pris en charge : {key_path}"
            ) from None
        except ValueError:
            raise SigningError(f"clé de signature invalide (PEM attendu) : {key_path}") from None
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise SigningError(
                f"type de clé non pris en charge pour S/MIME (RSA ou EC attendu) : {key_path}"
            )
        try:
            certificates = x509.load_pem_x509_certificates(cert_pem)
        except ValueError:
            raise SigningError(
                f"certificat de signature invalide (PEM attendu) : {cert_path}"
            ) from None
        certificate, *chain = certificates
        try:
            return cls(key, certificate, tuple(chain))
        except SigningError:
            raise SigningError(
                f"la clé {key_path} ne correspond pas au certificat {cert_path}"
            ) from None

    @property
    def certificate(self) -> x509.Certificate:
        return self._certificate

    @property
    def expires_at(self) -> dt.datetime:
        """End of validity of the signing certificate (UTC)."""
        return self._certificate.not_valid_after_utc

    def signature(self, entity: bytes) -> bytes:
        """The detached DER signature of the canonical ``entity`` bytes."""
        return self._builder.set_data(entity).sign(serialization.Encoding.DER, _SIGN_OPTIONS)

    def sign(self, message: Message | bytes) -> bytes:
        """Wrap ``message`` in ``multipart/signed`` (SHA-256) and return the mail's bytes.

        The outer headers of ``message`` stay outside the signed part and readable; the
        output uses CRLF line ends throughout.
        """
        outer, entity = split_entity(canonical_bytes(message))
        signature = base64.encodebytes(self.signature(entity)).replace(b"\n", _CRLF)
        boundary = b"=_smime-" + hashlib.sha256(entity).hexdigest()[:32].encode("ascii")
        content_type = (
            b'Content-Type: multipart/signed; protocol="application/pkcs7-signature";'
            b'\r\n micalg=sha-256; boundary="' + boundary + b'"'
        )
        delimiter = b"--" + boundary
        return b"".join(
            (
                *(field + _CRLF for field in outer),
                b"MIME-Version: 1.0\r\n",
                content_type,
                _CRLF + _CRLF,
                _PREAMBLE,
                _CRLF + _CRLF,
                delimiter + _CRLF,
                entity,
                _CRLF + delimiter + _CRLF,
                _SIGNATURE_HEADERS,
                _CRLF,
                signature,
                _CRLF + delimiter + b"--" + _CRLF,
            )
        )

    async def sign_async(self, message: Message | bytes) -> bytes:
        """:meth:`sign` in a worker thread, off the event loop."""
        return await asyncio.to_thread(self.sign, message)

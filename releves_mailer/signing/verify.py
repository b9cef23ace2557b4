"""Checks the S/MIME signature of a received mail (``multipart/signed``, detached CMS).

The webmail shows, for each message, who signed it and whether the signature holds: the
signed entity is taken byte for byte from the raw message (CRLF canonical form, as
:mod:`releves_mailer.signing.smime` signs it), its digest compared with the signed
``messageDigest`` attribute, and the signed attributes verified with the signer's public key.
The signer is trusted when its certificate is one of the trusted certificates (the portal's
own) or is issued by one of them, and was valid at the given time. CMS is parsed with
asn1crypto; the cryptography itself is done by ``cryptography``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import default as default_policy

from asn1crypto import cms
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

__all__ = ["SignatureCheck", "SignatureState", "check_signature"]

#: Largest signature part read (a CMS blob with a few certificates is a few kilobytes).
MAX_SIGNATURE = 256 * 1024
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class SignatureState(enum.StrEnum):
    UNSIGNED = "unsigned"
    VALID = "valid"
    UNTRUSTED = "untrusted"  # intact, but by a certificate we do not know (or out of dates)
    INVALID = "invalid"  # altered, or not a signature we can read


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """What the webmail shows about a message's signature (French ``summary``)."""

    state: SignatureState
    signer: str = ""
    reason: str = ""

    @property
    def summary(self) -> str:
        if self.state is SignatureState.UNSIGNED:
            return "Message non signé."
        if self.state is SignatureState.VALID:
            return f"Signé par {self.signer} : signature valide."
        who = f"Signé par {self.signer}" if self.signer else "Signature"
        return f"{who} : {self.reason}"


def _invalid(reason: str, signer: str = "") -> SignatureCheck:
    return SignatureCheck(SignatureState.INVALID, signer, reason)


def _canonical(raw: bytes) -> bytes:
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return raw.replace(b"\n", b"\r\n")


def _signed_parts(raw: bytes) -> tuple[bytes, bytes] | None:
    """``(entity, signature part)`` of a ``multipart/signed`` mail, ``None`` if it is not one."""
    head = BytesHeaderParser(policy=default_policy).parsebytes(raw)
    if head.get_content_type() != "multipart/signed":
        return None
    boundary = head.get_boundary()
    if not boundary:
        return None
    delimiter = b"\r\n--" + boundary.encode("ascii", "replace")
    text = _canonical(raw)
    found = text.find(delimiter + b"\r\n")
    if found < 0:
        return None
    start = found + len(delimiter) + 2
    end = text.find(delimiter + b"\r\n", start)
    if end < 0:
        return None
    second = end + len(delimiter) + 2
    closing = text.find(delimiter, second)
    if closing < 0:
        return None
    return text[start:end], text[second:closing]


def _signature_der(part: bytes) -> bytes | None:
    head, _, body = part.partition(b"\r\n\r\n")
    header = BytesHeaderParser(policy=default_policy).parsebytes(head + b"\r\n\r\n")
    if header.get_content_type() not in (
        "application/pkcs7-signature",
        "application/x-pkcs7-signature",
    ):
        return None
    if len(body) > MAX_SIGNATURE:
        return None
    encoding = str(header.get("Content-Transfer-Encoding", "")).strip().lower()
    if encoding != "base64":
        return body
    try:
        return base64.b64decode(re.sub(rb"\s+", b"", body), validate=True)
    except (binascii.Error, ValueError):
        return None


def _name(certificate: x509.Certificate) -> str:
    def first(oid: x509.ObjectIdentifier) -> str:
        values = certificate.subject.get_attributes_for_oid(oid)
        return str(values[0].value) if values else ""

    common = first(NameOID.COMMON_NAME)
    mail = first(NameOID.EMAIL_ADDRESS)
    if not mail:
        try:
            extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            mails = extension.value.get_values_for_type(x509.RFC822Name)
            mail = mails[0] if mails else ""
        except x509.ExtensionNotFound:
            pass
    if common and mail:
        return f"{common} <{mail}>"
    return common or mail or certificate.subject.rfc4514_string()


def _key_id(certificate: x509.Certificate) -> bytes | None:
    try:
        found = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        return None
    return found.value.digest


def _verify_with(
    certificate: x509.Certificate, signature: bytes, data: bytes, algorithm: hashes.HashAlgorithm
) -> bool:
    key = certificate.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(algorithm))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _trusted(
    certificate: x509.Certificate, trusted: Sequence[x509.Certificate], at: dt.datetime
) -> str:
    """Empty when ``certificate`` is trusted at ``at``, else why not (French)."""
    if not certificate.not_valid_before_utc <= at <= certificate.not_valid_after_utc:
        return "certificat du signataire hors de sa période de validité"
    for anchor in trusted:
        if certificate == anchor:
            return ""
        try:
            certificate.verify_directly_issued_by(anchor)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return ""
    return "signature intacte, mais certificat du signataire inconnu du portail"


def check_signature(
    raw: bytes, trusted: Sequence[x509.Certificate], at: dt.datetime
) -> SignatureCheck:
    """Check the S/MIME signature of the mail ``raw`` against ``trusted`` certificates."""
    parts = _signed_parts(raw)
    if parts is None:
        return SignatureCheck(SignatureState.UNSIGNED)
    entity, signature_part = parts
    der = _signature_der(signature_part)
    if der is None:
        return _invalid("partie de signature illisible")
    try:
        info = cms.ContentInfo.load(der)
        signed = info["content"]
        signer_info = signed["signer_infos"][0]
        certificates = [
            x509.load_der_x509_certificate(choice.chosen.dump())
            for choice in (signed["certificates"] or [])
            if choice.name == "certificate"
        ]
        sid = signer_info["sid"]
        digest_name = signer_info["digest_algorithm"]["algorithm"].native
        attributes = signer_info["signed_attrs"]
        signature = signer_info["signature"].native
        found_digest = None
        for attribute in attributes:
            if attribute["type"].native == "message_digest":
                found_digest = attribute["values"][0].native
        # Our signer names its certificate by issuer and serial; a key identifier is rare.
        serial = (
            sid.chosen["serial_number"].native if sid.name == "issuer_and_serial_number" else None
        )
        key_id = sid.chosen.native if sid.name == "subject_key_identifier" else None
        attributes_der = attributes.dump()
    except (ValueError, KeyError, IndexError, TypeError):
        return _invalid("signature illisible")
    if info["content_type"].native != "signed_data":
        return _invalid("signature illisible")
    algorithm = _HASHES.get(str(digest_name))
    if algorithm is None or found_digest is None or not attributes_der:
        return _invalid("algorithme de signature non pris en charge")
    signer = next(
        (
            c
            for c in certificates
            if (serial is not None and c.serial_number == serial)
            or (key_id is not None and _key_id(c) == key_id)
        ),
        None,
    )
    if signer is None:
        return _invalid("certificat du signataire absent de la signature")
    name = _name(signer)
    digest = hashlib.new(algorithm().name, entity).digest()
    if digest != found_digest:
        return _invalid("signature invalide : le message a été modifié après sa signature", name)
    # The signature covers the DER of the signed attributes as a SET (not the [0] tag).
    to_verify = b"\x31" + attributes_der[1:]
    if not _verify_with(signer, signature, to_verify, algorithm()):
        return _invalid("signature invalide : elle ne correspond pas au certificat", name)
    why = _trusted(signer, trusted, at)
    if why:
        return SignatureCheck(SignatureState.UNTRUSTED, name, why)
    return SignatureCheck(SignatureState.VALID, name)

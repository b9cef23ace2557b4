"""The statement mail: headers, French body, attachments, zip above 2 MB, signature."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import io
import os
import zipfile
from email.message import EmailMessage

import pytest

from releves_mailer.delivery.compose import (
    PERIODICITY_LABELS,
    build_signed_statement_mail,
    compose_statement_bytes,
    compose_statement_mail,
    periodicity_label,
)
from releves_mailer.render import NBSP, Renderer
from releves_mailer.signing.archive import ZIP_LIMIT

STEM = "FR7613026240019300290000029_20261119-20261125"


def _parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _attachments(message: EmailMessage) -> dict[str, tuple[str, bytes]]:
    found = {}
    for part in message.walk():
        if part.get_content_disposition() == "attachment" and part.get_filename() != "smime.p7s":
            found[part.get_filename()] = (part.get_content_type(), part.get_payload(decode=True))
    return found


def _text(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return body.get_content().replace("\r\n", "\n")


def _html(message: EmailMessage) -> str:
    body = message.get_body(("html",))
    assert body is not None
    return body.get_content().replace("\r\n", "\n")


def test_headers(make_statement, renderer):
    message = compose_statement_mail(make_statement(), renderer)
    assert message["From"] == '"Portail ASPOne.fr" <portail@releves.example>'
    assert message["From"].addresses[0].addr_spec == "portail@releves.example"
    assert message["To"] == "demo@releves.example"
    assert message["Reply-To"] == "noreply@releves.example"
    assert (
        message["Subject"] == "Relevé HEBDOMADAIRE du compte bancaire ACME Société - Compte chèque"
    )
    # The clock's instant (23:10 UTC) shown in Paris time, never now().
    assert message["Date"] == "Thu, 26 Nov 2026 00:10:00 +0100"
    assert message["Date"].datetime == dt.datetime(2026, 11, 25, 23, 10, tzinfo=dt.UTC)
    assert message["Message-ID"] == "<releve-42@releves.example>"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/mixed"


def test_structure_and_attachment_names(make_statement, renderer):
    cfonb = b"01" + b"2" * 118 + b"\r\n"
    csv = "id;libellé;montant\r\n7;PRLV SEPA;-12,50\r\n".encode()
    message = compose_statement_mail(make_statement(cfonb=cfonb, deleted_csv=csv), renderer)
    alternative, *files = message.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in alternative.iter_parts()] == [
        "text/plain",
        "text/html",
    ]
    assert _attachments(message) == {
        f"Releve_{STEM}.cfonb": ("application/octet-stream", cfonb),
        f"Transactions_supprimees_{STEM}.csv": ("text/csv", csv),
    }
    assert files[1].get_content_charset() == "utf-8"
    # Every part is 7-bit, so that the signature survives any transport.
    raw = compose_statement_bytes(make_statement(deleted_csv=csv), renderer)
    assert raw.isascii()
    assert b"\n" not in raw.replace(b"\r\n", b"")
    lines = raw.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    # Only the file name parameters (kept whole for every client) may pass 78 columns.
    assert all(len(line) <= 78 for line in lines if not line.startswith((b" name=", b" filename=")))


def test_no_csv_attachment_without_deleted_transactions(make_statement, renderer):
    message = compose_statement_mail(make_statement(), renderer)
    assert list(_attachments(message)) == [f"Releve_{STEM}.cfonb"]
    assert "transactions supprimées" not in _text(message)


def test_body_names_iban_period_balances_and_files(make_statement, renderer):
    message = compose_statement_mail(make_statement(deleted_csv=b"a;b\r\n"), renderer)
    text = _text(message)
    assert text.startswith("Bonjour,\n\nVeuillez trouver en pièce jointe le relevé HEBDOMADAIRE")
    assert "FR7613026240019300290000029" in text
    assert "IBAN : FR76 1302 6240 0193 0029 0000 029" in text
    assert "Société : ACME Société" in text
    assert "SIRET : 40483304800022" in text
    assert "Banque : Connecteur de test" in text
    assert "Compte : Compte chèque" in text
    assert "Période : du 19/11/2026 au 25/11/2026" in text
    assert "Nombre d'opérations : 3" in text
    assert f"Solde initial : 1{NBSP}234,56{NBSP}EUR" in text
    assert f"Solde final : 1{NBSP}200,00{NBSP}EUR" in text
    assert f"Releve_{STEM}.cfonb : relevé au format CFONB120" in text
    assert f"Transactions_supprimees_{STEM}.csv" in text
    assert "sous peine d'intégrer des doublons" in text
    assert "Cet email a été émis depuis une adresse technique, merci de ne pas y répondre." in text
    assert text.rstrip().endswith("-----\n\nPortail ASPOne.fr")
    assert "ATTENTION" not in text
    assert "était attendu" not in text
    html = _html(message)
    assert "FR76 1302 6240 0193 0029 0000 029" in html
    assert "ACME Société" in html
    assert "merci de ne pas y répondre" in html


def test_siren_only_and_support_contacts(make_statement, renderer):
    mail = make_statement(
        siret="404833048", support_email="support@aspone.example", support_phone="01 02 03 04 05"
    )
    text = _text(compose_statement_mail(mail, renderer))
    assert "SIREN : 404833048" in text
    assert "Email Support : support@aspone.example" in text
    assert "Téléphone Support : 01 02 03 04 05" in text


def test_balance_mismatch_is_flagged_not_hidden(make_statement, renderer):
    mail = make_statement(closing_balance=120000, bank_balance=121050)
    assert mail.balance_mismatch and mail.balance_gap == 1050
    message = compose_statement_mail(mail, renderer)
    text = " ".join(_text(message).split())  # also turns the non-breaking spaces into spaces
    assert "ATTENTION : le solde final calculé à partir des opérations (1 200,00 EUR)" in text
    assert "par la banque (1 210,50 EUR), soit un écart de 10,50 EUR" in text
    assert "Attention :" in _html(message)
    same = make_statement(closing_balance=120000, bank_balance=120000)
    assert not same.balance_mismatch
    assert "ATTENTION" not in _text(compose_statement_mail(same, renderer))


def test_late_period_and_empty_statement_notes(make_statement, renderer):
    mail = make_statement(
        period_end=dt.date(2026, 11, 23), due_date=dt.date(2026, 11, 25), movement_count=0
    )
    text = " ".join(_text(compose_statement_mail(mail, renderer)).split())
    assert "Ce relevé était attendu le 25/11/2026" in text
    assert "aucune opération n'est manquante ni en double" in text
    assert "Aucune opération n'a été enregistrée" in text


@pytest.mark.parametrize(("code", "word"), sorted(PERIODICITY_LABELS.items()))
def test_subject_periodicity_word(make_statement, renderer, code, word):
    message = compose_statement_mail(make_statement(periodicity=code), renderer)
    assert message["Subject"].startswith(f"Relevé {word} du compte bancaire ")


def test_periodicity_label():
    assert periodicity_label("JOURNALIERE") == "QUOTIDIEN"
    assert periodicity_label("mensuelle") == "MENSUEL"
    assert periodicity_label("QUOTIDIEN") == "QUOTIDIEN"
    with pytest.raises(ValueError):
        periodicity_label("BIMENSUELLE")


def test_same_statement_same_bytes(make_statement, renderer):
    first = compose_statement_bytes(make_statement(deleted_csv=b"x;y\r\n"), renderer)
    assert compose_statement_bytes(make_statement(deleted_csv=b"x;y\r\n"), renderer) == first
    assert b'boundary="=_releve-42-mixte"' in first
    assert b'boundary="=_releve-42-alternative"' in first
    other = compose_statement_bytes(make_statement(statement_id=43), renderer)
    assert b"=_releve-43-mixte" in other and b"<releve-43@releves.example>" in other


def test_admin_override_of_the_statement_subject(make_statement, tmp_path):
    (tmp_path / "mail").mkdir()
    (tmp_path / "mail" / "statement.subject.txt").write_text(
        "[{{ periodicite }}] {{ company }} / {{ iban }}", encoding="utf-8"
    )
    message = compose_statement_mail(make_statement(), Renderer(tmp_path))
    assert message["Subject"] == "[HEBDOMADAIRE] ACME Société / FR7613026240019300290000029"
    assert "Veuillez trouver" in _text(message)  # the body still comes from the shipped set


def _big_cfonb() -> bytes:
    line_count = ZIP_LIMIT // 120 + 10
    return b"".join(
        b"04" + os.urandom(30).hex().encode() + b" " * 56 + b"\r\n" for _ in range(line_count)
    )


def test_above_two_megabytes_the_files_travel_zipped(make_statement, renderer):
    cfonb = _big_cfonb()
    assert len(cfonb) > ZIP_LIMIT
    csv = b"id;montant\r\n1;-5,00\r\n"
    message = compose_statement_mail(make_statement(cfonb=cfonb, deleted_csv=csv), renderer)
    attachments = _attachments(message)
    assert list(attachments) == [f"Releve_{STEM}.zip"]
    mime_type, data = attachments[f"Releve_{STEM}.zip"]
    assert mime_type == "application/zip"
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.read(f"Releve_{STEM}.cfonb") == cfonb
        assert archive.read(f"Transactions_supprimees_{STEM}.csv") == csv
        # Members carry the statement's Paris time, so the archive is reproducible.
        assert archive.getinfo(f"Releve_{STEM}.cfonb").date_time == (2026, 11, 26, 0, 10, 0)
    text = _text(message)
    assert f"Releve_{STEM}.zip" in text and "archive ZIP" in text
    assert f"Releve_{STEM}.cfonb" in text


async def test_signed_small_mail_verifies(make_statement, renderer, signer, openssl_verify):
    raw = await build_signed_statement_mail(make_statement(), renderer, signer)
    result = openssl_verify(raw)
    assert result.returncode == 0, result.stderr.decode()
    signed = _parse(raw)
    assert signed.get_content_type() == "multipart/signed"
    assert signed["Message-ID"] == "<releve-42@releves.example>"
    assert (
        signed["Subject"] == "Relevé HEBDOMADAIRE du compte bancaire ACME Société - Compte chèque"
    )
    assert result.stdout.startswith(b'Content-Type: multipart/mixed; boundary="=_releve-42-mixte"')


async def test_signed_mail_with_csv_verifies(make_statement, renderer, signer, openssl_verify):
    csv = "id;libellé\r\n1;supprimée\r\n".encode()
    raw = await build_signed_statement_mail(make_statement(deleted_csv=csv), renderer, signer)
    assert openssl_verify(raw).returncode == 0
    assert _attachments(_parse(raw))[f"Transactions_supprimees_{STEM}.csv"][1] == csv


async def test_signed_big_mail_verifies_and_unzips_to_the_exact_cfonb(
    make_statement, renderer, signer, openssl_verify
):
    cfonb = _big_cfonb()
    raw = await build_signed_statement_mail(make_statement(cfonb=cfonb), renderer, signer)
    result = openssl_verify(raw)
    assert result.returncode == 0, result.stderr.decode()
    attachments = _attachments(_parse(raw))
    _, data = attachments[f"Releve_{STEM}.zip"]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == [f"Releve_{STEM}.cfonb"]
        assert archive.read(f"Releve_{STEM}.cfonb") == cfonb


async def test_tampered_statement_fails_verification(
    make_statement, renderer, signer, openssl_verify
):
    raw = await build_signed_statement_mail(make_statement(), renderer, signer)
    assert b"Nombre d'op=C3=A9rations : 3" in raw
    tampered = raw.replace(b"Nombre d'op=C3=A9rations : 3", b"Nombre d'op=C3=A9rations : 4")
    assert openssl_verify(tampered).returncode != 0
    cfonb_b64 = raw.split(b'filename="Releve_')[1].split(b"\r\n\r\n", 1)[1][:8]
    assert openssl_verify(raw.replace(cfonb_b64, cfonb_b64[::-1], 1)).returncode != 0


async def test_redelivery_is_byte_comparable_up_to_the_signature(make_statement, renderer, signer):
    first = await build_signed_statement_mail(make_statement(), renderer, signer)
    second = await build_signed_statement_mail(make_statement(), renderer, signer)
    cut = b"Content-Type: application/pkcs7-signature"
    assert first.split(cut)[0] == second.split(cut)[0]


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("opening_balance", 12.5, TypeError),
        ("closing_balance", True, TypeError),
        ("bank_balance", 1.0, TypeError),
        ("currency", "XXX", ValueError),
        ("created_at", dt.datetime(2026, 11, 26, 0, 10), ValueError),
        ("period_start", dt.date(2026, 11, 30), ValueError),
        ("statement_id", "42 bis", ValueError),
        ("statement_id", "<42>", ValueError),
        ("recipient", "demo", ValueError),
        ("recipient", "demo@x\r\nBcc: a@b", ValueError),
        ("periodicity", "BIMENSUELLE", ValueError),
        ("movement_count", -1, ValueError),
        ("siret", "4048330480002", ValueError),
        ("siret", "404 833 048", ValueError),
    ],
)
def test_statement_mail_refuses_bad_input(make_statement, field, value, error):
    with pytest.raises(error):
        make_statement(**{field: value})


def test_jpy_statement_amounts(make_statement, renderer):
    mail = make_statement(currency="JPY", opening_balance=1500000, closing_balance=1499000)
    text = _text(compose_statement_mail(mail, renderer))
    assert f"Solde initial : 1{NBSP}500{NBSP}000{NBSP}JPY" in text

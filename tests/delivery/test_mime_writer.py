"""The byte-level MIME writer: what it writes parses back to what was meant."""

from __future__ import annotations

import email
import email.policy

import pytest

from releves_mailer.delivery import mime


def _parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


@pytest.mark.parametrize(
    "value",
    [
        "essai",
        "Relevé QUOTIDIEN du compte bancaire ACME Société - Compte chèque",
        "é" * 200,
        "日本語の会社名 " * 10,
        "A" * 30 + " " + "B" * 70 + " court",
    ],
)
def test_header_round_trip_and_width(value):
    raw = mime.header("Subject", value)
    assert raw.endswith(b"\r\n") and raw.isascii()
    assert all(len(line) <= 78 for line in raw.split(b"\r\n") if b" " in line.strip())
    parsed = _parse(raw + b"\r\n")
    assert parsed["Subject"] == value


def test_header_refuses_line_breaks():
    with pytest.raises(ValueError):
        mime.header("Subject", "un\r\nBcc: victime@example.org")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Portail", "Portail <portail@r.example>"),
        ("Portail ASPOne.fr", '"Portail ASPOne.fr" <portail@r.example>'),
        ("Portail Relevés", "Portail Relevés <portail@r.example>"),
    ],
)
def test_address_header(name, expected):
    parsed = _parse(mime.address_header("From", name, "portail@r.example") + b"\r\n")
    assert parsed["From"] == expected
    assert parsed["From"].addresses[0].display_name == name


def test_text_part_is_quoted_printable_and_escapes_from_lines():
    part = mime.text_part("From the bank\nLigne é = 1\nFrom here\n", "plain")
    assert b"\nFrom " not in part and not part.split(b"\r\n\r\n", 1)[1].startswith(b"From ")
    parsed = _parse(b"MIME-Version: 1.0\r\n" + part)
    assert parsed.get_content() == "From the bank\r\nLigne é = 1\r\nFrom here"


def test_attachment_part_keeps_the_bytes():
    data = bytes(range(256)) * 10
    part = mime.attachment_part("a.cfonb", data, "text/csv; charset=utf-8")
    parsed = _parse(b"MIME-Version: 1.0\r\n" + part)
    assert parsed.get_payload(decode=True) == data
    assert parsed.get_filename() == "a.cfonb"
    assert parsed.get_content_charset() == "utf-8"
    assert all(len(line) <= 76 for line in part.split(b"\r\n\r\n", 1)[1].split(b"\r\n"))


def test_multipart_layout():
    entity = mime.multipart("mixed", "=_b", [b"Content-Type: text/plain\r\n\r\nun", b"\r\ndeux"])
    assert entity == (
        b'Content-Type: multipart/mixed; boundary="=_b"\r\n\r\n'
        b"--=_b\r\nContent-Type: text/plain\r\n\r\nun\r\n"
        b"--=_b\r\n\r\ndeux\r\n"
        b"--=_b--"
    )
    parsed = _parse(b"MIME-Version: 1.0\r\n" + entity)
    assert [part.get_content() for part in parsed.iter_parts()] == ["un", "deux"]
    with pytest.raises(ValueError):
        mime.multipart("mixed", "=_b", [])
    with pytest.raises(ValueError):
        mime.multipart("mixed", 'a"b', [b"x"])

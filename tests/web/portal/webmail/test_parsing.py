"""The webmail's FETCH parser and structure reading, on answers as aioimaplib hands them."""

from __future__ import annotations

import datetime as dt

import pytest

from releves_mailer.webmail.imap import attachments_of, decode_part
from releves_mailer.webmail.parsing import ParseError, parse_fetch, parse_internaldate


def test_literals_quoted_strings_and_nil() -> None:
    lines = [
        b"3 FETCH (UID 12 FLAGS (\\Seen $Label) RFC822.SIZE 99 ENVELOPE (NIL {5}",
        bytearray(b"Sujet"),
        b' (("A \\"B\\"" NIL "a" "b.example")) NIL NIL NIL NIL NIL NIL NIL NIL) BODY[1] {3}',
        bytearray(b"x)y"),
        b")",
        b"Fetch completed",
    ]
    found = parse_fetch(lines)
    assert list(found) == [12]
    items = found[12]
    assert items[b"FLAGS"] == [b"\\Seen", b"$Label"]
    assert items[b"RFC822.SIZE"] == 99
    assert items[b"ENVELOPE"][0] is None and items[b"ENVELOPE"][1] == b"Sujet"
    assert items[b"ENVELOPE"][2][0][0] == b'A "B"'
    assert items[b"BODY[1]"] == b"x)y"


def test_several_messages_and_an_unbalanced_answer() -> None:
    lines = [b"1 FETCH (UID 1 FLAGS ())", b"2 FETCH (UID 2 FLAGS (\\Seen))", b"done"]
    assert sorted(parse_fetch(lines)) == [1, 2]
    with pytest.raises(ParseError):
        parse_fetch([b"1 FETCH (UID 1))", b"done"])


def test_internal_dates() -> None:
    assert parse_internaldate(b"10-Mar-2026 06:31:00 +0100") == dt.datetime(
        2026, 3, 10, 6, 31, tzinfo=dt.timezone(dt.timedelta(hours=1))
    )
    assert parse_internaldate(b"n'importe quoi") is None


def test_attachments_of_a_signed_statement_structure() -> None:
    structure = parse_fetch(
        [
            b'1 FETCH (UID 1 BODYSTRUCTURE (((("text" "plain" ("charset" "utf-8") NIL NIL '
            b'"quoted-printable" 877 32 NIL NIL NIL NIL)("text" "html" ("charset" "utf-8") NIL '
            b'NIL "quoted-printable" 2564 61 NIL NIL NIL NIL) "alternative" NIL NIL NIL NIL)'
            b'("application" "octet-stream" ("name" "R.cfonb") NIL NIL "base64" 668 NIL '
            b'("attachment" ("filename" "R.cfonb")) NIL NIL)("text" "csv" NIL NIL NIL "base64" '
            b'40 2 NIL ("attachment" ("filename*" "utf-8\'\'supprim%C3%A9es.csv")) NIL NIL) '
            b'"mixed" NIL NIL NIL NIL)("application" "pkcs7-signature" ("name" "smime.p7s") NIL '
            b'NIL "base64" 2054 NIL ("attachment" ("filename" "smime.p7s")) NIL NIL) "signed" '
            b"NIL NIL NIL NIL))",
            b"done",
        ]
    )[1][b"BODYSTRUCTURE"]
    found = attachments_of(structure)
    assert [(a.section, a.name, a.content_type) for a in found] == [
        ("1.2", "R.cfonb", "application/octet-stream"),
        ("1.3", "supprimées.csv", "text/csv"),
    ]


def test_parts_are_decoded_to_their_exact_bytes() -> None:
    assert decode_part(b"AAEC\r\n/w==\r\n", "base64") == b"\x00\x01\x02\xff"
    assert decode_part(b"caf=C3=A9=\r\n!", "quoted-printable") == "café!".encode()
    assert decode_part(b"brut\r\n", "7bit") == b"brut\r\n"

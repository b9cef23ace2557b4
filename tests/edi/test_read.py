"""Reading deposit files: every procedure, several declarations a file, each fault named."""

from __future__ import annotations

import datetime as dt

import pytest

from releves_mailer.edi.read import EdiError, read_interchange
from tests.edi.interchanges import ALL_PROCEDURES, Decl, company, interchange


def test_every_procedure_and_several_declarations_per_interchange() -> None:
    decls = []
    for index, procedure in enumerate(ALL_PROCEDURES):
        siren, nic = company(index, with_nic=index % 2 == 0)
        decls.append(
            Decl(
                siren=siren,
                nic=nic,
                name=f"SARL N°{index} L'ÉCHO+DES:PRÉS?",
                procedure=procedure,
                deposited_on=dt.date(2026, 2, index + 1),
            )
        )
    read = read_interchange(interchange(decls, reference="R42"), "depot.edi")
    assert read.reference == "R42"
    assert read.prepared_on == dt.date(2026, 1, 15)
    assert [d.procedure for d in read.declarations] == [f"EDI-{p}" for p in ALL_PROCEDURES]
    assert [d.siret for d in read.declarations] == [d.siren + d.nic for d in decls]
    assert read.declarations[0].name == "SARL N°0 L'ÉCHO+DES:PRÉS?"  # release char honoured
    assert read.declarations[3].deposited_on == dt.date(2026, 2, 4)
    assert read.declarations[1].period_start == dt.date(2025, 12, 1)
    assert read.declarations[1].period_end == dt.date(2025, 12, 31)
    assert read.declarations[0].form == "2065"


def test_name_continuation_utf8_and_default_deposit_date() -> None:
    siren, _ = company(1)
    data = interchange(
        [Decl(siren=siren, name="SOCIÉTÉ", name_2="DES ÉTANGS", deposited_on=None, period=None)],
        charset="UNOW",
        una=False,
        prepared_at=dt.datetime(2025, 7, 3, 8, 0),
    )
    (decl,) = read_interchange(data, "x.edi").declarations
    assert decl.name == "SOCIÉTÉ DES ÉTANGS"
    assert decl.deposited_on == dt.date(2025, 7, 3)
    assert decl.period_start is None and decl.nic == ""


def _refused(data: bytes) -> EdiError:
    with pytest.raises(EdiError) as caught:
        read_interchange(data, "mauvais.edi")
    assert str(caught.value).startswith("mauvais.edi : ")
    return caught.value


def _good(**changes: object) -> bytes:
    siren, _ = company(3)
    return interchange([Decl(siren=siren, name="A"), Decl(siren=company(4)[0], name="B")])


def test_not_edifact() -> None:
    error = _refused(b"%PDF-1.4 not an interchange")
    assert error.segment == 1 and "pas un échange EDIFACT" in error.reason
    assert "vide" in _refused(b"  \n").reason


def test_truncated_inside_a_segment_names_the_segment() -> None:
    data = _good()
    cut = data[: data.index(b"NAD+DT") + 10]
    error = _refused(cut)
    # UNB, UNH, BGM, 3 DTM are complete: the NAD is the 7th segment.
    assert error.segment == 7
    assert "tronqué" in error.reason


def test_truncated_between_messages() -> None:
    data = _good()
    cut = data[: data.index(b"UNH+M00002")]
    error = _refused(cut)
    assert "UNZ manque" in error.reason
    assert error.segment == 9


def test_unz_count_mismatch() -> None:
    data = _good().replace(b"UNZ+2+", b"UNZ+3+")
    error = _refused(data)
    assert "UNZ annonce 3" in error.reason and error.segment == 18


def test_unknown_procedure() -> None:
    data = _good().replace(b"UN:TVA'", b"UN:ISF'", 1)
    error = _refused(data)
    assert error.segment == 2 and "téléprocédure inconnue « ISF »" in error.reason


def test_bad_siren_key() -> None:
    siren, _ = company(5)
    wrong = siren[:8] + str((int(siren[8]) + 1) % 10)
    data = interchange([Decl(siren=company(6)[0], name="OK"), Decl(siren=wrong, name="KO")])
    error = _refused(data)
    assert error.segment == 15
    assert f"SIREN invalide « {wrong} »" in error.reason


def test_bad_siret_key() -> None:
    siren, nic = company(5, with_nic=True)
    bad_nic = nic[:4] + str((int(nic[4]) + 1) % 10)
    error = _refused(interchange([Decl(siren=siren, nic=bad_nic, name="X")]))
    assert "SIRET invalide" in error.reason and error.segment == 7


def test_missing_declarant_and_bad_date() -> None:
    data = _good().replace(b"NAD+DT", b"NAD+XX", 1)
    error = _refused(data)
    assert error.segment == 2 and "NAD+DT ou NAD+AB" in error.reason
    data = _good().replace(b"DTM+242:20260115", b"DTM+242:20261315", 1)
    error = _refused(data)
    assert error.segment == 4 and "date DTM+242 invalide" in error.reason


def test_unt_count_and_unknown_message_type() -> None:
    data = _good().replace(b"UNT+8+M00001", b"UNT+9+M00001")
    error = _refused(data)
    assert error.segment == 9 and "UNT annonce 9" in error.reason
    data = _good().replace(b"INFENT:D", b"INVOIC:D", 1)
    assert "type de message inconnu « INVOIC »" in _refused(data).reason


def test_bad_charset_bytes() -> None:
    data = _good().replace(b"UNOC", b"UNOA").replace(b"+A'", b"+\xe9'")
    error = _refused(data)
    assert "caractère invalide" in error.reason


def test_functional_group_unol_and_name_format_code() -> None:
    """The shape of the public EDI-PAIEMENT samples: UNOL, UNG/UNE, NAD+DT with a C080
    format code, NAD+FR naming the sending firm, DTM+242, a PD1501 association code."""
    siren, _ = company(9)
    data = interchange(
        [
            Decl(siren=siren, name="SOCIÉTÉ €URO", name_2="SUITE", procedure="TDFC"),
            Decl(siren=company(10)[0], name="AUTRE", procedure="OGA"),
        ],
        charset="UNOL",
        group=True,
    ).replace(b"UN:TDFC'", b"UN:PD1501'")
    read = read_interchange(data, "groupe.edi")
    assert [d.procedure for d in read.declarations] == ["EDI-PAIEMENT", "EDI-OGA"]
    assert read.declarations[0].name == "SOCIÉTÉ €URO SUITE"
    assert read.declarations[0].siren == siren  # not the firm of NAD+FR


def test_functional_group_counts_and_truncation() -> None:
    data = interchange([Decl(siren=company(11)[0], name="A")], group=True)
    error = _refused(data.replace(b"UNE+1+1'", b"UNE+2+1'"))
    assert "UNE annonce 2 message(s)" in error.reason and error.segment == 11
    error = _refused(data[: data.index(b"UNE+")] + b"UNZ+1+ECH0001'")
    assert "n'a pas de UNE" in error.reason

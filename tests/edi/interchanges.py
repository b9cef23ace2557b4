"""Generator of test EDI deposits (INFENT interchanges) written with pydifact, in the layout
of docs/edi.md: never a real declaration, every company made up (valid SIREN keys)."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass

from pydifact.segmentcollection import RawSegmentCollection
from pydifact.segments import Segment

from releves_mailer.edi.read import PROCEDURES
from tests.factories import make_nic, make_siren

__all__ = ["ALL_PROCEDURES", "Decl", "company", "interchange", "spread_deposits"]

#: Every procedure code of UNH 0057 (TDFC, TVA, PAIEMENT, REQUETE, IR, OGA, PART).
ALL_PROCEDURES = tuple(PROCEDURES)
#: A form code (BGM) per procedure, for realism only: the reader keeps it as it is.
FORMS = {
    "TDFC": "2065",
    "TVA": "3310CA3",
    "PAIEMENT": "2572",
    "REQUETE": "REQ",
    "IR": "2042",
    "OGA": "ATTEST",
    "PART": "2035",
}


@dataclass(frozen=True)
class Decl:
    """One declaration to write."""

    siren: str
    name: str
    procedure: str = "TVA"
    nic: str = ""
    deposited_on: dt.date | None = dt.date(2026, 1, 15)
    period: tuple[dt.date, dt.date] | None = (dt.date(2025, 12, 1), dt.date(2025, 12, 31))
    name_2: str = ""


#: The made-up firm sending the deposits (NAD+FR).
FIRM_SIRET = make_siren(999) + make_nic(make_siren(999))


def company(index: int, *, with_nic: bool = False) -> tuple[str, str]:
    """(SIREN, NIC) of made-up company ``index`` (NIC ``""`` unless asked)."""
    siren = make_siren(1000 + index)
    return siren, make_nic(siren) if with_nic else ""


def _message(reference: str, decl: Decl) -> list[Segment]:
    body = [Segment("BGM", FORMS.get(decl.procedure, "X"))]
    if decl.deposited_on is not None:
        body.append(Segment("DTM", ["242", f"{decl.deposited_on:%Y%m%d}", "102"]))
    if decl.period is not None:
        body.append(Segment("DTM", ["194", f"{decl.period[0]:%Y%m%d}", "102"]))
        body.append(Segment("DTM", ["206", f"{decl.period[1]:%Y%m%d}", "102"]))
    # C080: name lines, then the name format code (3045) after the fifth line.
    names = [decl.name, decl.name_2, "", "", "", "3"] if decl.name_2 else [decl.name]
    body.append(Segment("NAD", "DT", [decl.siren + decl.nic, "100", "107"], "", names))
    # The sender (the firm): its SIRET, never taken for the declaring company.
    body.append(Segment("NAD", "FR", [FIRM_SIRET, "100", "107"], "", ["CABINET TEST"]))
    header = Segment("UNH", reference, ["INFENT", "D", "00A", "UN", decl.procedure])
    trailer = Segment("UNT", str(len(body) + 2), reference)
    return [header, *body, trailer]


def interchange(
    declarations: Sequence[Decl],
    *,
    reference: str = "ECH0001",
    prepared_at: dt.datetime = dt.datetime(2026, 1, 15, 10, 30),
    charset: str = "UNOC",
    una: bool = True,
    group: bool = False,
) -> bytes:
    """An interchange holding one INFENT message per declaration (in one functional group
    UNG ... UNE when ``group``)."""
    segments = [
        Segment(
            "UNB",
            [charset, "3"],
            ["PARTENAIREEDI", "ZZ"],
            ["DGFIP", "ZZ"],
            [f"{prepared_at:%y%m%d}", f"{prepared_at:%H%M}"],
            reference,
        )
    ]
    if group:
        segments.append(
            Segment(
                "UNG",
                "INFENT",
                "PARTENAIREEDI",
                "DGFIP",
                [f"{prepared_at:%y%m%d}", "0000"],
                "1",
                "UN",
                ["D", "00B"],
            )
        )
    for number, decl in enumerate(declarations, start=1):
        segments.extend(_message(f"M{number:05d}", decl))
    if group:
        segments.append(Segment("UNE", str(len(declarations)), "1"))
    segments.append(Segment("UNZ", "1" if group else str(len(declarations)), reference))
    text = RawSegmentCollection.from_segments(segments).serialize()
    prefix = "UNA:+.? '" if una else ""
    encoding = {"UNOC": "latin-1", "UNOL": "iso8859-15"}.get(charset, "utf-8")
    return (prefix + text).encode(encoding)


def spread_deposits(
    *,
    count: int,
    companies: int,
    until: dt.date,
    months: int = 24,
    per_file: int = 3,
    seed: int = 7,
) -> list[tuple[str, bytes]]:
    """``count`` deposit files, each of ``per_file`` declarations of every procedure in turn,
    their deposit dates spread over the ``months`` months before ``until``."""
    rng = random.Random(seed)
    days = months * 30
    files = []
    for number in range(count):
        deposited = until - dt.timedelta(days=rng.randrange(days))
        decls = []
        for slot in range(per_file):
            siren, nic = company(rng.randrange(companies), with_nic=slot % 2 == 1)
            decls.append(
                Decl(
                    siren=siren,
                    nic=nic,
                    name=f"SOCIETE TEST {siren}",
                    procedure=ALL_PROCEDURES[(number + slot) % len(ALL_PROCEDURES)],
                    deposited_on=deposited,
                )
            )
        files.append(
            (
                f"depot-{number:05d}.edi",
                interchange(
                    decls,
                    reference=f"E{number:09d}",
                    prepared_at=dt.datetime.combine(deposited, dt.time(9)),
                ),
            )
        )
    return files

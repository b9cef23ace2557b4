"""Reads EDI tax deposits (UN/EDIFACT INFENT interchanges) into declarations. Pure, synchronous.

The layout read here is written down, segment by segment, in ``docs/edi.md``. One INFENT
message (UNH ... UNT) is one declaration; an interchange (UNB ... UNZ) holds several. Any
fault refuses the whole file with a French message naming the file, the segment number
(UNB is segment 1; a UNA service string is not counted) and the reason.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

from pydifact.constants import EDI_DEFAULT_DIRECTORY, EDI_DEFAULT_VERSION, Element
from pydifact.exceptions import EDISyntaxError
from pydifact.parser import Parser
from pydifact.segmentcollection import RawSegmentCollection
from pydifact.segments import Segment, SegmentFactory
from stdnum.exceptions import ValidationError as StdnumError
from stdnum.fr import siren as siren_number
from stdnum.fr import siret as siret_number

from releves_mailer.errors import UserError

__all__ = [
    "MAX_DECLARATIONS",
    "MAX_FILE_SIZE",
    "PROCEDURES",
    "Declaration",
    "EdiError",
    "Interchange",
    "read_interchange",
]

#: The procedure code in UNH S009/0057 and the name of the DGFiP procedure it stands for
#: (the layout this project chose where the public material is silent: docs/edi.md).
PROCEDURES = {
    "TDFC": "EDI-TDFC",
    "TVA": "EDI-TVA",
    "PAIEMENT": "EDI-PAIEMENT",
    "REQUETE": "EDI-REQUETE",
    "IR": "EDI-IR",
    "OGA": "EDI-OGA",
    "PART": "EDI-PART",
}
#: Association-assigned codes seen in public INFENT samples: two letters then the GUM
#: version (``PD1501``: EDI-PAIEMENT, ``RD1301``: EDI-REQUETE).
PROCEDURE_PREFIXES = {"PD": "EDI-PAIEMENT", "RD": "EDI-REQUETE"}
#: Service messages that travel with the declarations and carry none (electronic security,
#: syntax reports): skipped.
SERVICE_MESSAGES = frozenset({"AUTACK", "CONTRL"})
#: Character sets of UNB S001/0001 and how to decode them.
CHARSETS = {
    "UNOA": "ascii",
    "UNOB": "ascii",
    "UNOC": "latin-1",
    "UNOD": "iso8859-2",
    "UNOE": "iso8859-5",
    "UNOF": "iso8859-7",
    "UNOL": "iso8859-15",
    "UNOW": "utf-8",
    "UNOY": "utf-8",
}
#: Limits of one file: bytes, declarations (messages), segments.
MAX_FILE_SIZE = 20 * 1024 * 1024
MAX_DECLARATIONS = 20_000
MAX_SEGMENTS = 2_000_000
#: Date/time qualifiers (DTM C507/2005) read from a declaration: the document's date (242,
#: seen in public samples; 137 accepted too), the start and end of the period declared.
DEPOSIT_DATES = ("242", "137")
PERIOD_START, PERIOD_END = "194", "206"
#: Party qualifiers (NAD 3035) of the declaring company, by preference: ``DT`` (the
#: redevable in public EDI-PAIEMENT samples), ``AB`` (the taxpayer of an EDI-REQUETE).
#: ``FR`` is the sender (the firm or EDI partner): never taken for the company.
DECLARANTS = ("DT", "AB")
#: C080 holds five name lines (3036) then a format code (3045), not part of the name.
NAME_LINES = 5


class EdiError(UserError):
    """A file refused: names the file, the segment and the reason (in French)."""

    def __init__(self, file_name: str, segment: int | None, reason: str) -> None:
        where = f"segment n° {segment} : " if segment is not None else ""
        super().__init__(f"{file_name} : {where}{reason}")
        self.file_name = file_name
        self.segment = segment
        self.reason = reason


@dataclasses.dataclass(frozen=True, slots=True)
class Declaration:
    """One declaration of a deposit: who declared, for which procedure and period, when."""

    procedure: str
    siren: str
    #: The establishment's NIC when the declaration names a SIRET, else ``""``.
    nic: str
    name: str
    form: str
    period_start: dt.date | None
    period_end: dt.date | None
    deposited_on: dt.date
    #: The message reference (UNH 0062), to tell the declarations of one file apart.
    reference: str

    @property
    def siret(self) -> str:
        return self.siren + self.nic


@dataclasses.dataclass(frozen=True, slots=True)
class Interchange:
    """A whole deposit file: its envelope and its declarations."""

    reference: str
    sender: str
    prepared_on: dt.date
    declarations: Sequence[Declaration]


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _component(segment: Segment, element: int, component: int = 0) -> str:
    """A component of an element, ``""`` when absent (a simple element is its component 0)."""
    elements = segment.elements
    if element >= len(elements):
        return ""
    value = elements[element]
    if isinstance(value, list):
        return _text(value[component]) if component < len(value) else ""
    return _text(value) if component == 0 else ""


def _components(segment: Segment, element: int) -> list[str]:
    if element >= len(segment.elements):
        return []
    value = segment.elements[element]
    return [_text(v) for v in value] if isinstance(value, list) else [_text(value)]


def _complete_segments(text: str, terminator: str, release: str) -> int:
    """How many segments end before the text does (release characters honoured)."""
    count, escaped = 0, False
    for char in text:
        if escaped:
            escaped = False
        elif char == release:
            escaped = True
        elif char == terminator:
            count += 1
    return count


class _Factory(SegmentFactory):
    """Segments without pydifact's directory validation: it has no INFENT directory (it
    would warn for each segment), and this reader checks what it reads itself."""

    @staticmethod
    def create_segment(
        name: str,
        *elements: Element,
        validate: bool = True,
        version: str = EDI_DEFAULT_VERSION,
        directory: str = EDI_DEFAULT_DIRECTORY,
    ) -> Segment:
        return SegmentFactory.create_segment(
            name, *elements, validate=False, version=version, directory=directory
        )


class _Reader:
    def __init__(self, file_name: str) -> None:
        self.file_name = file_name

    def fail(self, number: int | None, reason: str) -> EdiError:
        return EdiError(self.file_name, number, reason)

    def decode(self, data: bytes) -> str:
        if not data.strip():
            raise self.fail(None, "le fichier est vide")
        if len(data) > MAX_FILE_SIZE:
            raise self.fail(
                None, f"fichier trop volumineux ({len(data)} octets, {MAX_FILE_SIZE} au plus)"
            )
        head = data.lstrip(b"\xef\xbb\xbf\r\n ")
        if not (head.startswith(b"UNA") or head.startswith(b"UNB")):
            raise self.fail(1, "ce n'est pas un échange EDIFACT : il doit commencer par UNA ou UNB")
        start = head.find(b"UNB")
        charset = head[start + 4 : start + 8].decode("ascii", "replace")
        encoding = CHARSETS.get(charset)
        if encoding is None:
            raise self.fail(1, f"jeu de caractères inconnu « {charset} » dans UNB")
        try:
            return head.decode(encoding)
        except UnicodeDecodeError as error:
            raise self.fail(
                None,
                f"octet {error.start + 1} : caractère invalide pour le jeu {charset} ({encoding})",
            ) from None

    def segments(self, text: str) -> list[Segment]:
        found: list[Segment] = []
        try:
            collection = RawSegmentCollection.from_str(text, parser=Parser(factory=_Factory()))
            for segment in collection.segments:
                if segment.tag == "UNA":
                    continue
                found.append(segment)
                if len(found) > MAX_SEGMENTS:
                    raise self.fail(len(found), f"plus de {MAX_SEGMENTS} segments")
        except EDISyntaxError:
            terminator, release = "'", "?"
            if text.startswith("UNA") and len(text) >= 9:
                release, terminator = text[6], text[8]
                text = text[9:]
            number = _complete_segments(text, terminator, release) + 1
            raise self.fail(
                number, "échange tronqué ou mal formé (segment inachevé ou séparateur manquant)"
            ) from None
        if not found:
            raise self.fail(1, "aucun segment")
        return found

    def date(self, number: int, value: str, what: str) -> dt.date:
        try:
            if len(value) == 8 and value.isdigit():
                return dt.date(int(value[:4]), int(value[4:6]), int(value[6:]))
            if len(value) == 6 and value.isdigit():
                return dt.date(2000 + int(value[:2]), int(value[2:4]), int(value[4:]))
        except ValueError:
            pass
        raise self.fail(number, f"{what} invalide « {value} » (AAAAMMJJ attendu)")

    def count(self, number: int, tag: str, announced: str, found: int, what: str) -> None:
        """A control count (UNT, UNE, UNZ) must match what the file holds."""
        if not announced.isdigit() or int(announced) != found:
            raise self.fail(
                number,
                f"{tag} annonce {announced or '?'} {what}, l'échange en contient {found} "
                "(fichier tronqué ?)",
            )

    def read(self, data: bytes) -> Interchange:
        segments = self.segments(self.decode(data))
        first = segments[0]
        if first.tag != "UNB":
            raise self.fail(1, f"UNB attendu, trouvé « {first.tag} »")
        reference = _component(first, 4)
        prepared_on = self.date(1, _component(first, 3), "date de préparation (UNB)")
        last = segments[-1]
        if last.tag != "UNZ":
            raise self.fail(len(segments), "échange tronqué : le segment de fin UNZ manque")
        declarations: list[Declaration] = []
        messages = groups = in_group = 0
        group: tuple[int, str] | None = None
        index = 1
        while index < len(segments) - 1:
            segment = segments[index]
            if segment.tag == "UNG":
                if group is not None:
                    raise self.fail(index + 1, "groupe UNG ouvert avant la fin du précédent (UNE)")
                group, in_group = (index + 1, _component(segment, 4)), 0
                groups += 1
                index += 1
                continue
            if segment.tag == "UNE":
                if group is None:
                    raise self.fail(index + 1, "UNE sans groupe ouvert (UNG)")
                self.count(index + 1, "UNE", _component(segment, 0), in_group, "message(s)")
                if _component(segment, 1) != group[1]:
                    raise self.fail(index + 1, "la référence de UNE diffère de celle de UNG")
                group = None
                index += 1
                continue
            if segment.tag != "UNH":
                raise self.fail(index + 1, f"UNH attendu, trouvé « {segment.tag} »")
            end = index + 1
            while end < len(segments) - 1 and segments[end].tag not in ("UNT", "UNH", "UNE"):
                end += 1
            if segments[end].tag != "UNT":
                raise self.fail(end + 1, "message non terminé : le segment UNT manque")
            messages += 1
            in_group += 1
            if messages > MAX_DECLARATIONS:
                raise self.fail(index + 1, f"plus de {MAX_DECLARATIONS} messages")
            declaration = self.message(segments, index, end, prepared_on)
            if declaration is not None:
                declarations.append(declaration)
            index = end + 1
        if group is not None:
            raise self.fail(len(segments), "échange tronqué : le groupe ouvert n'a pas de UNE")
        # UNZ counts the functional groups when there are some, else the messages.
        counted, what = (groups, "groupe(s)") if groups else (messages, "message(s)")
        self.count(len(segments), "UNZ", _component(last, 0), counted, what)
        if _component(last, 1) != reference:
            raise self.fail(len(segments), "la référence de UNZ diffère de celle de UNB")
        if not declarations:
            raise self.fail(None, "aucune déclaration (message INFENT) dans l'échange")
        sender = _component(first, 1)
        return Interchange(reference, sender, prepared_on, tuple(declarations))

    def message(
        self, segments: list[Segment], start: int, end: int, prepared_on: dt.date
    ) -> Declaration | None:
        """The declaration of segments[start] (UNH) .. segments[end] (UNT)."""
        header, trailer = segments[start], segments[end]
        number = start + 1
        reference = _component(header, 0)
        kind = _component(header, 1, 0)
        self.count(end + 1, "UNT", _component(trailer, 0), end - start + 1, "segment(s)")
        if _component(trailer, 1) != reference:
            raise self.fail(end + 1, "la référence de UNT diffère de celle de UNH")
        if kind in SERVICE_MESSAGES:
            return None
        if kind != "INFENT":
            raise self.fail(number, f"type de message inconnu « {kind} » (INFENT attendu)")
        code = _component(header, 1, 4)
        procedure = PROCEDURES.get(code) or PROCEDURE_PREFIXES.get(
            code[:2] if code[2:].isdigit() else ""
        )
        if procedure is None:
            known = ", ".join(PROCEDURES)
            raise self.fail(number, f"téléprocédure inconnue « {code} » (attendu : {known})")
        form = ""
        dates: dict[str, dt.date] = {}
        parties: dict[str, tuple[int, Segment]] = {}
        for position in range(start + 1, end):
            segment = segments[position]
            if segment.tag == "BGM":
                form = _component(segment, 0)
            elif segment.tag == "DTM":
                qualifier = _component(segment, 0, 0)
                if qualifier in (*DEPOSIT_DATES, PERIOD_START, PERIOD_END):
                    dates[qualifier] = self.date(
                        position + 1, _component(segment, 0, 1), f"date DTM+{qualifier}"
                    )
            elif segment.tag == "NAD" and _component(segment, 0) in DECLARANTS:
                qualifier = _component(segment, 0)
                if qualifier in parties:
                    raise self.fail(position + 1, f"deux entreprises déclarantes (NAD+{qualifier})")
                parties[qualifier] = (position + 1, segment)
        declarant = next((parties[q] for q in DECLARANTS if q in parties), None)
        if declarant is None:
            raise self.fail(
                number, "le message ne désigne aucune entreprise déclarante (NAD+DT ou NAD+AB)"
            )
        siren, nic, name = self.company(*declarant)
        deposited_on = next((dates[q] for q in DEPOSIT_DATES if q in dates), prepared_on)
        return Declaration(
            procedure=procedure,
            siren=siren,
            nic=nic,
            name=name,
            form=form,
            period_start=dates.get(PERIOD_START),
            period_end=dates.get(PERIOD_END),
            deposited_on=deposited_on,
            reference=reference,
        )

    def company(self, number: int, segment: Segment) -> tuple[str, str, str]:
        identifier = _component(segment, 1, 0).replace(" ", "")
        if not identifier.isdigit() or len(identifier) not in (9, 14):
            raise self.fail(
                number, f"SIREN (9 chiffres) ou SIRET (14 chiffres) attendu, reçu « {identifier} »"
            )
        siren, nic = identifier[:9], identifier[9:]
        try:
            siren_number.validate(siren)
        except StdnumError:
            raise self.fail(
                number, f"SIREN invalide « {siren} » : la clé de contrôle (Luhn) est fausse"
            ) from None
        if nic:
            try:
                siret_number.validate(identifier)
            except StdnumError:
                raise self.fail(
                    number, f"SIRET invalide « {identifier} » : la clé de contrôle est fausse"
                ) from None
        lines = _components(segment, 3)[:NAME_LINES]
        name = " ".join(part.strip() for part in lines if part.strip())
        if not name:
            raise self.fail(number, "raison sociale absente (NAD, élément C080)")
        return siren, nic, name


def read_interchange(data: bytes, file_name: str) -> Interchange:
    """Every declaration of one deposit file, or :class:`EdiError` and nothing."""
    return _Reader(file_name).read(data)

"""CFONB120 account statements: a writer and a reader to the letter of the standard.

Pure library: no I/O but writing to a caller-given text stream, no import of the rest of
``releves_mailer``. The format is summarised in ``shared/reference/cfonb120.md``; the
writer follows it and the reader measures every file against it.

Decisions taken where the standard is silent or ambiguous
---------------------------------------------------------

1. Line terminator: LF after every record, the last one included (the only terminator
   every tested reader accepts); CRLF on request (``newline="\\r\\n"``); never a blank
   line. The reader takes LF, CRLF, CR or no separator at all.
2. Characters: printable upper-case ASCII only. Text is transliterated with anyascii
   (any script: ``"北京"`` -> ``"BEIJING"``), upper-cased, control characters become
   blanks and blank runs collapse to one blank.
3. Reserved zones are blank, position 21 of the 04 included (no legacy ``E``), and
   105-120 of the 01/07; the 04 commission-exemption and unavailability indexes are blank
   unless the movement says ``True``/``False``; the bank internal code (8-11) is blank
   unless given; the 04 reference zone (105-120) is blank unless given.
4. Amounts are ``int`` minor units; position 20 is the ISO 4217 minor unit of the
   currency (EUR 2, JPY/XPF/XOF/XAF 0, KWD/TND/BHD 3, CLF 4; table in :mod:`.amounts`);
   magnitude at most 10^14 - 1 units, otherwise an error.
5. Dates: the two-digit year follows Python's ``%y`` pivot (69-99 -> 19xx, 00-68 ->
   20xx, like python-cfonb); the writer refuses dates outside 1969-01-01..2068-12-31.
   The 01 carries the previous closing date, the 07 the period end. Movements booked
   before the opening date (late postings) are allowed; movements booked after the period
   end are refused. An absent value date is the booking date.
6. Labels: the first 31 characters go to the 04; the rest continues in ``LIB`` 05
   records of 70 characters placed right after the 04, cut at fixed positions (not at
   words). The reader rebuilds the label from the 04 and the ``LIB`` records that follow
   it directly, joining with one blank when the previous piece ends with blanks. Explicit
   ``LIB`` complements are refused: extend the label instead. Other complements follow in
   the order given (builders in :mod:`.complements`: NPY/NBE names, cut at 70
   characters; LCC/LC2 remittance information, 140 characters at most, cut at position
   70; RCN, REF, RUM, IBE, IPY, CBE, CPY, LCS identifiers of at most 35 characters,
   longer ones refused; MMO original amount).
7. Entry number (82-88): the caller's (digits are zero-filled to 7), or else the
   1-based position of the movement in its statement, so identical movements of one day
   always differ. Give a number that is unique on the account across statements when a
   late posting may land in another statement next to an identical one: the daemon keeps
   a counter per account (:func:`.complements.entry_number_from_counter`, 7 digits);
   :func:`.complements.entry_number_from_id` takes the aggregator's id.
8. Account: bank, branch and account number of a French-layout IBAN (FR, MC, overseas
   codes), RIB key checked. Any other valid IBAN (check digits and BBAN structure checked,
   not python-stdnum's national bank registries, which age): bank ``00000``, branch
   ``00000``, account number = the last 11 characters of the BBAN (see :mod:`.account`).
9. One file may hold several statements: several accounts, and consecutive periods of
   one account, which must chain (closing date and balance of one = opening date and
   balance of the next; checked by the writer, reported by the reader).
10. Operation codes: from the aggregator's type, the sign and the label (:mod:`.opcodes`);
    ``99`` only when nothing says more. The reject reason code (41-42) is blank unless
    the caller gives one.
11. Reader variants (each reported as a deviation, none fatal): records shorter than 120
    (trailing blanks trimmed) are padded, lowercase is accepted, filled reserved zones
    are ignored, a blank currency is EUR, blank decimals are the ISO minor unit, record
    decimals that differ from the currency's are converted when exact, a UTF-8 BOM and a
    DOS end-of-file mark are skipped. Unknown qualifiers and operation codes are
    reported and kept as they are. Position 21 is not compared between a 05 and its 04
    (banks put a legacy ``E`` in the 04 only). One non-ASCII or control character is
    reported per record (the first). Line numbers are physical lines, or record numbers
    in a file without separators; columns are positions 1-120.
12. Deviations the reader reports beyond the record layout: 05 zones 3-40 that differ
    from their 04, a 07 balance that is not the 01 balance plus the movements, a movement
    booked after the 07 date, a 07 dated before its 01, and consecutive statements of one
    account that do not chain.
13. One fault, one deviation: a 04 that cannot be read (amount, dates, decimals, account
    zones, or no 01 before it) still owns the 05 records that follow it. They are checked
    on their own zones, not compared with positions 3-40 of the 04 when the fault is there,
    never reported as orphans; the statement's 07 balance, which can no longer add up, is
    not checked. The statement is returned without that movement.
"""

from __future__ import annotations

from . import complements
from .account import bban_fields, rib_key
from .amounts import (
    AMOUNT_LIMIT,
    CURRENCIES,
    decode_amount,
    encode_amount,
    format_amount,
    minor_unit,
)
from .model import Account, Complement, Movement, Statement
from .opcodes import OP_CODES, OpCodeMapper, classify_label, op_code_for
from .reader import CfonbReadError, Deviation, ReadResult, check, parse, read
from .text import clean_text
from .writer import (
    CfonbWriteError,
    dumps,
    iter_records,
    stream_statement,
    write_statement,
    write_statements,
)

__all__ = [
    "AMOUNT_LIMIT",
    "CURRENCIES",
    "OP_CODES",
    "Account",
    "CfonbReadError",
    "CfonbWriteError",
    "Complement",
    "Deviation",
    "Movement",
    "OpCodeMapper",
    "ReadResult",
    "Statement",
    "bban_fields",
    "check",
    "classify_label",
    "clean_text",
    "complements",
    "decode_amount",
    "dumps",
    "encode_amount",
    "format_amount",
    "iter_records",
    "minor_unit",
    "op_code_for",
    "parse",
    "read",
    "rib_key",
    "stream_statement",
    "write_statement",
    "write_statements",
]

"""SORT and UID SORT (RFC 5256), SORT=DISPLAY (RFC 5957) and ESORT (RFC 5267 section 3).

Sort keys come from the stored parsed data of each message (internal date, size, header,
envelope), never from the message files. The sent date of RFC 5256 section 2.2 is shared
with THREAD (:mod:`.thread`), like the base subject (:mod:`.subject`).
"""

from __future__ import annotations

import asyncio
import bisect
import calendar
import email.utils
import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from releves_mailer.mailbox.contracts import FetchColumn, MessageRecord
from releves_mailer.mailbox.imap.connection import CommandContext, CommandError
from releves_mailer.mailbox.imap.context import SearchUpdate, check_tag, register
from releves_mailer.mailbox.imap.esearch import (
    check_charset,
    esearch_line,
    parse_charset,
    parse_return,
    save_result,
)
from releves_mailer.mailbox.imap.mime import parse_addresses
from releves_mailer.mailbox.imap.parser import ParseError, Parser
from releves_mailer.mailbox.imap.search import (
    decode_header_text,
    find_messages,
    header_values,
    parse_search_keys,
)
from releves_mailer.mailbox.imap.subject import base_subject, casemap

if TYPE_CHECKING:
    from releves_mailer.mailbox.imap.session import ImapSession
    from releves_mailer.mailbox.imap.view import SelectedView

__all__ = [
    "SortKeyCache",
    "SortUpdate",
    "cmd_sort",
    "load_records",
    "sent_date",
]

_CRITERIA = ("ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO")
_COLUMNS: dict[str, tuple[FetchColumn, ...]] = {
    "ARRIVAL": ("internal_date",),
    "DATE": ("envelope", "internal_date"),
    "SIZE": ("size",),
}
_RECORD_BATCH = 10_000
#: Above this many messages without cached keys, the keys are computed in a worker thread.
_IN_LOOP = 1000

# region sent date (RFC 5256 section 2.2) ###############################################

_DATE = re.compile(
    rb"^\s*(?:[A-Za-z]{3},\s*)?(\d{1,2})\s+([A-Za-z]{3})\s+(\d{4})\s+"
    rb"(\d{1,2}):(\d\d)(?::(\d\d))?\s+([+-])(\d\d)(\d\d)\s*(?:\(.*\))?\s*$"
)
_MONTH_NAMES = b"jan feb mar apr may jun jul aug sep oct nov dec".split()
_MONTHS = {m: i for i, m in enumerate(_MONTH_NAMES, 1)}


def _envelope_date(envelope: bytes) -> bytes | None:
    """The first field of a stored ENVELOPE: the raw Date header value, or ``None``."""
    if envelope[:2] == b'("':
        end = envelope.find(b'"', 2)
        if end > 0 and envelope[end - 1] != 0x5C:
            value = envelope[2:end]
            if b"\\" not in value:
                return value
        out = bytearray()
        pos = 2
        while pos < len(envelope):
            byte = envelope[pos]
            if byte == 0x22:
                return bytes(out)
            if byte == 0x5C:
                pos += 1
                byte = envelope[pos] if pos < len(envelope) else 0x5C
            out.append(byte)
            pos += 1
        return None
    if envelope[:2] == b"({":
        close = envelope.find(b"}\r\n")
        if close < 0:
            return None
        size = int(envelope[2:close])
        return envelope[close + 3 : close + 3 + size]
    return None


def _timestamp(value: bytes) -> int | None:
    match = _DATE.match(value)
    if match is not None:
        day, mon, year, hh, mm, ss, sign, zh, zm = match.groups()
        month = _MONTHS.get(mon.lower())
        if month is not None:
            try:
                seconds = calendar.timegm(
                    (int(year), month, int(day), int(hh), int(mm), int(ss or 0), 0, 0, 0)
                )
            except (ValueError, OverflowError):
                return None
            offset = int(zh) * 3600 + int(zm) * 60
            return seconds - offset if sign == b"+" else seconds + offset
    try:
        parsed = email.utils.parsedate_tz(value.decode("latin-1"))
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    try:
        return int(email.utils.mktime_tz(parsed))
    except (ValueError, OverflowError):
        return None


def sent_date(record: MessageRecord) -> int:
    """The Date header as a UTC timestamp; the internal date when it has none or it does
    not parse. ``record`` holds the envelope and the internal date."""
    raw = _envelope_date(record.envelope)
    stamp = _timestamp(raw) if raw else None
    if stamp is not None:
        return stamp
    arrived = record.internal_date
    return int(arrived.timestamp()) if arrived is not None else 0


# endregion
# region keys ###########################################################################


def _first_address(
    header: bytes, name: str
) -> tuple[bytes | None, bytes | None, bytes | None] | None:
    for value in header_values(header, name):
        # The first address structure, as in ENVELOPE: a group's start counts, with the
        # group's name as its mailbox (what Dovecot sorts by too).
        for display, _route, mailbox, host in parse_addresses(value):
            if mailbox is not None:
                return display, mailbox, host
    return None


def _mailbox_key(record: MessageRecord, name: str) -> bytes:
    first = _first_address(record.header, name)
    if first is None or first[1] is None:
        return b""
    return first[1].upper()


def _display_key(record: MessageRecord, name: str) -> bytes:
    first = _first_address(record.header, name)
    if first is None:
        return b""
    display, mailbox, host = first
    if display:
        shown = decode_header_text(display).strip()
        if shown:
            return casemap(shown)
    if host is None:
        return (mailbox or b"").upper()
    return (mailbox or b"").upper() + b"@" + host.upper()


def _subject_key(record: MessageRecord) -> bytes:
    values = header_values(record.header, "subject")
    return casemap(base_subject(values[0] if values else None)[0])


def _arrival(record: MessageRecord) -> int:
    return int(record.internal_date.timestamp()) if record.internal_date is not None else 0


# Every key of one criterion has one type (int or bytes), so they compare among themselves.
_KEYS: dict[str, Callable[[MessageRecord], Any]] = {
    "ARRIVAL": _arrival,
    "CC": lambda r: _mailbox_key(r, "cc"),
    "DATE": sent_date,
    "FROM": lambda r: _mailbox_key(r, "from"),
    "SIZE": lambda r: r.size,
    "SUBJECT": _subject_key,
    "TO": lambda r: _mailbox_key(r, "to"),
    "DISPLAYFROM": lambda r: _display_key(r, "from"),
    "DISPLAYTO": lambda r: _display_key(r, "to"),
}


@dataclass(frozen=True, slots=True)
class Criterion:
    name: str
    reverse: bool


def parse_criteria(parser: Parser) -> list[Criterion]:
    """``(REVERSE DATE SUBJECT)``: at least one criterion, REVERSE before one only."""
    parser.list_start()
    criteria: list[Criterion] = []
    reverse = False
    while True:
        name = parser.atom().upper()
        if name == "REVERSE":
            if reverse:
                raise ParseError("REVERSE must be followed by a sort criterion")
            reverse = True
        elif name in _CRITERIA:
            criteria.append(Criterion(name, reverse))
            reverse = False
        else:
            raise ParseError(f"Unknown sort criterion {name}")
        if parser.list_end():
            break
        parser.sp()
    if reverse:
        raise ParseError("REVERSE must be followed by a sort criterion")
    return criteria


# endregion


class SortKeyCache:
    """Sort keys already computed, by folder id and UIDVALIDITY, criterion and UID.

    A stored message never changes, so its keys hold as long as its folder does; a folder
    deleted and created again (even under the same id) has a new UIDVALIDITY. At most
    ``max_keys`` keys are held: the folders used least recently go first."""

    def __init__(self, max_keys: int = 500_000) -> None:
        self.max_keys = max_keys
        self._folders: dict[tuple[int, int], dict[str, dict[int, Any]]] = {}

    def keys(self, folder_id: int, uidvalidity: int, criterion: str) -> dict[int, Any]:
        folder = self._folders.pop((folder_id, uidvalidity), None) or {}
        self._folders[(folder_id, uidvalidity)] = folder
        return folder.setdefault(criterion, {})

    def trim(self) -> None:
        held = sum(len(keys) for folder in self._folders.values() for keys in folder.values())
        while held > self.max_keys and self._folders:
            oldest = next(iter(self._folders))
            held -= sum(len(keys) for keys in self._folders.pop(oldest).values())


async def load_records(
    session: ImapSession,
    view: SelectedView,
    uids: Sequence[int],
    columns: set[FetchColumn],
) -> dict[int, MessageRecord]:
    """The stored columns of ``uids``, by UID, read in batches."""
    out: dict[int, MessageRecord] = {}
    if not columns:
        return {uid: MessageRecord(uid) for uid in uids}
    ordered = sorted(uids)
    for start in range(0, len(ordered), _RECORD_BATCH):
        batch = ordered[start : start + _RECORD_BATCH]
        for record in await session.mailbox.fetch_records(view.folder_id, batch, columns):
            out[record.uid] = record
    for uid in uids:
        out.setdefault(uid, MessageRecord(uid))
    return out


async def sort_keys(
    session: ImapSession, view: SelectedView, uids: list[int], names: set[str]
) -> dict[str, dict[int, Any]]:
    """The keys of ``uids`` for each criterion in ``names``, from the server's cache, the
    missing ones computed from the stored columns they need."""
    cache: SortKeyCache = session.server.sort_keys
    out = {name: cache.keys(view.folder_id, view.uidvalidity, name) for name in names}
    wanted = set(uids)
    missing = sorted(set().union(*(wanted.difference(keys) for keys in out.values())))
    if missing:
        columns: set[FetchColumn] = set()
        for name in names:
            columns.update(_COLUMNS.get(name, ("header",)))
        records = await load_records(session, view, missing, columns)

        def compute() -> dict[str, dict[int, Any]]:
            return {name: {uid: _KEYS[name](records[uid]) for uid in missing} for name in names}

        # Thousands of headers to parse: in a thread, so that other clients go on.
        computed = await asyncio.to_thread(compute) if len(missing) > _IN_LOOP else compute()
        for name, keys in computed.items():
            out[name].update(keys)
        cache.trim()
    return out


def sort_found(
    found: list[tuple[int, int]], keys: dict[str, dict[int, Any]], criteria: list[Criterion]
) -> list[tuple[int, int]]:
    """``found`` (in mailbox order) sorted by ``criteria``; ties keep mailbox order."""
    uids = [uid for _, uid in found]
    order = list(range(len(found)))
    # Stable sorts from the last criterion to the first; a reversed sort stays stable, so
    # equal messages keep their sequence order whatever REVERSE says. The keys are looked
    # up once per message and the sorts compare positions by C-level lookups.
    for criterion in reversed(criteria):
        of = list(map(keys[criterion.name].__getitem__, uids))
        order.sort(key=of.__getitem__, reverse=criterion.reverse)
    return [found[index] for index in order]


@dataclass(slots=True)
class SortUpdate(SearchUpdate):
    """A ``SORT RETURN (UPDATE)`` (CONTEXT=SORT): its result in sort order, so that each
    change is told with its position (RFC 5267 sections 4.3.3 and 4.3.4). Sort keys never
    change, so a message only enters or leaves the result; where is a binary search."""

    criteria: list[Criterion] = field(default_factory=list)
    ordered: list[int] = field(default_factory=list)

    def expunged(self, view: SelectedView, gone: set[int]) -> bytes:
        removed = [uid for uid in self.ordered if uid in gone]
        if not removed:
            return b""
        return b" REMOVEFROM (" + self._remove(view, set(removed)) + b")"

    def _remove(self, view: SelectedView, removed: set[int]) -> bytes:
        # Pairs in list order, each position counted after the pairs before it.
        pairs: list[bytes] = []
        kept: list[int] = []
        for uid in self.ordered:
            if uid in removed:
                number = self.numbers(view, [uid])[0]
                pairs.append(b"%d %d" % (len(kept) + 1, number))
            else:
                kept.append(uid)
        self.ordered = kept
        self.members -= removed
        return b" ".join(pairs)

    async def changed(self, session: ImapSession, view: SelectedView, touched: set[int]) -> bytes:
        found = await find_messages(session, view, self.program, only=touched)
        matched = {uid for _, uid in found}
        removes = (touched & self.members) - matched
        adds = matched - self.members
        data = b""
        if removes:
            data += b" REMOVEFROM (" + self._remove(view, removes) + b")"
        if adds:
            names = {criterion.name for criterion in self.criteria}
            keys = await sort_keys(session, view, [*self.ordered, *adds], names)
            key = functools.cmp_to_key(self._compare(keys))
            pairs: list[bytes] = []
            for uid in sorted(adds, key=key):
                index = bisect.bisect_left(self.ordered, key(uid), key=key)
                self.ordered.insert(index, uid)
                pairs.append(b"%d %d" % (index + 1, self.numbers(view, [uid])[0]))
            self.members |= adds
            data += b" ADDTO (" + b" ".join(pairs) + b")"
        return data

    def _compare(self, keys: dict[str, dict[int, Any]]) -> Callable[[int, int], int]:
        criteria = [(keys[c.name], -1 if c.reverse else 1) for c in self.criteria]

        def compare(a: int, b: int) -> int:
            for of, sign in criteria:
                left, right = of[a], of[b]
                if left != right:
                    return sign if left > right else -sign
            return (a > b) - (a < b)  # then mailbox order, which is UID order

        return compare


async def cmd_sort(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    view = session.require_view()
    parser.sp()
    options = parse_return(parser)
    criteria = parse_criteria(parser)
    parser.sp()
    try:
        charset = parse_charset(parser, required=True)
        program = parse_search_keys(parser)
        check_charset(charset)
        if options.update:
            check_tag(view, context.tag)
        await session.sync_view(allow_expunge=False)
        found = await find_messages(session, view, program)
    except (ParseError, CommandError):
        if options.save:
            view.saved = []
        raise
    names = {criterion.name for criterion in criteria}
    keys = await sort_keys(session, view, [uid for _, uid in found], names)
    ordered = sort_found(found, keys, criteria)
    if options.save:
        save_result(view, options, [uid for _, uid in ordered])
    if options.update:
        uids = [uid for _, uid in ordered]
        update = SortUpdate(context.tag, context.uid, program, set(uids), criteria, uids)
        register(session, view, update)
    numbers = [uid if context.uid else seq for seq, uid in ordered]
    if options.given:
        shown = options.answered()
        if shown is not None:
            line = esearch_line(context.tag, context.uid, shown, numbers, None, options.partial)
            session.send(line)
    else:
        session.send(b"* SORT" + "".join(map(" {}".format, numbers)).encode())
    session.ok(context, "Sort completed")

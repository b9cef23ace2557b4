"""SEARCH keys (RFC 3501 section 6.4.4, RFC 7162 MODSEQ, RFC 5032 WITHIN, RFC 5182 ``$``):
parsing and evaluation."""

from __future__ import annotations

import datetime as dt
import email
import email.header
import email.policy
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import TYPE_CHECKING

from releves_mailer.mailbox.contracts import FetchColumn, MessageRecord
from releves_mailer.mailbox.imap.mime import parse_addresses
from releves_mailer.mailbox.imap.parser import ParseError, Parser, SequenceSet

if TYPE_CHECKING:
    from releves_mailer.mailbox.imap.session import ImapSession
    from releves_mailer.mailbox.imap.view import SelectedView

__all__ = [
    "Key",
    "MessageContext",
    "columns_needed",
    "decode_header_text",
    "find_messages",
    "header_values",
    "matches",
    "parse_search_keys",
    "uses_modseq",
]

_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}
_HEADER_KEYS = {"BCC", "CC", "FROM", "SUBJECT", "TO"}
_SEARCH_BATCH = 10_000
_DATE_KEYS = {"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"}


@dataclass(slots=True)
class Key:
    """A node of the search program."""

    name: str
    args: list[object] = field(default_factory=list)
    children: list[Key] = field(default_factory=list)


def _string(parser: Parser) -> str:
    return parser.astring().decode("utf-8", "replace")


def parse_search_keys(parser: Parser, charset: str = "UTF-8") -> Key:
    """Everything after ``SEARCH [CHARSET x]``: an implicit AND of keys."""
    keys = [_parse_key(parser, 0)]
    while parser.maybe_sp():
        keys.append(_parse_key(parser, 0))
    parser.end()
    return keys[0] if len(keys) == 1 else Key("AND", children=keys)


def _parse_key(parser: Parser, depth: int) -> Key:
    if depth > 100:
        raise ParseError("Search program nested too deeply")
    if parser.peek() == 0x28:
        parser.list_start()
        children = [_parse_key(parser, depth + 1)]
        while not parser.list_end():
            parser.sp()
            children.append(_parse_key(parser, depth + 1))
        return Key("AND", children=children)
    if parser.is_sequence_set():
        return Key("SEQ", [parser.sequence_set()])
    name = parser.atom().upper()
    if name in ("ALL", "NEW", "OLD", "RECENT") or name in _FLAG_KEYS:
        return Key(name)
    if name in _HEADER_KEYS or name in ("BODY", "TEXT"):
        parser.sp()
        return Key(name, [_string(parser)])
    if name in ("KEYWORD", "UNKEYWORD"):
        parser.sp()
        return Key(name, [parser.atom()])
    if name in _DATE_KEYS:
        parser.sp()
        return Key(name, [parser.date()])
    if name in ("LARGER", "SMALLER"):
        parser.sp()
        return Key(name, [parser.number()])
    if name in ("OLDER", "YOUNGER"):
        parser.sp()
        return Key(name, [parser.nz_number()])
    if name == "HEADER":
        parser.sp()
        header = _string(parser)
        parser.sp()
        return Key(name, [header, _string(parser)])
    if name == "UID":
        parser.sp()
        return Key(name, [parser.sequence_set()])
    if name == "NOT":
        parser.sp()
        return Key(name, children=[_parse_key(parser, depth + 1)])
    if name == "OR":
        parser.sp()
        left = _parse_key(parser, depth + 1)
        parser.sp()
        return Key(name, children=[left, _parse_key(parser, depth + 1)])
    if name == "MODSEQ":
        parser.sp()
        if parser.peek() == 0x22:
            parser.quoted()
            parser.sp()
            kind = parser.atom().lower()
            if kind not in ("priv", "shared", "all"):
                raise ParseError("Invalid MODSEQ entry type")
            parser.sp()
        return Key(name, [parser.number()])
    raise ParseError(f"Unknown search key {name}")


def columns_needed(key: Key, out: set[FetchColumn] | None = None) -> set[FetchColumn]:
    out = set() if out is None else out
    if key.name in _HEADER_KEYS or key.name == "HEADER":
        out.add("header")
    elif key.name in ("BEFORE", "ON", "SINCE", "OLDER", "YOUNGER"):
        out.add("internal_date")
    elif key.name.startswith("SENT"):
        out.add("sent_date")
    elif key.name in ("LARGER", "SMALLER"):
        out.add("size")
    elif key.name in ("BODY", "TEXT"):
        out.update(("blob", "header"))
    for child in key.children:
        columns_needed(child, out)
    return out


def uses_modseq(key: Key) -> bool:
    return key.name == "MODSEQ" or any(uses_modseq(child) for child in key.children)


def decode_header_text(value: bytes) -> str:
    """A header value with RFC 2047 encoded words decoded, unfolded."""
    text = value.decode("utf-8", "replace").replace("\r\n", "").replace("\n", "")
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
        return text


def header_values(header: bytes, name: str) -> list[bytes]:
    values: list[bytes] = []
    current: bytearray | None = None
    target = name.lower().encode("latin-1", "replace")
    for line in header.splitlines():
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current += line
            continue
        if current is not None:
            values.append(bytes(current))
            current = None
        colon = line.find(b":")
        if colon > 0 and line[:colon].strip().lower() == target:
            current = bytearray(line[colon + 1 :].strip())
    if current is not None:
        values.append(bytes(current))
    return values


def _addresses_text(value: bytes) -> str:
    out = []
    for name, _route, mailbox, host in parse_addresses(value):
        if mailbox is None and host is None:
            continue
        shown = decode_header_text(name) if name else ""
        local = (mailbox or b"").decode("utf-8", "replace")
        domain = (host or b"").decode("utf-8", "replace")
        out.append(f"{shown} <{local}@{domain}>" if domain else f"{shown} {local}")
    return ", ".join(out).casefold()


@dataclass(slots=True)
class MessageContext:
    """One message as the evaluator sees it."""

    seq: int
    uid: int
    flags: tuple[str, ...]
    modseq: int
    recent: bool
    record: MessageRecord
    max_seq: int
    max_uid: int
    #: Returns the raw message; only called for BODY and TEXT.
    raw: Callable[[], bytes]
    _text: tuple[str, str] | None = None
    #: UIDs of ``$`` (RFC 5182), and the server's time for OLDER and YOUNGER (RFC 5032).
    saved: frozenset[int] = frozenset()
    now: dt.datetime | None = None

    def text(self) -> tuple[str, str]:
        """(decoded header text, decoded body text), case-folded."""
        if self._text is None:
            raw = self.raw()
            message = email.message_from_bytes(raw, policy=email.policy.default)
            bodies: list[str] = []
            assert isinstance(message, EmailMessage)
            for part in message.walk():
                if part.is_multipart():
                    continue
                try:
                    if part.get_content_maintype() == "text":
                        content = part.get_content()
                        bodies.append(content if isinstance(content, str) else "")
                    else:
                        payload = part.get_payload(decode=True)
                        if isinstance(payload, bytes):
                            bodies.append(payload.decode("utf-8", "replace"))
                except (LookupError, ValueError, AssertionError, KeyError, UnicodeError):
                    payload = part.get_payload(decode=False)
                    bodies.append(str(payload))
            header_end = raw.find(b"\r\n\r\n")
            header = raw if header_end < 0 else raw[:header_end]
            self._text = (
                decode_header_text(header).casefold(),
                "\n".join(bodies).casefold(),
            )
        return self._text


def _date_of(value: dt.datetime | None) -> dt.date | None:
    return None if value is None else value.date()


def matches(key: Key, ctx: MessageContext) -> bool:
    name = key.name
    if name == "AND":
        return all(matches(child, ctx) for child in key.children)
    if name == "ALL":
        return True
    if name in _FLAG_KEYS:
        flag, wanted = _FLAG_KEYS[name]
        return (flag in ctx.flags) == wanted
    if name == "NEW":
        return ctx.recent and "\\Seen" not in ctx.flags
    if name == "OLD":
        return not ctx.recent
    if name == "RECENT":
        return ctx.recent
    if name in ("KEYWORD", "UNKEYWORD"):
        keyword = str(key.args[0]).lower()
        present = any(flag.lower() == keyword for flag in ctx.flags)
        return present == (name == "KEYWORD")
    if name in ("SEQ", "UID"):
        sequence = key.args[0]
        assert isinstance(sequence, SequenceSet)
        if sequence.saved:
            return ctx.uid in ctx.saved
        if name == "SEQ":
            return sequence.contains(ctx.seq, ctx.max_seq)
        return sequence.contains(ctx.uid, ctx.max_uid)
    if name == "NOT":
        return not matches(key.children[0], ctx)
    if name == "OR":
        return matches(key.children[0], ctx) or matches(key.children[1], ctx)
    if name == "LARGER":
        return ctx.record.size > int(str(key.args[0]))
    if name == "SMALLER":
        return ctx.record.size < int(str(key.args[0]))
    if name == "MODSEQ":
        return ctx.modseq >= int(str(key.args[0]))
    if name in ("OLDER", "YOUNGER"):
        arrived = ctx.record.internal_date
        if arrived is None or ctx.now is None:
            return False
        age = (ctx.now - arrived).total_seconds()
        interval = int(str(key.args[0]))
        return age > interval if name == "OLDER" else age <= interval
    if name in _DATE_KEYS:
        when = key.args[0]
        assert isinstance(when, dt.date)
        value = ctx.record.internal_date if not name.startswith("SENT") else ctx.record.sent_date
        day = _date_of(value)
        if day is None:
            return False
        suffix = name.removeprefix("SENT")
        if suffix == "BEFORE":
            return day < when
        if suffix == "ON":
            return day == when
        return day >= when
    if name in _HEADER_KEYS or name == "HEADER":
        field_name = name if name != "HEADER" else str(key.args[0])
        needle = str(key.args[-1]).casefold()
        values = header_values(ctx.record.header, field_name)
        if not values:
            return False
        if not needle:
            return True
        if any(needle in decode_header_text(value).casefold() for value in values):
            return True
        if name in _HEADER_KEYS and name != "SUBJECT":
            # Also match the normalised "name <mailbox@host>" form, like Dovecot.
            return any(needle in _addresses_text(value) for value in values)
        return False
    if name in ("BODY", "TEXT"):
        needle = str(key.args[0]).casefold()
        header, body = ctx.text()
        if needle in body:
            return True
        return name == "TEXT" and needle in header
    raise ParseError(f"Unknown search key {name}")


async def find_messages(
    session: ImapSession,
    view: SelectedView,
    program: Key,
    only: Collection[int] | None = None,
) -> list[tuple[int, int]]:
    """``(sequence number, UID)`` of the messages matching ``program``, in mailbox order;
    among the UIDs ``only`` when given (a search kept up to date looks at those changed)."""
    if program.name == "ALL" and only is None:
        # SORT and THREAD of a whole box: nothing to look at.
        return list(enumerate(view.uids, 1))
    columns = columns_needed(program)
    count = len(view.uids)
    largest_uid = view.uids[-1] if view.uids else 0
    saved = frozenset(view.saved)
    now = session.server.clock.now()
    found: list[tuple[int, int]] = []
    positions = range(count) if only is None else sorted(view.seq_of(uid) - 1 for uid in only)
    for start in range(0, len(positions), _SEARCH_BATCH):
        batch = positions[start : start + _SEARCH_BATCH]
        uids = [view.uids[position] for position in batch]
        records: dict[int, MessageRecord] = {}
        if columns:
            for record in await session.mailbox.fetch_records(view.folder_id, uids, columns):
                records[record.uid] = record
        blobs: dict[int, bytes] = {}
        if "blob" in columns:
            blob_list = await session.mailbox.read_blobs(
                [records[u].blob for u in uids if u in records]
            )
            blobs = dict(zip([u for u in uids if u in records], blob_list, strict=True))
        # One context reused for every message: SEARCH over a big box is a hot loop.
        ctx = MessageContext(0, 0, (), 0, False, MessageRecord(0), count, largest_uid, bytes)
        ctx.saved = saved
        ctx.now = now
        empty = MessageRecord(0)
        recent = view.recent
        for position, uid in zip(batch, uids, strict=True):
            meta = view.meta[uid]
            ctx.seq = position + 1
            ctx.uid = uid
            ctx.flags = meta.flags
            ctx.modseq = meta.modseq
            ctx.recent = uid in recent
            ctx.record = records.get(uid) or empty
            if blobs:
                ctx.raw = _getter(blobs, uid)
                ctx._text = None
            if matches(program, ctx):
                found.append((ctx.seq, uid))
    return found


def _getter(blobs: dict[int, bytes], uid: int) -> Callable[[], bytes]:
    return lambda: blobs.get(uid, b"")

"""The IMAP FETCH command: items of many messages read in pipelined batches, large message
sections sent from their files in pieces (RFC 3501 section 6.4.5, RFC 7162 CHANGEDSINCE,
RFC 3516 BINARY through :mod:`.binary`)."""

from __future__ import annotations

import asyncio
import bisect
import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, cast

from releves_mailer.mailbox.contracts import FetchColumn, MessageRecord
from releves_mailer.mailbox.imap import binary, mime
from releves_mailer.mailbox.imap.connection import CommandContext, CommandError, Disconnect
from releves_mailer.mailbox.imap.parser import FetchAttribute, ParseError, Parser
from releves_mailer.mailbox.imap.qresync import send_vanished_earlier
from releves_mailer.mailbox.imap.response import format_internal_date, literal
from releves_mailer.mailbox.imap.view import SelectedView

if TYPE_CHECKING:
    from releves_mailer.mailbox.imap.session import ImapSession

__all__ = ["cmd_fetch"]

_log = logging.getLogger(__name__)

_FETCH_BATCH = 500
#: Messages in a FETCH's first batch, sent at once: the client starts reading while the
#: server reads and formats the rest (10,000 envelopes: first octet after 2 ms, not 3).
_FIRST_BATCH = 50
#: Octets of large messages a FETCH batch reads ahead; beyond, they are sent from their file.
_READ_AHEAD_BYTES = 16 * 1024 * 1024
#: Octets of a message in the file read and sent at a time.
_SEND_CHUNK = 256 * 1024
_FETCH_MACROS = {
    "ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
    "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
    "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"],
}


@dataclass(frozen=True, slots=True)
class _LargeSection:
    """A FETCH item of a message left in its file, sent by ``ImapSession._send_large``."""

    record: MessageRecord
    item: FetchAttribute


def _needs_raw(item: FetchAttribute) -> bool:
    """Whether a section needs the message's octets (not only its stored header)."""
    return item.section and (bool(item.path) or not item.text.startswith("HEADER"))


def _fetch_items(parser: Parser) -> list[FetchAttribute]:
    if parser.peek() == 0x28:
        parser.list_start()
        items: list[FetchAttribute] = []
        while not parser.list_end():
            parser.maybe_sp()
            items.append(parser.fetch_attribute())
        if not items:
            raise ParseError("Empty fetch list")
        return items
    start = parser.pos
    word = parser.token(stop=b"[<").decode("ascii").upper()
    if word in _FETCH_MACROS:
        return [FetchAttribute(name, label=name.encode()) for name in _FETCH_MACROS[word]]
    parser.pos = start
    return [parser.fetch_attribute()]


async def cmd_fetch(session: ImapSession, context: CommandContext, parser: Parser) -> None:
    view = session.require_view()
    parser.sp()
    sequence = parser.sequence_set()
    parser.sp()
    items = _fetch_items(parser)
    changed_since: int | None = None
    vanished = False
    if parser.maybe_sp():
        parser.list_start()
        parser.expect(b"CHANGEDSINCE ")
        changed_since = parser.number()
        if parser.maybe_sp():
            parser.expect(b"VANISHED")
            if not (session.qresync and context.uid):
                raise CommandError("BAD", "VANISHED needs QRESYNC and UID FETCH")
            vanished = True
        if not parser.list_end():
            raise ParseError("Expected )")
    parser.end()
    names = {item.name for item in items}
    # QRESYNC: every FETCH response carries the UID, which resynchronising clients key on.
    if (context.uid or session.qresync) and "UID" not in names:
        items.insert(0, FetchAttribute("UID", label=b"UID"))
    if changed_since is not None or "MODSEQ" in names:
        session.enable_condstore()
    if changed_since is not None and "MODSEQ" not in names:
        items.append(FetchAttribute("MODSEQ", label=b"MODSEQ"))

    def selection() -> list[int]:
        uids = view.resolve(sequence, context.uid)
        if changed_since is not None:
            uids = [uid for uid in uids if view.meta[uid].modseq > changed_since]
        return uids

    columns: set[FetchColumn] = set()
    need_blob = False
    sets_seen = False
    for item in items:
        if item.name == "INTERNALDATE":
            columns.add("internal_date")
        elif item.name == "RFC822.SIZE":
            columns.add("size")
        elif item.name == "ENVELOPE":
            columns.add("envelope")
        elif item.name == "BODYSTRUCTURE":
            columns.add("bodystructure")
        elif item.name == "BODY" and not item.section:
            columns.add("body")
        elif item.name == "RFC822.HEADER" or (
            item.section and not item.path and item.text.startswith("HEADER")
        ):
            columns.add("header")
        elif item.name in ("RFC822", "RFC822.TEXT", "BINARY", "BINARY.SIZE") or item.section:
            need_blob = True
        if (item.name in ("RFC822", "RFC822.TEXT", "BINARY") and not item.peek) or (
            item.section and not item.peek
        ):
            sets_seen = True
    # The header of a message left in its file is read apart (see load): most messages are
    # read whole, and their file, size and date are cached by the store.
    header_asked = "header" in columns
    if need_blob:
        # Size: to leave large messages in their files and send them in pieces.
        columns |= {"blob", "size"}
    sets_seen = sets_seen and not view.readonly
    folder_id = view.folder_id
    threshold = session.config.spool_threshold

    async def load(batch: list[int]) -> tuple[dict[int, MessageRecord], dict[int, bytes]]:
        records: dict[int, MessageRecord] = {}
        if columns:
            for record in await session.mailbox.fetch_records(folder_id, batch, columns):
                records[record.uid] = record
        blobs: dict[int, bytes] = {}
        if need_blob:
            # Read ahead only small messages, up to a budget per batch; the others are
            # streamed from their files when their turn comes (see _send_large).
            budget = _READ_AHEAD_BYTES
            present = []
            for uid in batch:
                found = records.get(uid)
                if found is not None and found.size <= min(threshold, budget):
                    present.append(uid)
                    budget -= found.size
            blobs = await _read_blobs(session, records, present)
            in_file = [u for u in batch if u in records and u not in blobs]
            if in_file and not header_asked:
                # Their sections are ranges of the file: where the text starts is needed.
                for found in await session.mailbox.fetch_records(folder_id, in_file, ["header"]):
                    if found.uid in records:
                        records[found.uid] = replace(records[found.uid], header=found.header)
        return records, blobs

    plan = _plan(items, session.condstore)
    # The first batch is read while the view is brought up to date: when nothing changed
    # (the usual case) the client gets its first octets one database round trip sooner.
    state = (view.modseq, view.uidnext, len(view.uids))
    try:
        uids: list[int] | None = selection()
    except CommandError:
        uids = None  # perhaps valid once the view is up to date
    upcoming = asyncio.ensure_future(load(uids[:_FIRST_BATCH])) if uids else None
    try:
        await session.sync_view(allow_expunge=False)
        if uids is None or state != (view.modseq, view.uidnext, len(view.uids)):
            early = uids[:_FIRST_BATCH] if uids else []
            uids = selection()
            # A message's content never changes: the early read stands if it read the
            # same messages (a flag change or a new message at the end leaves them).
            if uids[:_FIRST_BATCH] != early:
                if upcoming is not None:
                    await upcoming  # not cancelled: the connection stays in a known state
                upcoming = asyncio.ensure_future(load(uids[:_FIRST_BATCH])) if uids else None
        if vanished and changed_since is not None:
            await send_vanished_earlier(session, view, changed_since, sequence)
        batches = [uids[:_FIRST_BATCH]] if uids else []
        batches += [
            uids[i : i + _FETCH_BATCH] for i in range(_FIRST_BATCH, len(uids), _FETCH_BATCH)
        ]
        # Pipeline: the next batch is read from the database and the files while this one
        # is formatted and sent.
        for index, batch in enumerate(batches):
            assert upcoming is not None
            records, blobs = await upcoming
            upcoming = (
                asyncio.ensure_future(load(batches[index + 1]))
                if index + 1 < len(batches)
                else None
            )
            newly_seen: set[int] = set()
            if sets_seen:
                unseen = [u for u in batch if "\\Seen" not in view.meta[u].flags]
                if unseen:
                    updated, _ = await session.mailbox.store_flags(
                        folder_id, unseen, "add", ["\\Seen"]
                    )
                    for meta in updated:
                        view.set_meta(meta)
                    newly_seen = {m.uid for m in updated}
            planned = plan if not newly_seen else None
            position = 0
            while position < len(batch):
                if planned is not None:
                    # Up to the first message the plan cannot send (one left in its file).
                    position = _send_planned(
                        session,
                        view,
                        planned,
                        batch,
                        position,
                        records,
                        blobs,
                        need_blob,
                        bool(columns),
                    )
                    if position == len(batch):
                        break
                uid = batch[position]
                position += 1
                if uid not in view.meta:
                    continue
                record = records.get(uid)
                if record is None:
                    if columns:
                        continue  # expunged by another session meanwhile
                    record = MessageRecord(uid)
                pieces = _fetch_one(
                    session, view, uid, items, record, blobs.get(uid), uid in newly_seen
                )
                if pieces:
                    await _send_large(session, pieces)
            if index == 0 and upcoming is not None:
                await session.flush()
            else:
                await session.maybe_flush()
    finally:
        if upcoming is not None and not upcoming.done():
            upcoming.cancel()
    session.ok(context, "Fetch completed")


# The kinds of item of a plan (see _plan).
_UID, _FLAGS, _MODSEQ, _DATE, _SIZE, _STORED, _WHOLE = range(7)
_STORED_COLUMNS = {"ENVELOPE": "envelope", "BODYSTRUCTURE": "bodystructure", "BODY": "body"}
_NO_RECORD = MessageRecord(0)
_Plan = list[tuple[int, bytes, str]]


def _plan(items: list[FetchAttribute], condstore: bool) -> _Plan | None:
    """The common FETCH items (flags, dates, sizes, stored structures, whole messages) as
    (kind, label, stored column) triples, formatted by :func:`_send_planned` with no per-item
    dispatch; ``None`` when an item needs :func:`_fetch_one`."""
    plan: _Plan = []
    for item in items:
        name = item.name
        if name == "UID":
            plan.append((_UID, b"UID", ""))
        elif name == "FLAGS":
            plan.append((_FLAGS, b"FLAGS", ""))
        elif name == "MODSEQ":
            plan.append((_MODSEQ, b"MODSEQ", ""))
        elif name == "INTERNALDATE":
            plan.append((_DATE, b"INTERNALDATE", ""))
        elif name == "RFC822.SIZE":
            plan.append((_SIZE, b"RFC822.SIZE", ""))
        elif name in _STORED_COLUMNS and not item.section:
            plan.append((_STORED, name.encode(), _STORED_COLUMNS[name]))
        elif name == "RFC822" or (
            name == "BODY"
            and item.section
            and not item.path
            and item.text == ""
            and item.partial is None
        ):
            plan.append((_WHOLE, item.label if item.section else b"RFC822", ""))
        else:
            return None
    kinds = {kind for kind, _, _ in plan}
    if condstore and _FLAGS in kinds and _MODSEQ not in kinds:
        plan.append((_MODSEQ, b"MODSEQ", ""))
    return plan


def _send_planned(
    session: ImapSession,
    view: SelectedView,
    plan: _Plan,
    batch: list[int],
    start: int,
    records: dict[int, MessageRecord],
    blobs: dict[int, bytes],
    need_blob: bool,
    has_columns: bool,
) -> int:
    """Send the FETCH responses of ``batch`` from ``start`` on, in order, up to the first
    message that ``plan`` does not cover (one left in its file, for :func:`_fetch_one`);
    that message's index, or the batch's length."""
    out = session.out
    metas = view.meta
    uids = view.uids
    recent = view.recent
    seq = 0
    for index in range(start, len(batch)):
        uid = batch[index]
        meta = metas.get(uid)
        if meta is None:
            continue
        record = records.get(uid)
        if record is None:
            if has_columns:
                continue  # expunged by another session meanwhile
            record = _NO_RECORD
        raw = blobs.get(uid)
        if need_blob and raw is None:
            return index  # left in its file
        # Sequence numbers: the batch is in mailbox order, mostly consecutive.
        if seq < len(uids) and uids[seq] == uid:
            seq += 1
        else:
            seq = bisect.bisect_left(uids, uid) + 1
        # Written straight into the output: a message's octets are copied once.
        out += b"* %d FETCH (" % seq
        space = False
        for kind, label, column in plan:
            if space:
                out += b" "
            space = True
            if kind == _UID:
                out += b"UID %d" % uid
            elif kind == _WHOLE:
                assert raw is not None
                out += b"%s {%d}\r\n" % (label, len(raw))
                out += raw
            elif kind == _FLAGS:
                flags = " ".join(meta.flags + (("\\Recent",) if uid in recent else ()))
                out += b"FLAGS (" + flags.encode() + b")"
            elif kind == _MODSEQ:
                out += b"MODSEQ (%d)" % meta.modseq
            elif kind == _DATE:
                assert record.internal_date is not None
                out += b"INTERNALDATE " + format_internal_date(record.internal_date)
            elif kind == _SIZE:
                out += b"RFC822.SIZE %d" % record.size
            else:
                out += label + b" " + getattr(record, column)
        out += b")\r\n"
    return len(batch)


async def _read_blobs(
    session: ImapSession, records: dict[int, MessageRecord], uids: list[int]
) -> dict[int, bytes]:
    """The files of ``uids``; one expunged meanwhile and swept away is left out (its
    FETCH response then is too, as when its row is gone)."""
    try:
        contents = await session.mailbox.read_blobs([records[u].blob for u in uids])
    except FileNotFoundError:
        found: dict[int, bytes] = {}
        for uid in uids:
            try:
                found[uid] = await session.mailbox.read_blob(records[uid].blob)
            except FileNotFoundError:
                records.pop(uid, None)
        return found
    return dict(zip(uids, contents, strict=True))


def _fetch_one(
    session: ImapSession,
    view: SelectedView,
    uid: int,
    items: list[FetchAttribute],
    record: MessageRecord,
    raw: bytes | None,
    newly_seen: bool,
) -> list[bytes | _LargeSection]:
    """Add the FETCH response of one message to the output, or, when a section of a
    message left in its file is asked for, return the response as pieces for
    :meth:`_send_large`."""
    meta = view.meta[uid]
    parts: list[bytes | _LargeSection] = []
    in_file = raw is None and bool(record.blob)
    parsed: mime.MimePart | None = None
    flags_sent = False
    for item in items:
        name = item.name
        if name == "UID":
            parts.append(b"UID %d" % uid)
        elif name == "FLAGS":
            flags = list(meta.flags) + (["\\Recent"] if uid in view.recent else [])
            parts.append(b"FLAGS (" + " ".join(flags).encode() + b")")
            flags_sent = True
        elif name == "MODSEQ":
            parts.append(b"MODSEQ (%d)" % meta.modseq)
        elif name == "INTERNALDATE":
            assert record.internal_date is not None
            parts.append(b"INTERNALDATE " + format_internal_date(record.internal_date))
        elif name == "RFC822.SIZE":
            parts.append(b"RFC822.SIZE %d" % record.size)
        elif name == "ENVELOPE":
            parts.append(b"ENVELOPE " + record.envelope)
        elif name == "BODYSTRUCTURE":
            parts.append(b"BODYSTRUCTURE " + record.bodystructure)
        elif name == "BODY" and not item.section:
            parts.append(b"BODY " + record.body)
        elif name == "RFC822.HEADER":
            parts.append(b"RFC822.HEADER " + literal(record.header))
        elif name in ("BINARY", "BINARY.SIZE"):
            parts.append(
                _LargeSection(record, item) if in_file else binary.fetch_item(item, raw or b"")
            )
        elif in_file and (name in ("RFC822", "RFC822.TEXT") or _needs_raw(item)):
            parts.append(_LargeSection(record, item))
        elif name in ("RFC822", "RFC822.TEXT"):
            data = raw or b""
            if name == "RFC822.TEXT":
                data = data[mime.split_header(data) :]
            parts.append(name.encode() + b" " + literal(data))
        elif item.section:
            if (
                not item.path
                and item.text in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT")
                and raw is None
            ):
                data = record.header
                if item.text != "HEADER":
                    names = {f.lower() for f in item.fields}
                    data = mime.header_fields(data, names, item.text.endswith(".NOT"))
            elif not item.path and item.text in ("", "TEXT"):
                data = raw or b""
                if item.text == "TEXT":
                    data = data[mime.split_header(data) :]
            else:
                if parsed is None:
                    parsed = mime.parse_message(raw or b"")
                data = mime.section_bytes(parsed, item.path, item.text, item.fields)
            if item.partial is not None:
                offset, count = item.partial
                data = data[offset : offset + count]
            parts.append(item.label + b" " + literal(data))
    if newly_seen and not flags_sent:
        flags = list(meta.flags) + (["\\Recent"] if uid in view.recent else [])
        parts.append(b"FLAGS (" + " ".join(flags).encode() + b")")
    wants_modseq = any(item.name == "MODSEQ" for item in items)
    if session.condstore and not wants_modseq and (newly_seen or flags_sent):
        parts.append(b"MODSEQ (%d)" % meta.modseq)
    head = b"* %d FETCH (" % view.seq_of(uid)
    if not any(isinstance(part, _LargeSection) for part in parts):
        session.out += head + b" ".join(cast(list[bytes], parts)) + b")\r\n"
        return []
    pieces: list[bytes | _LargeSection] = [head]
    for index, part in enumerate(parts):
        if index:
            pieces.append(b" ")
        pieces.append(part)
    pieces.append(b")\r\n")
    return pieces


async def _send_large(session: ImapSession, pieces: list[bytes | _LargeSection]) -> None:
    """Send a FETCH response whose large sections are read from the message's file, in
    ``_SEND_CHUNK`` pieces, each written once the client took the previous one."""
    for piece in pieces:
        if isinstance(piece, bytes):
            session.out += piece
            continue
        record, item = piece.record, piece.item
        if item.name.startswith("BINARY"):
            session.out += await binary.fetch_item_from_file(session, record, item)
            continue
        session.out += item.label + b" "
        span = await _large_span(session, record, item)
        if isinstance(span, bytes):
            session.out += literal(span)
            continue
        start, end = span
        if item.partial is not None:
            offset, count = item.partial
            start = min(start + offset, end)
            end = min(start + count, end)
        session.out += b"{%d}\r\n" % (end - start)
        await session.flush()
        for position in range(start, end, _SEND_CHUNK):
            wanted = min(_SEND_CHUNK, end - position)
            chunk = await session.mailbox.read_blob_range(record.blob, position, wanted)
            if len(chunk) != wanted:
                # The literal's length is already sent: nothing else keeps the
                # client in step.
                _log.error("Message file %s shorter than its size", record.blob)
                raise Disconnect()
            session.out += chunk
            await session.flush()


async def _large_span(
    session: ImapSession, record: MessageRecord, item: FetchAttribute
) -> tuple[int, int] | bytes:
    """Where the octets of ``item`` lie in a message left in its file."""
    if item.name == "RFC822.TEXT" or (item.section and not item.path and item.text == "TEXT"):
        return len(record.header), record.size
    if item.name == "RFC822" or (item.section and not item.path and item.text == ""):
        return 0, record.size
    # A part: the MIME analysis needs the whole message, once, in a thread.
    raw = await session.mailbox.read_blob(record.blob)
    return await asyncio.to_thread(
        lambda: mime.section_span(mime.parse_message(raw), item.path, item.text, item.fields)
    )

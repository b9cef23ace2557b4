"""Moving the built-in store's boxes into Dovecot: every folder, message, flag and internal date.

Each message is appended over IMAP (as the master user) with its exact bytes, flags and
internal date; folders are created with their special use where Dovecot accepts it, and
subscriptions follow. Nothing is deleted from the built-in store.

A move can be interrupted and run again: before appending into a folder, the mover lists
what that Dovecot folder already holds, keyed by (Message-ID, internal date to the second,
size in CRLF form) and counted, so a message already there is matched instead of appended
again, and two identical messages of one folder are both kept. The key needs no progress
table, works for messages without a Message-ID, and covers the one message a crash leaves
in doubt (appended, the run killed before it went on). The messages left unmatched are then
looked for by Message-ID alone, as :class:`~.lmtp.LmtpSink` does (one delivered over LMTP
has Dovecot's lines on top). A message found again gets its flags brought back in line
with the store's.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.parser
import email.policy
import imaplib
import re
import ssl
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from releves_mailer.mailbox.contracts import MessageRecord
from releves_mailer.mailbox.dovecot.setup import MASTER_USER, DovecotSetup
from releves_mailer.mailbox.sink import UnknownBox
from releves_mailer.mailbox.store import MessageStore

__all__ = ["MessageKey", "MoveReport", "move_to_dovecot"]

#: Seconds an IMAP exchange with Dovecot may take before the move stops (and can be rerun).
TIMEOUT = 120.0
#: Messages read from the store at once (their bytes are in memory together).
_BATCH = 100
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_INTERNALDATE = re.compile(
    rb'INTERNALDATE "\s?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"'
)
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
_UID = re.compile(rb"UID (\d+)")
_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")
_SPECIAL_USES = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")

#: (Message-ID or "", internal date in seconds since the epoch, size with CRLF line ends).
MessageKey = tuple[str, int, int]


@dataclass
class MoveReport:
    """What a move did; ``moved`` + ``found`` is every message of the boxes Dovecot knows."""

    boxes: int = 0
    folders: int = 0
    #: Messages appended into Dovecot by this run, and their bytes.
    moved: int = 0
    moved_bytes: int = 0
    #: Messages already in Dovecot (an earlier, interrupted run), and their bytes.
    found: int = 0
    found_bytes: int = 0
    #: Of the messages found, those whose flags were brought back in line with the store.
    flags_updated: int = 0
    #: Boxes of the store Dovecot does not know (no such portal account): not moved.
    unknown_boxes: list[str] = field(default_factory=list)
    skipped: int = 0
    #: ``box folder`` whose special use Dovecot did not take.
    special_use_lost: list[str] = field(default_factory=list)


def message_id_of(header: bytes) -> str:
    """The Message-ID of a header section, whitespace removed ("" when it has none)."""
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(header)
    value = parsed.get("Message-ID")
    return "".join(str(value).split()) if value is not None else ""


def crlf_size(raw: bytes) -> int:
    """The size IMAP gives a message: every line ending counted as CRLF (Dovecot stores
    lines as it likes and serves them CRLF)."""
    return len(raw) + raw.count(b"\n") - raw.count(b"\r\n")


def key_of(raw: bytes, header: bytes, internal_date: dt.datetime) -> MessageKey:
    return message_id_of(header), int(internal_date.timestamp()), crlf_size(raw)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _timestamp(match: re.Match[bytes]) -> int:
    day, month, year, hour, minute, second, sign, off_h, off_m = match.groups()
    offset = dt.timedelta(hours=int(off_h), minutes=int(off_m))
    zone = dt.timezone(offset if sign == b"+" else -offset)
    moment = dt.datetime(
        int(year),
        _MONTHS.index(month.decode().title()) + 1,
        int(day),
        int(hour),
        int(minute),
        int(second),
        tzinfo=zone,
    )
    return int(moment.timestamp())


def _canonical(flags: Sequence[str]) -> frozenset[str]:
    return frozenset(flag.lower() for flag in flags if flag.lower() != "\\recent")


@dataclass
class _Held:
    uid: int
    flags: frozenset[str]
    taken: bool = False


#: What a Dovecot folder holds, by key (a list: identical messages may be there twice).
_Holding = dict[MessageKey, list[_Held]]


class _Matcher:
    """Pairs the store's messages with what a Dovecot folder holds, each held message once:
    by the exact key first, then, for the messages left, by Message-ID alone (a message
    delivered over LMTP carries Dovecot's ``Return-Path`` and ``Delivered-To`` lines on top,
    so its size differs; the Message-ID in the folder is what :class:`LmtpSink` trusts too)."""

    def __init__(self, held: _Holding) -> None:
        self.exact = held
        self.by_id: dict[str, list[_Held]] = defaultdict(list)
        for (message_id, _date, _size), found in held.items():
            if message_id:
                self.by_id[message_id].extend(found)

    def __bool__(self) -> bool:
        return bool(self.exact)

    @staticmethod
    def _take(candidates: list[_Held] | None) -> _Held | None:
        while candidates:
            found = candidates.pop()
            if not found.taken:
                found.taken = True
                return found
        return None

    def exactly(self, key: MessageKey) -> _Held | None:
        return self._take(self.exact.get(key))

    def by_message_id(self, key: MessageKey) -> _Held | None:
        return self._take(self.by_id.get(key[0])) if key[0] else None


class _DovecotBox:
    """One box of Dovecot, opened as the master user (blocking calls, run in a thread)."""

    def __init__(self, setup: DovecotSetup, box: str) -> None:
        tls = ssl.create_default_context(cafile=str(setup.certificate))
        # Dovecot shows the installation's own certificate, reached by address.
        tls.check_hostname = False
        try:
            client = imaplib.IMAP4(setup.listen, setup.ports.imap, timeout=TIMEOUT)
        except OSError as error:
            raise ConnectionError(
                f"Dovecot injoignable sur {setup.listen}:{setup.ports.imap} ({error}) : "
                f"est-il démarré (dovecot -c {setup.folder / 'dovecot.conf'}) ?"
            ) from None
        try:
            client.starttls(ssl_context=tls)
            client.login(f"{box}*{MASTER_USER}", setup.master_password())
        except imaplib.IMAP4.error as error:
            client.shutdown()
            if "AUTHORIZATIONFAILED" in str(error) or "AUTHENTICATIONFAILED" in str(error):
                raise UnknownBox(box) from None
            raise
        self.client = client
        # The capabilities after login (the greeting's are the pre-login ones).
        status, data = client.capability()
        shown = b" ".join(item for item in data if isinstance(item, bytes)).upper()
        self.special_use = status == "OK" and b"CREATE-SPECIAL-USE" in shown

    def close(self) -> None:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            self.client.logout()

    def _ok(self, response: tuple[str, Sequence[object]], what: str) -> Sequence[object]:
        status, data = response
        if status != "OK":
            raise OSError(f"Dovecot a refusé {what} : {data!r}")
        return data

    def open_folder(self, name: str, special_use: str) -> tuple[_Holding, bool]:
        """Create ``name`` if missing and select it; what it holds, and whether its special
        use (if any) is Dovecot's too."""
        client = self.client
        if special_use and self.special_use:
            client.xatom("CREATE", _quoted(name), f"(USE ({special_use}))")
        else:
            client.create(_quoted(name))  # NO when it exists: fine
        kept = True
        if special_use:
            status, listed = client.list('""', _quoted(name))
            shown = b" ".join(item for item in listed if isinstance(item, bytes))
            kept = status == "OK" and special_use.lower().encode() in shown.lower()
        data = self._ok(client.select(_quoted(name)), f"la sélection de {name}")
        held: _Holding = defaultdict(list)
        if int(data[0] or 0) == 0:  # type: ignore[call-overload]
            return held, kept
        fetched = self._ok(
            client.uid(
                "FETCH",
                "1:*",
                "(UID INTERNALDATE RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])",
            ),
            f"la lecture de {name}",
        )
        for item in fetched:
            if not isinstance(item, tuple):
                continue
            prefix, header = item
            uid, date, size, flags = (
                _UID.search(prefix),
                _INTERNALDATE.search(prefix),
                _SIZE.search(prefix),
                _FLAGS.search(prefix),
            )
            if not (uid and date and size and flags):
                raise OSError(f"réponse FETCH de Dovecot illisible : {prefix!r}")
            key = (message_id_of(header), _timestamp(date), int(size.group(1)))
            held[key].append(_Held(int(uid.group(1)), _canonical(flags.group(1).decode().split())))
        return held, kept

    def append(self, name: str, raw: bytes, flags: Sequence[str], date: dt.datetime) -> None:
        flag_list = f"({' '.join(flags)})" if flags else None
        self._ok(
            self.client.append(_quoted(name), flag_list, imaplib.Time2Internaldate(date), raw),
            f"l'ajout d'un message dans {name}",
        )

    def set_flags(self, uid: int, flags: Sequence[str]) -> None:
        self._ok(
            self.client.uid("STORE", str(uid), "FLAGS.SILENT", f"({' '.join(flags)})"),
            "la mise à jour des drapeaux",
        )

    def subscribe(self, name: str) -> None:
        self.client.subscribe(_quoted(name))


async def move_to_dovecot(
    store: MessageStore,
    setup: DovecotSetup,
    *,
    parallel: int = 4,
    on_message: Callable[[int], None] | None = None,
) -> MoveReport:
    """Copy every box of ``store`` into the Dovecot of ``setup`` (see the module's text).

    ``parallel`` boxes are moved at once; ``on_message`` hears the size of each message
    done (moved or found), e.g. for a progress bar; an exception it raises stops the move
    there (a rerun goes on from there)."""
    report = MoveReport()
    gate = asyncio.Semaphore(parallel)

    async def one(owner: str) -> None:
        async with gate:
            await _move_box(store, setup, owner, report, on_message)

    tasks = [asyncio.create_task(one(owner)) for owner in await store.owners()]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    report.unknown_boxes.sort()
    report.special_use_lost.sort()
    return report


async def _move_box(
    store: MessageStore,
    setup: DovecotSetup,
    owner: str,
    report: MoveReport,
    on_message: Callable[[int], None] | None,
) -> None:
    folders = await store.list_folders(owner)
    try:
        box = await asyncio.to_thread(_DovecotBox, setup, owner)
    except UnknownBox:
        report.unknown_boxes.append(owner)
        for folder in folders:
            report.skipped += (await store.folder_counts(folder.id))[0]
        return
    report.boxes += 1
    try:
        for folder in folders:
            held, kept = await asyncio.to_thread(box.open_folder, folder.name, folder.special_use)
            if not kept:
                report.special_use_lost.append(f"{owner} {folder.name}")
            report.folders += 1
            await _move_folder(store, box, folder.id, folder.name, held, report, on_message)
        for name in await store.subscriptions(owner):
            await asyncio.to_thread(box.subscribe, name)
    finally:
        await asyncio.to_thread(box.close)


async def _move_folder(
    store: MessageStore,
    box: _DovecotBox,
    folder_id: int,
    name: str,
    held: _Holding,
    report: MoveReport,
    on_message: Callable[[int], None] | None,
) -> None:
    _info, metas = await store.load_view(folder_id)
    matcher = _Matcher(held)
    pending = [meta.uid for meta in metas]
    if matcher:
        # Exact matches first, over the whole folder, so that the Message-ID fallback of
        # one message never takes the exact twin of another.
        unmatched: list[int] = []
        async for record, raw, key in _records(store, folder_id, pending):
            found = matcher.exactly(key)
            if found is None:
                unmatched.append(record.uid)
            else:
                await _found(box, found, record.flags, len(raw), report, on_message)
        pending = unmatched
    async for record, raw, key in _records(store, folder_id, pending):
        found = matcher.by_message_id(key) if matcher else None
        if found is not None:
            await _found(box, found, record.flags, len(raw), report, on_message)
            continue
        assert record.internal_date is not None
        await asyncio.to_thread(box.append, name, raw, record.flags, record.internal_date)
        report.moved += 1
        report.moved_bytes += len(raw)
        if on_message is not None:
            on_message(len(raw))


async def _records(
    store: MessageStore, folder_id: int, uids: list[int]
) -> AsyncIterator[tuple[MessageRecord, bytes, MessageKey]]:
    """The messages ``uids`` of a folder with their bytes and keys, a batch in memory."""
    for start in range(0, len(uids), _BATCH):
        records = await store.fetch_records(
            folder_id, uids[start : start + _BATCH], ["flags", "internal_date", "blob", "header"]
        )
        contents = await store.read_blobs([record.blob for record in records])
        for record, raw in zip(records, contents, strict=True):
            assert record.internal_date is not None
            yield record, raw, key_of(raw, record.header, record.internal_date)


async def _found(
    box: _DovecotBox,
    found: _Held,
    flags: Sequence[str],
    size: int,
    report: MoveReport,
    on_message: Callable[[int], None] | None,
) -> None:
    if found.flags != _canonical(flags):
        await asyncio.to_thread(box.set_flags, found.uid, flags)
        report.flags_updated += 1
    report.found += 1
    report.found_bytes += size
    if on_message is not None:
        on_message(size)

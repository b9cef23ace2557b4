"""Delivery into Dovecot's boxes: the :class:`~releves_mailer.mailbox.sink.MessageSink`
contract over LMTP, idempotent by Message-ID, and what the daemon asks of Dovecot besides
(the bytes a box holds, whether it answers).

Before delivering, each box is searched for the batch's Message-IDs, over IMAP as the master
user: a message that a crash left in doubt (sent, not yet recorded by the caller) is then not
sent again. A batch opens one IMAP connection per box and one LMTP connection in all.
Deliveries to one box are serialised in the process; across processes, the caller's claim on
the delivery (one worker per statement) is what keeps two of them from racing. The master
password travels over TLS to a peer that must show the installation's certificate.

A message for INBOX without flags goes over LMTP, as a mail server would deliver it: Dovecot
adds its ``Return-Path`` and ``Delivered-To`` lines on top and dates it on arrival (a date
given is not kept). One for another folder, or with flags, is appended over IMAP, which keeps
its exact bytes, flags and date.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email
import imaplib
import logging
import re
import smtplib
import socket
import ssl
from collections.abc import Iterator, Sequence

from releves_mailer.mailbox.dovecot.setup import MASTER_USER, DovecotSetup
from releves_mailer.mailbox.sink import DeliveryReceipt, MailDelivery, UnknownBox
from releves_mailer.portfolio.boxes import box_address, split_address

__all__ = ["DovecotMasterRefused", "LmtpSink"]

_log = logging.getLogger(__name__)

#: Seconds a conversation with Dovecot may take before the delivery fails (and is retried).
TIMEOUT = 60.0
#: Seconds the health check waits for Dovecot's greeting.
PROBE_TIMEOUT = 5.0
#: Message-IDs looked up by one IMAP SEARCH.
SEARCH_CHUNK = 50
_MESSAGE_ID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]{1,250}>")
_SIZE = re.compile(rb"\(SIZE (\d+)\)\s*$")


class DovecotMasterRefused(OSError):
    """Dovecot refuses the daemon's master login: its password file and Dovecot's
    ``master-users`` disagree. Not an unknown box: nothing is delivered until it is fixed."""


class LmtpSink:
    """Delivers into the Dovecot instance described by ``setup`` (see :mod:`.setup`)."""

    def __init__(self, setup: DovecotSetup) -> None:
        self._setup = setup
        self._password = setup.master_password()
        # Dovecot shows the installation's own certificate: trust that one, whatever name
        # it carries (the instance is reached by address).
        self._tls = ssl.create_default_context(cafile=str(setup.certificate))
        self._tls.check_hostname = False
        #: One delivery at a time per box in this process (as many locks as boxes).
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def setup(self) -> DovecotSetup:
        return self._setup

    async def prepare(self, raw: bytes) -> None:
        return None

    def _box(self, address: str) -> str:
        parts = split_address(address, self._setup.domain)
        if parts is None:
            raise UnknownBox(address)
        return box_address(parts[0], self._setup.domain, dedicated=parts[1])

    async def deliver(
        self,
        address: str,
        raw: bytes,
        message_id: str,
        *,
        folder: str = "INBOX",
        flags: Sequence[str] = (),
        internal_date: dt.datetime | None = None,
    ) -> DeliveryReceipt:
        item = MailDelivery(address, raw, message_id, folder, flags, internal_date)
        return (await self.deliver_many([item]))[0]

    async def deliver_many(self, items: Sequence[MailDelivery]) -> list[DeliveryReceipt]:
        boxes = [self._box(item.address) for item in items]
        for item in items:
            if not _MESSAGE_ID.fullmatch(item.message_id):
                raise ValueError(f"not a Message-ID: {item.message_id!r}")
        if not items:
            return []
        async with contextlib.AsyncExitStack() as locks:
            # Always in the same order: two batches never wait for each other's boxes.
            for box in sorted(set(boxes)):
                await locks.enter_async_context(self._locks.setdefault(box, asyncio.Lock()))
            return await asyncio.to_thread(self._deliver_sync, list(zip(boxes, items, strict=True)))

    async def usage(self, address: str) -> int:
        """Bytes the box of ``address`` holds, all its folders (0 for a box Dovecot does not
        know, or when Dovecot does not answer); the SMTP server's quota check."""
        try:
            box = self._box(address)
        except UnknownBox:
            return 0
        try:
            return await asyncio.to_thread(self._usage_sync, box)
        except (OSError, imaplib.IMAP4.error) as error:
            # Dovecot unreachable: the delivery that follows fails too, and says so (451).
            _log.warning("size of %s not known to Dovecot: %s", box, error)
            return 0

    async def unreachable(self) -> list[str]:
        """The services of Dovecot the daemon uses that do not greet it (empty: all do)."""
        listen = self._setup.listen
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "*": "127.0.0.1"}.get(listen, listen)  # noqa: S104
        checks = {
            "lmtp": (host, self._setup.ports.lmtp, b"220"),
            "imap": (host, self._setup.ports.imap, b"* OK"),
        }
        answers = await asyncio.gather(
            *(asyncio.to_thread(_greets, *check) for check in checks.values())
        )
        return [
            f"{name} {host}:{port} ({why})"
            for (name, (_, port, _)), why in zip(checks.items(), answers, strict=True)
            if why
        ]

    # -- in a thread --------------------------------------------------------------------

    def _imap(self, box: str) -> imaplib.IMAP4:
        client = imaplib.IMAP4(self._setup.listen, self._setup.ports.imap, timeout=TIMEOUT)
        try:
            client.starttls(ssl_context=self._tls)
            client.login(f"{box}*{MASTER_USER}", self._password)
        except imaplib.IMAP4.error as error:
            client.shutdown()
            # A box Dovecot does not know: AUTHORIZATIONFAILED (the master login itself
            # succeeded). AUTHENTICATIONFAILED: the master password is refused, which no
            # box of any address would change. UNAVAILABLE and the rest are passing
            # troubles, raised for the caller to retry.
            if "AUTHORIZATIONFAILED" in str(error):
                raise UnknownBox(box) from None
            if "AUTHENTICATIONFAILED" in str(error):
                raise DovecotMasterRefused(
                    f"Dovecot refuse la connexion maître de releves-mailer ({error}) : le mot "
                    f"de passe de {self._setup.master_password_file} ne correspond pas à "
                    f"{self._setup.folder / 'master-users'} ; relancez "
                    "« releves-mailer dovecot-config » puis rechargez Dovecot"
                ) from None
            raise
        return client

    @contextlib.contextmanager
    def _connections(self, boxes: Sequence[str]) -> Iterator[dict[str, imaplib.IMAP4]]:
        clients: dict[str, imaplib.IMAP4] = {}
        try:
            for box in boxes:
                clients[box] = self._imap(box)
            yield clients
        finally:
            for client in clients.values():
                with contextlib.suppress(OSError, imaplib.IMAP4.error):
                    client.logout()

    def _deliver_sync(self, batch: list[tuple[str, MailDelivery]]) -> list[DeliveryReceipt]:
        boxes = list(dict.fromkeys(box for box, _ in batch))
        receipts: list[DeliveryReceipt | None] = [None] * len(batch)
        lmtp: smtplib.LMTP | None = None
        # Every box opened before anything is sent: an unknown one refuses the whole batch.
        with self._connections(boxes) as clients:
            try:
                for box in boxes:
                    client = clients[box]
                    mine = [(i, item) for i, (b, item) in enumerate(batch) if b == box]
                    folders = dict.fromkeys(item.folder for _, item in mine)
                    held = {
                        folder: _held(
                            client,
                            folder,
                            [item.message_id for _, item in mine if item.folder == folder],
                        )
                        for folder in folders
                    }
                    for index, item in mine:
                        here = held[item.folder]
                        if item.message_id in here:
                            receipts[index] = DeliveryReceipt(box, item.message_id, stored=False)
                            continue
                        if item.folder.upper() == "INBOX" and not item.flags:
                            if lmtp is None:
                                lmtp = smtplib.LMTP(
                                    self._setup.listen, self._setup.ports.lmtp, timeout=TIMEOUT
                                )
                            _send_lmtp(lmtp, box, item.raw)
                        else:
                            _append(client, item.folder, item.raw, item.flags, item.internal_date)
                        here.add(item.message_id)
                        receipts[index] = DeliveryReceipt(box, item.message_id, stored=True)
            finally:
                if lmtp is not None:
                    with contextlib.suppress(OSError, smtplib.SMTPException):
                        lmtp.quit()
        assert all(receipt is not None for receipt in receipts)
        return [receipt for receipt in receipts if receipt is not None]

    def _usage_sync(self, box: str) -> int:
        try:
            client = self._imap(box)
        except UnknownBox:
            return 0
        try:
            status, _ = client.list('""', '"*" RETURN (STATUS (SIZE))')
            if status != "OK":
                raise OSError(f"Dovecot refused the LIST: {status}")
            _, found = client.response("STATUS")
            total = 0
            for entry in found or []:
                line = b"".join(entry) if isinstance(entry, tuple) else entry
                match = _SIZE.search(line or b"")
                total += int(match.group(1)) if match else 0
            return total
        finally:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                client.logout()


def _send_lmtp(lmtp: smtplib.LMTP, box: str, raw: bytes) -> None:
    try:
        refused = lmtp.sendmail("", [box], raw)
    except smtplib.SMTPRecipientsRefused:
        raise UnknownBox(box) from None
    if refused:
        raise UnknownBox(box)


def _greets(host: str, port: int, greeting: bytes) -> str:
    """Empty when the service at ``host:port`` greets as expected, else why not."""
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT) as sock:
            sock.settimeout(PROBE_TIMEOUT)
            first = sock.recv(256)
    except OSError as error:
        return type(error).__name__
    return "" if first.startswith(greeting) else "réponse inattendue"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _held(client: imaplib.IMAP4, folder: str, message_ids: Sequence[str]) -> set[str]:
    """Which of ``message_ids`` ``folder`` holds (a folder not made yet holds none)."""
    status, _ = client.select(_quoted(folder), readonly=True)
    if status != "OK":
        return set()
    wanted = set(message_ids)
    held: set[str] = set()
    ids = sorted(wanted)
    for start in range(0, len(ids), SEARCH_CHUNK):
        chunk = ids[start : start + SEARCH_CHUNK]
        # HEADER matches substrings: the candidates' Message-IDs are compared exactly below.
        keys = [f"HEADER Message-ID {_quoted(one)}" for one in chunk]
        query = keys[-1]
        for key in reversed(keys[:-1]):
            query = f"OR {key} {query}"
        status, data = client.uid("SEARCH", query)
        if status != "OK":
            raise OSError(f"Dovecot refused the SEARCH: {data!r}")
        uids = (data[0] or b"").split() if data else []
        if not uids:
            continue
        status, data = client.uid(
            "FETCH", b",".join(uids).decode(), "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"
        )
        if status != "OK":
            raise OSError(f"Dovecot refused the FETCH: {data!r}")
        for entry in data:
            if isinstance(entry, tuple):
                header = email.message_from_bytes(entry[1]).get("Message-ID", "")
                found = "".join(str(header).split())
                if found in wanted:
                    held.add(found)
    return held


def _append(
    client: imaplib.IMAP4,
    folder: str,
    raw: bytes,
    flags: Sequence[str],
    internal_date: dt.datetime | None,
) -> None:
    client.create(_quoted(folder))  # NO when it exists: fine
    when = imaplib.Time2Internaldate(internal_date) if internal_date else None
    status, data = client.append(
        _quoted(folder), f"({' '.join(flags)})" if flags else None, when, raw
    )
    if status != "OK":
        raise OSError(f"Dovecot refused the APPEND: {data!r}")

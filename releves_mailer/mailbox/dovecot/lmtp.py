"""Delivery into Dovecot's boxes: the :class:`~releves_mailer.mailbox.sink.MessageSink`
contract over LMTP, idempotent by Message-ID.

Before each delivery the box is searched for the Message-ID, over IMAP as the master user:
a message that a crash left in doubt (sent, not yet recorded by the caller) is then not
sent again. Deliveries of one Message-ID to one box are serialised in the process; across
processes, the caller's claim on the delivery (one worker per statement) is what keeps two
of them from racing. The master password travels over TLS to a peer that must show the
installation's certificate. A message for INBOX without flags goes over LMTP, as a mail server
would deliver it (Dovecot adds its ``Return-Path`` and ``Delivered-To`` lines on top); one
for another folder, or with flags or a date, is appended over IMAP, which keeps them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import imaplib
import re
import smtplib
import ssl
from collections.abc import Sequence

from releves_mailer.mailbox.dovecot.setup import MASTER_USER, DovecotSetup
from releves_mailer.mailbox.sink import DeliveryReceipt, MailDelivery, UnknownBox
from releves_mailer.portfolio.boxes import box_address, split_address

__all__ = ["LmtpSink"]

#: Seconds a conversation with Dovecot may take before the delivery fails (and is retried).
TIMEOUT = 60.0
_MESSAGE_ID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]{1,250}>")


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

    async def prepare(self, raw: bytes) -> None:
        return None

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
        parts = split_address(address, self._setup.domain)
        if parts is None:
            raise UnknownBox(address)
        box = box_address(parts[0], self._setup.domain, dedicated=parts[1])
        if not _MESSAGE_ID.fullmatch(message_id):
            raise ValueError(f"not a Message-ID: {message_id!r}")
        async with self._locks.setdefault(box, asyncio.Lock()):
            return await asyncio.to_thread(
                self._deliver_sync, box, raw, message_id, folder, flags, internal_date
            )

    async def deliver_many(self, items: Sequence[MailDelivery]) -> list[DeliveryReceipt]:
        for item in items:
            if split_address(item.address, self._setup.domain) is None:
                raise UnknownBox(item.address)
        return [
            await self.deliver(
                item.address,
                item.raw,
                item.message_id,
                folder=item.folder,
                flags=item.flags,
                internal_date=item.internal_date,
            )
            for item in items
        ]

    # -- in a thread --------------------------------------------------------------------

    def _imap(self, box: str) -> imaplib.IMAP4:
        client = imaplib.IMAP4(self._setup.listen, self._setup.ports.imap, timeout=TIMEOUT)
        try:
            client.starttls(ssl_context=self._tls)
            client.login(f"{box}*{MASTER_USER}", self._password)
        except imaplib.IMAP4.error as error:
            client.shutdown()
            # The master login is refused for a box Dovecot does not know (AUTHORIZATION-,
            # or AUTHENTICATIONFAILED for another domain); UNAVAILABLE and the rest are
            # passing troubles, raised for the caller to retry.
            if "AUTHORIZATIONFAILED" in str(error) or "AUTHENTICATIONFAILED" in str(error):
                raise UnknownBox(box) from None
            raise
        return client

    def _deliver_sync(
        self,
        box: str,
        raw: bytes,
        message_id: str,
        folder: str,
        flags: Sequence[str],
        internal_date: dt.datetime | None,
    ) -> DeliveryReceipt:
        client = self._imap(box)
        try:
            if _holds(client, folder, message_id):
                return DeliveryReceipt(box, message_id, stored=False)
            if folder.upper() == "INBOX" and not flags and internal_date is None:
                self._send_lmtp(box, raw)
            else:
                _append(client, folder, raw, flags, internal_date)
        finally:
            client.logout()
        return DeliveryReceipt(box, message_id, stored=True)

    def _send_lmtp(self, box: str, raw: bytes) -> None:
        with smtplib.LMTP(self._setup.listen, self._setup.ports.lmtp, timeout=TIMEOUT) as lmtp:
            refused = lmtp.sendmail("", [box], raw)
        if refused:
            raise UnknownBox(box)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _holds(client: imaplib.IMAP4, folder: str, message_id: str) -> bool:
    status, _ = client.select(_quoted(folder), readonly=True)
    if status != "OK":
        return False  # no such folder yet: it holds nothing
    status, data = client.uid("SEARCH", "HEADER", "Message-ID", _quoted(message_id))
    return status == "OK" and bool(data and data[0] and data[0].split())


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

"""A second, minimal MessageSink: Maildir files on disk, to hold the store to its contract.

One directory per box under a root (``<root>/<address>/``, made by :meth:`MaildirSink.add_box`:
any other address is no box); INBOX is the box's own ``new``/``cur``/``tmp``, another folder
a Maildir++ ``.<name>`` beside them. A message is written into ``tmp/`` and then linked into
``new/`` (``cur/`` when it has flags) under a name derived from its Message-ID: the link
refuses an existing name, so a Message-ID is stored once, even by concurrent deliveries.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

from releves_mailer.mailbox.sink import DeliveryReceipt, MailDelivery, UnknownBox

__all__ = ["MaildirSink"]

_FLAG_LETTERS = {
    "\\Draft": "D",
    "\\Flagged": "F",
    "\\Answered": "R",
    "\\Seen": "S",
    "\\Deleted": "T",
}


class MaildirSink:
    """Boxes as Maildir directories under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def add_box(self, address: str) -> None:
        self._box(address.strip().lower()).mkdir(parents=True, exist_ok=True)

    def _box(self, address: str) -> Path:
        return self.root / address

    def messages(self, address: str) -> list[Path]:
        """The message files of every folder of the box."""
        box = self._box(address.lower())
        return sorted(path for path in box.glob("**/*") if path.parent.name in ("new", "cur"))

    async def prepare(self, raw: bytes) -> None:
        return None  # nothing to do ahead: a delivery is one file

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
        [receipt] = await self.deliver_many(
            [MailDelivery(address, raw, message_id, folder, flags, internal_date)]
        )
        return receipt

    async def deliver_many(self, items: Sequence[MailDelivery]) -> list[DeliveryReceipt]:
        boxes = [item.address.strip().lower() for item in items]
        for box in dict.fromkeys(boxes):
            if not box or "/" in box or not self._box(box).is_dir():
                raise UnknownBox(f"no box {box!r} here")
        return await asyncio.to_thread(
            lambda: [self._write(box, item) for box, item in zip(boxes, items, strict=True)]
        )

    def _write(self, box: str, item: MailDelivery) -> DeliveryReceipt:
        name = hashlib.sha256(item.message_id.encode()).hexdigest()
        if any(self._box(box).glob(f"**/{name}*")):
            return DeliveryReceipt(box, item.message_id, stored=False)
        folder = self._box(box)
        if item.folder.upper() != "INBOX":
            folder = folder / ("." + item.folder.replace("/", "."))
        for part in ("tmp", "new", "cur"):
            (folder / part).mkdir(parents=True, exist_ok=True)
        letters = "".join(sorted({_FLAG_LETTERS[f] for f in item.flags if f in _FLAG_LETTERS}))
        final = folder / "cur" / f"{name}:2,{letters}" if letters else folder / "new" / name
        temporary = folder / "tmp" / uuid.uuid4().hex
        with temporary.open("wb") as handle:
            handle.write(item.raw)
            handle.flush()
            os.fsync(handle.fileno())
        if item.internal_date is not None:
            when = item.internal_date.timestamp()
            os.utime(temporary, (when, when))
        try:
            os.link(temporary, final)  # never replaces: a concurrent twin keeps its file
        except FileExistsError:
            return DeliveryReceipt(box, item.message_id, stored=False)
        finally:
            temporary.unlink()
        return DeliveryReceipt(box, item.message_id, stored=True)

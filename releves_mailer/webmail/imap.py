"""The webmail's IMAP client: one logged-in aioimaplib connection to one box, and what it reads.

Works against any IMAP4rev1 server (ours, Dovecot): only RFC 3501 commands plus MOVE when
the server offers it (else COPY, STORE \\Deleted and UID EXPUNGE or EXPUNGE). A list page
costs one ``UID SEARCH`` and one ``UID FETCH`` of the page's UIDs (ENVELOPE, RFC822.SIZE,
BODYSTRUCTURE): never the whole box. Responses are parsed by :mod:`.parsing`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import quopri
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from typing import Any
from urllib.parse import unquote_to_bytes

import aioimaplib
from imapclient import imap_utf7

from releves_mailer.webmail.parsing import ParseError, parse_fetch, parse_internaldate, parse_line

__all__ = [
    "Attachment",
    "Folder",
    "ImapBox",
    "ImapEndpoint",
    "LoginRefused",
    "Search",
    "Summary",
    "WebmailError",
]

#: Longest text of one search field.
MAX_SEARCH = 100
#: Most messages an attachment-name search inspects (it needs their structure).
MAX_ATTACHMENT_CANDIDATES = 5000
#: The folder deleted messages go to (created when missing).
TRASH = "Trash"


class WebmailError(Exception):
    """The IMAP server refused or failed; ``message`` is French, for the page."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LoginRefused(WebmailError):
    """The box refused the stored password (changed since the portal login)."""


@dataclass(frozen=True, slots=True)
class ImapEndpoint:
    """Where the boxes are served: IMAPS when ``tls`` is given, else plain (loopback)."""

    host: str
    port: int
    tls: ssl.SSLContext | None = None
    timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class Folder:
    name: str
    label: str
    total: int
    unread: int
    selectable: bool = True


@dataclass(frozen=True, slots=True)
class Attachment:
    section: str
    name: str
    content_type: str
    encoding: str
    size: int


@dataclass(frozen=True, slots=True)
class Summary:
    """One line of the message list."""

    uid: int
    sender: str
    subject: str
    date: dt.datetime | None
    size: int
    seen: bool
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True, slots=True)
class Search:
    """Server-side search criteria; empty fields do not filter. ``before`` is inclusive."""

    subject: str = ""
    sender: str = ""
    since: dt.date | None = None
    before: dt.date | None = None
    attachment: str = ""

    @property
    def empty(self) -> bool:
        return not (self.subject or self.sender or self.since or self.before or self.attachment)


def quote(text: str) -> str:
    """An IMAP quoted string (CR, LF and NUL are refused by the caller's validation)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def mailbox_arg(name: str) -> str:
    return quote(imap_utf7.encode(name).decode("ascii"))


_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


def _imap_date(day: dt.date) -> str:
    return f"{day.day}-{_MONTHS[day.month - 1]}-{day.year}"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if "=?" not in str(value):
        return str(value)
    try:
        return str(make_header(decode_header(str(value))))
    except (ValueError, LookupError):
        return str(value)


def _address(addresses: Any) -> str:
    """The first address of an ENVELOPE address list ``((name adl mailbox host) ...)``."""
    if not isinstance(addresses, list) or not addresses or not isinstance(addresses[0], list):
        return ""
    first = addresses[0] + [None] * 4
    mailbox, host = _text(first[2]), _text(first[3])
    address = f"{mailbox}@{host}" if host else mailbox
    name = _text(first[0]).replace('"', "").strip()
    return f"{name} <{address}>" if name else address


def _params(raw: Any) -> dict[str, str]:
    """Body parameters ``(k v k v)`` as a dict, RFC 2231 names decoded."""
    if not isinstance(raw, list):
        return {}
    items = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in raw]
    pairs = [(items[i].lower(), items[i + 1]) for i in range(0, len(items) - 1, 2)]
    found = dict(pairs)
    starred = [(k, v) for k, v in pairs if "*" in k]
    if starred:
        for key, value in decode_rfc2231_params(starred).items():
            found[key] = value
    return found


def decode_rfc2231_params(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """RFC 2231 parameters (``filename*=utf-8''x%C3%A9``, ``name*0*=...``) decoded."""
    chunks: dict[str, list[tuple[int, str, bool]]] = {}
    for key, value in pairs:
        name, _, rest = key.partition("*")
        number = rest.rstrip("*")
        index = int(number) if number.isdigit() else 0
        chunks.setdefault(name, []).append((index, value, key.endswith("*")))
    result = {}
    for name, found in chunks.items():
        found.sort()
        charset = "utf-8"
        data = b""
        for position, (_, value, encoded) in enumerate(found):
            if encoded and position == 0 and value.count("'") >= 2:
                charset, _, value = value.split("'", 2)
            data += unquote_to_bytes(value) if encoded else value.encode("utf-8")
        try:
            result[name] = data.decode(charset or "utf-8", "replace")
        except LookupError:
            result[name] = data.decode("utf-8", "replace")
    return result


def attachments_of(body: Any, prefix: str = "") -> list[Attachment]:
    """The attachments of a BODYSTRUCTURE, with their IMAP section numbers."""
    if not isinstance(body, list) or not body:
        return []
    if isinstance(body[0], list):  # multipart: (part part ... subtype ...)
        found = []
        for index, part in enumerate(_leading_lists(body), start=1):
            found.extend(attachments_of(part, f"{prefix}.{index}" if prefix else str(index)))
        return found
    if len(body) < 7:
        return []
    section = prefix or "1"
    kind = _text(body[0]).lower()
    subtype = _text(body[1]).lower()
    params = _params(body[2])
    encoding = _text(body[5]).lower()
    size = body[6] if isinstance(body[6], int) else 0
    extension = {"text": 9, "message": 11}.get(kind, 8)
    if kind == "message" and subtype != "rfc822":
        extension = 8
    disposition = body[extension] if len(body) > extension else None
    disposition_type = ""
    disposition_params: dict[str, str] = {}
    if isinstance(disposition, list) and disposition:
        disposition_type = _text(disposition[0]).lower()
        disposition_params = _params(disposition[1]) if len(disposition) > 1 else {}
    name = disposition_params.get("filename") or params.get("name") or ""
    if f"{kind}/{subtype}" in ("application/pkcs7-signature", "application/x-pkcs7-signature"):
        return []
    if not name and disposition_type != "attachment":
        return []
    if encoding == "base64":
        size = size * 57 // 78  # lines of 76 characters and CRLF: 57 bytes each
    return [
        Attachment(section, _text(name) or f"piece-{section}", f"{kind}/{subtype}", encoding, size)
    ]


def _leading_lists(body: list[Any]) -> list[list[Any]]:
    parts = []
    for item in body:
        if not isinstance(item, list):
            break
        parts.append(item)
    return parts


def decode_part(data: bytes, encoding: str) -> bytes:
    """The exact bytes of a part from its transfer-encoded form."""
    if encoding == "base64":
        try:
            return base64.b64decode(b"".join(data.split()), validate=True)
        except (binascii.Error, ValueError):
            raise WebmailError("Pièce jointe mal encodée sur le serveur.") from None
    if encoding == "quoted-printable":
        return quopri.decodestring(data)
    return data


@dataclass
class ImapBox:
    """One logged-in connection to one box; callers serialise their use (``lock``)."""

    client: aioimaplib.IMAP4
    address: str
    timeout: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    selected: str | None = None
    broken: bool = False

    @classmethod
    async def open(cls, endpoint: ImapEndpoint, username: str, password: str) -> ImapBox:
        if endpoint.tls is not None:
            client: aioimaplib.IMAP4 = aioimaplib.IMAP4_SSL(
                endpoint.host, endpoint.port, timeout=endpoint.timeout, ssl_context=endpoint.tls
            )
        else:
            client = aioimaplib.IMAP4(endpoint.host, endpoint.port, timeout=endpoint.timeout)
        try:
            await client.wait_hello_from_server()
        except (OSError, TimeoutError, aioimaplib.AioImapException, ssl.SSLError) as error:
            raise WebmailError(
                f"Serveur de messagerie injoignable ({endpoint.host}:{endpoint.port}) : "
                f"{type(error).__name__}."
            ) from None
        box = cls(client, username, endpoint.timeout)
        response = await box._run(client.login(username, password))
        if response.result != "OK":
            await box.close()
            raise LoginRefused(
                "La messagerie a refusé le mot de passe : reconnectez-vous au portail."
            )
        return box

    async def _run(self, call: Any) -> Any:
        try:
            return await asyncio.wait_for(call, self.timeout)
        except (OSError, TimeoutError, aioimaplib.AioImapException, ValueError) as error:
            self.broken = True
            raise WebmailError(
                f"Le serveur de messagerie ne répond pas correctement ({type(error).__name__})."
            ) from None

    async def _command(self, name: str, *args: str) -> list[Any]:
        """A simple command that must succeed; its untagged lines."""
        response = await self._run(self.client.protocol.simple_command(name, *args))
        if response.result != "OK":
            raise WebmailError(f"Commande {name} refusée par le serveur de messagerie.")
        return list(response.lines)

    async def close(self) -> None:
        try:
            if self.client.get_state() in ("AUTH", "SELECTED"):
                await asyncio.wait_for(self.client.logout(), 5)
        except (OSError, TimeoutError, aioimaplib.AioImapException):
            pass
        finally:
            transport = self.client.protocol.transport
            if transport is not None:
                transport.close()

    # -- folders ----------------------------------------------------------------------------

    async def folder_names(self) -> list[tuple[str, bool]]:
        lines = await self._command("LIST", '""', '"*"')
        names: list[tuple[str, bool]] = []
        for line in lines[:-1]:
            if not isinstance(line, bytes):
                continue
            try:
                flags, _, raw_name = parse_line([line])[:3]
            except (ParseError, ValueError):
                continue
            if isinstance(raw_name, int):
                raw_name = str(raw_name).encode()
            if not isinstance(raw_name, bytes) or not isinstance(flags, list):
                continue
            name = imap_utf7.decode(raw_name)
            selectable = not any(bytes(f).lower() == b"\\noselect" for f in flags)
            names.append((name, selectable))
        names.sort(key=lambda item: (item[0].upper() != "INBOX", item[0].lower()))
        return names

    async def status(self, name: str) -> tuple[int, int]:
        lines = await self._command("STATUS", mailbox_arg(name), "(MESSAGES UNSEEN)")
        for line in lines[:-1]:
            if isinstance(line, bytes) and b"(" in line:
                values = parse_line([line[line.rindex(b"(") :]])[0]
                pairs = {
                    bytes(k).upper(): v for k, v in zip(values[::2], values[1::2], strict=False)
                }
                return int(pairs.get(b"MESSAGES", 0)), int(pairs.get(b"UNSEEN", 0))
        return 0, 0

    async def folders(self) -> list[Folder]:
        found = []
        for name, selectable in await self.folder_names():
            total, unread = await self.status(name) if selectable else (0, 0)
            label = "Boîte de réception" if name.upper() == "INBOX" else name
            label = "Corbeille" if name == TRASH else label
            found.append(Folder(name, label, total, unread, selectable))
        return found

    async def ensure_folder(self, name: str) -> None:
        if name not in {n for n, _ in await self.folder_names()}:
            await self._command("CREATE", mailbox_arg(name))

    async def select(self, folder: str) -> None:
        if self.selected == folder:
            return
        self.selected = None
        response = await self._run(self.client.select(mailbox_arg(folder)))
        if response.result != "OK":
            raise WebmailError(f"Dossier introuvable : {folder}")
        self.selected = folder

    # -- messages ---------------------------------------------------------------------------

    async def search(self, folder: str, criteria: Search) -> list[int]:
        """UIDs matching ``criteria``, ascending."""
        await self.select(folder)
        keys: list[str] = []
        if criteria.subject:
            keys += ["SUBJECT", quote(criteria.subject)]
        if criteria.sender:
            keys += ["FROM", quote(criteria.sender)]
        if criteria.since:
            keys += ["SINCE", _imap_date(criteria.since)]
        if criteria.before:
            keys += ["BEFORE", _imap_date(criteria.before + dt.timedelta(days=1))]
        charset = "UTF-8" if any(not k.isascii() for k in keys) else None
        response = await self._run(
            self.client.protocol.search(*(keys or ["ALL"]), charset=charset, by_uid=True)
        )
        if response.result != "OK":
            raise WebmailError("Recherche refusée par le serveur de messagerie.")
        uids: list[int] = []
        for line in response.lines[:-1]:  # aioimaplib strips the leading "* SEARCH"
            if isinstance(line, bytes):
                words = line.split()
                uids.extend(
                    int(v) for v in words[1 if words[:1] == [b"SEARCH"] else 0 :] if v.isdigit()
                )
        uids.sort()
        if criteria.attachment:
            uids = await self._with_attachment(uids, criteria.attachment)
        return uids

    async def _with_attachment(self, uids: list[int], name: str) -> list[int]:
        """Keep the messages having an attachment whose name contains ``name``.

        IMAP SEARCH has no key for attachment names (TEXT would read every message whole):
        the other criteria are searched by the server, then the structures of the newest
        :data:`MAX_ATTACHMENT_CANDIDATES` results are read (computed at delivery on ours).
        """
        wanted = name.lower()
        kept = []
        candidates = uids[-MAX_ATTACHMENT_CANDIDATES:]
        for start in range(0, len(candidates), 500):
            batch = candidates[start : start + 500]
            for uid, data in (await self._fetch(batch, "(UID BODYSTRUCTURE)")).items():
                names = [a.name.lower() for a in attachments_of(data.get(b"BODYSTRUCTURE"))]
                if any(wanted in n for n in names):
                    kept.append(uid)
        return sorted(kept)

    async def _fetch(self, uids: Iterable[int], items: str) -> dict[int, Any]:
        wanted = ",".join(str(uid) for uid in uids)
        if not wanted:
            return {}
        response = await self._run(self.client.uid("fetch", wanted, items))
        if response.result != "OK":
            raise WebmailError("Lecture refusée par le serveur de messagerie.")
        try:
            return parse_fetch(response.lines)
        except (ParseError, ValueError, IndexError) as error:
            raise WebmailError(f"Réponse illisible du serveur de messagerie ({error}).") from None

    async def summaries(self, folder: str, uids: Sequence[int]) -> list[Summary]:
        """The list lines of ``uids`` (in the order given)."""
        await self.select(folder)
        found = await self._fetch(
            uids, "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE)"
        )
        rows = []
        for uid in uids:
            data = found.get(uid)
            if data is not None:
                rows.append(_summary(uid, data))
        return rows

    async def summary(self, folder: str, uid: int) -> Summary | None:
        rows = await self.summaries(folder, [uid])
        return rows[0] if rows else None

    async def raw(self, folder: str, uid: int) -> bytes | None:
        """The whole message (``\\Seen`` is set: it is being read)."""
        await self.select(folder)
        data = (await self._fetch([uid], "(UID BODY[])")).get(uid)
        if data is None:
            return None
        body = data.get(b"BODY[]")
        return bytes(body) if body is not None else None

    async def part(self, folder: str, uid: int, attachment: Attachment) -> bytes | None:
        await self.select(folder)
        key = f"BODY[{attachment.section}]".encode()  # the answer names BODY, not BODY.PEEK
        data = (await self._fetch([uid], f"(UID BODY.PEEK[{attachment.section}])")).get(uid)
        if data is None or data.get(key) is None:
            return None
        return decode_part(bytes(data[key]), attachment.encoding)

    async def set_seen(self, folder: str, uids: Sequence[int], seen: bool) -> None:
        await self.select(folder)
        sign = "+" if seen else "-"
        response = await self._run(
            self.client.uid("store", ",".join(map(str, uids)), f"{sign}FLAGS.SILENT", r"(\Seen)")
        )
        if response.result != "OK":
            raise WebmailError("Modification refusée par le serveur de messagerie.")

    async def move(self, folder: str, uids: Sequence[int], target: str) -> None:
        await self.select(folder)
        wanted = ",".join(map(str, uids))
        if "MOVE" in self.client.protocol.capabilities:
            response = await self._run(self.client.uid("move", wanted, mailbox_arg(target)))
            if response.result != "OK":
                raise WebmailError(f"Déplacement vers « {target} » refusé.")
            return
        response = await self._run(self.client.uid("copy", wanted, mailbox_arg(target)))
        if response.result != "OK":
            raise WebmailError(f"Déplacement vers « {target} » refusé.")
        await self._run(self.client.uid("store", wanted, "+FLAGS.SILENT", r"(\Deleted)"))
        if "UIDPLUS" in self.client.protocol.capabilities:
            await self._run(self.client.uid("expunge", wanted))
        else:
            await self._run(self.client.expunge())


def _summary(uid: int, data: dict[bytes, Any]) -> Summary:
    envelope = data.get(b"ENVELOPE")
    envelope = envelope + [None] * 10 if isinstance(envelope, list) else [None] * 10
    flags = data.get(b"FLAGS")
    seen = isinstance(flags, list) and any(bytes(f).lower() == b"\\seen" for f in flags)
    date = parse_internaldate(data.get(b"INTERNALDATE"))
    size = data.get(b"RFC822.SIZE")
    return Summary(
        uid=uid,
        sender=_address(envelope[2]),
        subject=_text(envelope[1]),
        date=date,
        size=size if isinstance(size, int) else 0,
        seen=seen,
        attachments=tuple(attachments_of(data.get(b"BODYSTRUCTURE"))),
    )

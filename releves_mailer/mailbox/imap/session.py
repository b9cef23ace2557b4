"""One IMAP connection: reads commands, keeps the selected-mailbox view, answers (RFC 3501).

The session never touches SQL: everything it stores or reads goes through the
:class:`~releves_mailer.mailbox.contracts.MailStore` contract. Parsing problems answer
``BAD`` and the session goes on; an unexpected error in a command answers ``NO [SERVERBUG]``
and the session goes on too.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import enum
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, cast

from releves_mailer.interfaces import LoginThrottled
from releves_mailer.mailbox.contracts import (
    FetchColumn,
    FolderExists,
    MailboxSession,
    MessageMeta,
    MessageRecord,
    NoSuchFolder,
    StoreError,
)
from releves_mailer.mailbox.imap import mime
from releves_mailer.mailbox.imap.parser import (
    FetchAttribute,
    ParseError,
    Parser,
    SequenceSet,
    SpooledLiteral,
)
from releves_mailer.mailbox.imap.response import (
    astring,
    format_internal_date,
)
from releves_mailer.mailbox.imap.search import (
    MessageContext,
    columns_needed,
    matches,
    parse_search_keys,
    uses_modseq,
)
from releves_mailer.mailbox.imap.wildcard import ListPattern
from releves_mailer.mailbox.sasl import SaslCancelled, SaslError, decode_response, parse_plain

if TYPE_CHECKING:
    from releves_mailer.mailbox.imap.server import ImapServer

__all__ = ["ImapSession"]

_log = logging.getLogger(__name__)

DELIMITER = "/"
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_LITERAL_AT_END = re.compile(rb"\{(\d{1,19})(\+?)\}\r?\n$")
_FETCH_BATCH = 500
_SEARCH_BATCH = 10_000
_FLUSH_AT = 256 * 1024
#: Octets of a large literal read before they are written to its file, in a thread.
_SPOOL_CHUNK = 1024 * 1024
#: Octets of large messages a FETCH batch reads ahead; beyond, they are sent from their file.
_READ_AHEAD_BYTES = 16 * 1024 * 1024
#: Octets of a message in the file read and sent at a time.
_SEND_CHUNK = 256 * 1024
#: Longest run of CPU work a command does before it lets the event loop serve others.
_SLICE_SECONDS = 0.02
_SPECIAL_USES = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
_FETCH_MACROS = {
    "ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
    "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
    "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"],
}


class State(enum.Enum):
    NOT_AUTHENTICATED = 1
    AUTHENTICATED = 2
    SELECTED = 3
    LOGOUT = 4


class _Disconnect(Exception):
    """The session must end (LOGOUT, BYE sent, connection lost)."""


class _CommandError(Exception):
    """Answer the command with ``<kind> <text>`` (kind is NO or BAD)."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind = kind
        self.text = text
        self.tag: str | None = None


@dataclass(slots=True)
class _View:
    """The selected mailbox as this session last told its client."""

    folder_id: int
    name: str
    readonly: bool
    uidvalidity: int
    uidnext: int
    modseq: int
    uids: list[int]
    meta: dict[int, MessageMeta]
    recent: set[int]
    keywords: set[str]
    event: asyncio.Event
    expunge_pending: bool = False

    def seq_of(self, uid: int) -> int:
        return bisect.bisect_left(self.uids, uid) + 1


@dataclass(frozen=True, slots=True)
class _Limits:
    """What one command may send: line and literal octets, seconds of silence."""

    line: int
    literal: int
    timeout: float
    authenticated: bool


@dataclass(slots=True)
class _CommandContext:
    tag: str
    uid: bool = False
    extra: list[bytes] = field(default_factory=list)


Handler = Callable[[_CommandContext, Parser], Awaitable[None]]


class ImapSession:
    """The state machine of one client connection."""

    def __init__(
        self,
        server: ImapServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        tls: bool,
    ) -> None:
        self.server = server
        self.store = server.store
        self.config = server.config
        self.reader = reader
        self.writer = writer
        self.tls = tls
        peer = writer.get_extra_info("peername")
        self.peer_host: str = peer[0] if isinstance(peer, tuple) else str(peer or "")
        self.state = State.NOT_AUTHENTICATED
        self.user: str | None = None
        self._mailbox: MailboxSession | None = None
        self.view: _View | None = None
        self.condstore = False
        self.out = bytearray()
        self.closing = False
        #: The current command's spooled literals by offset (see :meth:`read_command`).
        self.spooled: dict[int, SpooledLiteral] = {}
        self._spooled_files: list[BinaryIO] = []
        self._handlers: dict[str, tuple[Handler, frozenset[State]]] = {}
        anyone = frozenset(State)
        noauth = frozenset({State.NOT_AUTHENTICATED})
        auth = frozenset({State.AUTHENTICATED, State.SELECTED})
        selected = frozenset({State.SELECTED})
        for name, states in {
            "CAPABILITY": anyone,
            "NOOP": anyone,
            "LOGOUT": anyone,
            "ID": anyone,
            "STARTTLS": noauth,
            "AUTHENTICATE": noauth,
            "LOGIN": noauth,
            "SELECT": auth,
            "EXAMINE": auth,
            "CREATE": auth,
            "DELETE": auth,
            "RENAME": auth,
            "SUBSCRIBE": auth,
            "UNSUBSCRIBE": auth,
            "LIST": auth,
            "LSUB": auth,
            "STATUS": auth,
            "APPEND": auth,
            "NAMESPACE": auth,
            "ENABLE": auth,
            "IDLE": auth,
            "CHECK": selected,
            "CLOSE": selected,
            "UNSELECT": selected,
            "EXPUNGE": selected,
            "SEARCH": selected,
            "FETCH": selected,
            "STORE": selected,
            "COPY": selected,
            "MOVE": selected,
        }.items():
            method = getattr(self, "cmd_" + name.lower())
            self._handlers[name] = (method, states)

    # region I/O ##########################################################################

    def send(self, line: bytes) -> None:
        self.out += line + b"\r\n"

    async def flush(self) -> None:
        if self.out:
            data = bytes(self.out)
            self.out.clear()
            self.writer.write(data)
            await self.writer.drain()

    async def maybe_flush(self) -> None:
        if len(self.out) >= _FLUSH_AT:
            await self.flush()

    def limits(self) -> _Limits:
        """The input limits of the session's state: the smallest until login."""
        config = self.config
        if self.state == State.NOT_AUTHENTICATED:
            return _Limits(
                config.preauth_max_line_length,
                config.preauth_max_literal_size,
                float(config.preauth_idle_timeout_seconds),
                authenticated=False,
            )
        return _Limits(
            config.max_line_length,
            config.max_literal_size,
            float(config.idle_timeout_seconds),
            authenticated=True,
        )

    def _idle_bye(self) -> _Disconnect:
        self.send(b"* BYE Autologout; idle for too long")
        return _Disconnect()

    async def _readline(self, limits: _Limits) -> bytes:
        """One line (CRLF included) of at most ``limits.line`` octets.

        Too long a line is ``BAD`` once logged in (the rest of the line is skipped); before
        login it ends the connection, as nothing of it is worth reading."""
        try:
            line = await asyncio.wait_for(self.reader.readuntil(b"\n"), limits.timeout)
        except asyncio.LimitOverrunError as exc:
            if not limits.authenticated:
                raise self._line_too_long_bye() from None
            start = await self.reader.readexactly(exc.consumed)
            await self._discard_line()
            error = _CommandError("BAD", "Command line too long")
            error.tag = self._peek_tag(start[:200])
            raise error from None
        except asyncio.IncompleteReadError as exc:
            raise _Disconnect() from exc
        except TimeoutError:
            raise self._idle_bye() from None
        except (ConnectionError, OSError) as exc:
            raise _Disconnect() from exc
        if len(line) > limits.line:
            if not limits.authenticated:
                raise self._line_too_long_bye()
            raise _CommandError("BAD", "Command line too long")
        return line

    def _line_too_long_bye(self) -> _Disconnect:
        self.send(b"* BYE Command line too long")
        return _Disconnect()

    async def _discard_line(self) -> None:
        while True:
            try:
                await self.reader.readuntil(b"\n")
                return
            except asyncio.LimitOverrunError as exc:
                await self.reader.readexactly(exc.consumed)
            except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
                raise _Disconnect() from exc

    async def read_command(self) -> bytes:
        """A whole command with its literals inline; raises on limits.

        Literals above ``spool_threshold`` are not inline: they go to temporary files, listed
        in ``self.spooled`` by their offset in the command (see :class:`Parser`)."""
        limits = self.limits()
        data = bytearray()
        literal_total = 0
        while True:
            line = await self._readline(limits)
            data += line
            match = _LITERAL_AT_END.search(line)
            if match is None:
                return bytes(data)
            size = int(match.group(1))
            synchronising = not match.group(2)
            literal_total += size
            if literal_total > limits.literal:
                if not limits.authenticated:
                    # Like Dovecot: nobody needs a large literal to log in.
                    self.send(b"* BYE Literal size too large")
                    raise _Disconnect()
                if synchronising:
                    error = _CommandError("NO", "[TOOBIG] Literal too big")
                    error.tag = self._peek_tag(bytes(data[:200]))
                    raise error
                self.send(b"* BYE [TOOBIG] Literal too big")
                raise _Disconnect()
            if synchronising:
                self.send(b"+ Ready for literal data")
                await self.flush()
            if size > self.config.spool_threshold:
                self.spooled[len(data)] = await self._spool(size, limits.timeout)
                continue
            try:
                data += await asyncio.wait_for(self.reader.readexactly(size), limits.timeout)
            except TimeoutError:
                raise self._idle_bye() from None
            except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
                raise _Disconnect() from exc

    async def _spool(self, size: int, seconds: float) -> SpooledLiteral:
        """Read a ``size``-octet literal into a temporary file, ``_SPOOL_CHUNK`` at a time."""
        file = await self.store.spool_file()
        spooled = SpooledLiteral(file, size)
        self._spooled_files.append(file)
        remaining = size
        pending = bytearray()
        while remaining:
            try:
                chunk = await asyncio.wait_for(
                    self.reader.read(min(remaining, _SPOOL_CHUNK)), seconds
                )
            except TimeoutError:
                raise self._idle_bye() from None
            except (ConnectionError, OSError) as exc:
                raise _Disconnect() from exc
            if not chunk:
                raise _Disconnect()
            remaining -= len(chunk)
            pending += chunk
            if len(pending) >= _SPOOL_CHUNK or not remaining:
                await asyncio.to_thread(file.write, pending)
                pending.clear()
        return spooled

    def _drop_spooled(self) -> None:
        self.spooled.clear()
        for file in self._spooled_files:
            file.close()
        self._spooled_files.clear()

    # endregion
    # region main loop ####################################################################

    def capabilities(self) -> list[str]:
        caps = ["IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE"]
        if self.state == State.NOT_AUTHENTICATED:
            if self.server.ssl_context is not None and not self.tls:
                caps.append("STARTTLS")
            if self.plaintext_allowed():
                caps.append("AUTH=PLAIN")
            else:
                caps.append("LOGINDISABLED")
        else:
            caps += [
                "UIDPLUS",
                "MOVE",
                "UNSELECT",
                "CHILDREN",
                "SPECIAL-USE",
                "CONDSTORE",
                "LIST-STATUS",
            ]
        return caps

    def plaintext_allowed(self) -> bool:
        if self.tls:
            return True
        return self.config.plaintext_auth_from_loopback and self.server.is_loopback(self.peer_host)

    async def run(self) -> None:
        try:
            self.send(b"* OK [CAPABILITY " + " ".join(self.capabilities()).encode() + b"] Ready")
            await self.flush()
            while not self.closing:
                tag = "*"
                try:
                    data = await self.read_command()
                    tag = self._peek_tag(data)
                    await self.dispatch(data)
                except _CommandError as exc:
                    self.send(f"{exc.tag or tag} {exc.kind} {exc.text}".encode())
                finally:
                    self._drop_spooled()
                await self.flush()
        except _Disconnect:
            pass
        except (ConnectionError, OSError):
            pass
        finally:
            self._drop_spooled()
            with contextlib.suppress(ConnectionError, OSError):
                await self.flush()
            await self.close()

    async def close(self) -> None:
        self.closing = True
        self._deselect()
        self.server.forget(self)
        try:
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 5)
        except (ConnectionError, OSError, TimeoutError):
            pass

    async def shutdown(self) -> None:
        """Server stopping: say BYE and close."""
        self.closing = True
        try:
            self.writer.write(b"* BYE Server shutting down\r\n")
            await asyncio.wait_for(self.writer.drain(), 2)
        except (ConnectionError, OSError, TimeoutError):
            pass
        self.writer.close()

    @staticmethod
    def _peek_tag(data: bytes) -> str:
        try:
            return Parser(data).tag()
        except ParseError:
            return "*"

    async def dispatch(self, data: bytes) -> None:
        data = data[:-2] if data.endswith(b"\r\n") else data.rstrip(b"\n")
        parser = Parser(data, self.spooled)
        try:
            tag = parser.tag()
        except ParseError:
            self.send(b"* BAD Missing or invalid tag")
            return
        context = _CommandContext(tag)
        try:
            parser.sp()
            name = parser.atom().upper()
            if name == "UID":
                parser.sp()
                name = parser.atom().upper()
                if name not in ("FETCH", "SEARCH", "STORE", "COPY", "MOVE", "EXPUNGE"):
                    raise ParseError(f"Unknown UID command {name}")
                context.uid = True
            entry = self._handlers.get(name)
            if entry is None:
                raise ParseError(f"Unknown command {name}")
            handler, states = entry
            if self.state not in states:
                raise _CommandError("BAD", f"{name} not allowed now")
            await handler(context, parser)
        except ParseError as exc:
            self.send(f"{tag} BAD Error in IMAP command: {exc}".encode())
        except _CommandError as exc:
            self.send(f"{tag} {exc.kind} {exc.text}".encode())
        except (NoSuchFolder, FolderExists, StoreError) as exc:
            self.send(f"{tag} NO {exc}".encode())
        except (_Disconnect, asyncio.CancelledError):
            raise
        except Exception:
            _log.exception("IMAP command failed: %s", _loggable(data))
            self.send(f"{tag} NO [SERVERBUG] Internal error".encode())

    def ok(self, context: _CommandContext, text: str = "completed", code: str = "") -> None:
        prefix = f"[{code}] " if code else ""
        self.send(f"{context.tag} OK {prefix}{text}".encode())

    # endregion
    # region any state ####################################################################

    async def cmd_capability(self, context: _CommandContext, parser: Parser) -> None:
        parser.end()
        self.send(b"* CAPABILITY " + " ".join(self.capabilities()).encode())
        self.ok(context, "Capability completed")

    async def cmd_noop(self, context: _CommandContext, parser: Parser) -> None:
        parser.end()
        await self.sync_view(allow_expunge=True)
        self.ok(context, "NOOP completed")

    async def cmd_check(self, context: _CommandContext, parser: Parser) -> None:
        parser.end()
        await self.sync_view(allow_expunge=True)
        self.ok(context, "CHECK completed")

    async def cmd_logout(self, context: _CommandContext, parser: Parser) -> None:
        parser.end()
        self.send(b"* BYE Logging out")
        self.ok(context, "Logout completed")
        self.state = State.LOGOUT
        self.closing = True

    async def cmd_id(self, context: _CommandContext, parser: Parser) -> None:
        parser.sp()
        if not parser.accept(b"NIL"):
            parser.list_start()
            while not parser.list_end():
                parser.maybe_sp()
                parser.string()
                parser.sp()
                if not parser.accept(b"NIL"):
                    parser.string()
        parser.end()
        self.send(b'* ID ("name" "releves-mailer" "vendor" "releves-mailer")')
        self.ok(context, "ID completed")

    # endregion
    # region not authenticated ############################################################

    async def cmd_starttls(self, context: _CommandContext, parser: Parser) -> None:
        parser.end()
        ssl_context = self.server.ssl_context
        if ssl_context is None or self.tls:
            raise _CommandError("BAD", "STARTTLS not available")
        self.ok(context, "Begin TLS negotiation now")
        await self.flush()
        # Anything the client pipelined after STARTTLS is plaintext injection: drop it.
        buffered = getattr(self.reader, "_buffer", None)
        if isinstance(buffered, bytearray):
            buffered.clear()
        try:
            await asyncio.wait_for(self.writer.start_tls(ssl_context), 30)
        except (OSError, TimeoutError) as exc:
            raise _Disconnect() from exc
        self.tls = True

    async def cmd_login(self, context: _CommandContext, parser: Parser) -> None:
        parser.sp()
        user = parser.astring()
        parser.sp()
        password = parser.astring()
        parser.end()
        await self._login(
            context, user.decode("utf-8", "replace"), password.decode("utf-8", "replace")
        )

    async def cmd_authenticate(self, context: _CommandContext, parser: Parser) -> None:
        parser.sp()
        mechanism = parser.atom().upper()
        initial: bytes | None = None
        if parser.maybe_sp():
            initial = parser.token() or parser.string()
        parser.end()
        if mechanism != "PLAIN":
            raise _CommandError("NO", "Unsupported authentication mechanism")
        if not self.plaintext_allowed():
            raise _CommandError("NO", "[PRIVACYREQUIRED] Plaintext authentication disallowed")
        if initial is None:
            self.send(b"+ ")
            await self.flush()
            initial = (await self._readline(self.limits())).strip()
        try:
            credentials = parse_plain(decode_response(initial))
        except SaslCancelled:
            raise _CommandError("BAD", "Authentication cancelled") from None
        except SaslError as error:
            raise _CommandError("NO", f"[AUTHENTICATIONFAILED] {error}") from None
        await self._login(context, credentials.username, credentials.password)

    async def _login(self, context: _CommandContext, user: str, password: str) -> None:
        if not self.plaintext_allowed():
            raise _CommandError("NO", "[PRIVACYREQUIRED] Plaintext authentication disallowed")
        user = user.strip()
        authenticator = self.server.authenticator
        try:
            address = await self.server.guard.attempt(
                self.peer_host, user, lambda: authenticator.authenticate(user, password)
            )
        except LoginThrottled:
            raise _CommandError(
                "NO", "[UNAVAILABLE] Too many failed logins, try again later"
            ) from None
        if address is None:
            raise _CommandError("NO", "[AUTHENTICATIONFAILED] Authentication failed")
        address = address.lower()
        if not self.server.register_login(self, address):
            raise _CommandError("NO", "[LIMIT] Too many connections for this user")
        self.user = address
        self.state = State.AUTHENTICATED
        self._mailbox = await self.store.new_session(address)
        self.ok(context, "Logged in", "CAPABILITY " + " ".join(self.capabilities()))

    # endregion
    # region authenticated ################################################################

    @property
    def mailbox(self) -> MailboxSession:
        """The logged-in user's mailboxes: only commands allowed after login use them."""
        assert self._mailbox is not None
        return self._mailbox

    async def cmd_namespace(self, context: _CommandContext, parser: Parser) -> None:
        parser.end()
        self.send(b'* NAMESPACE (("" "/")) NIL NIL')
        self.ok(context, "Namespace completed")

    async def cmd_enable(self, context: _CommandContext, parser: Parser) -> None:
        enabled = []
        while parser.maybe_sp():
            capability = parser.atom().upper()
            if capability == "CONDSTORE" and not self.condstore:
                self.condstore = True
                enabled.append(capability)
        parser.end()
        self.send(("* ENABLED " + " ".join(enabled)).rstrip().encode())
        self.ok(context, "Enabled")

    async def cmd_select(self, context: _CommandContext, parser: Parser) -> None:
        await self._select(context, parser, readonly=False)

    async def cmd_examine(self, context: _CommandContext, parser: Parser) -> None:
        await self._select(context, parser, readonly=True)

    async def _select(self, context: _CommandContext, parser: Parser, readonly: bool) -> None:
        parser.sp()
        name = parser.mailbox()
        if parser.maybe_sp():
            parser.list_start()
            while not parser.list_end():
                parser.maybe_sp()
                option = parser.atom().upper()
                if option != "CONDSTORE":
                    raise ParseError(f"Unknown SELECT option {option}")
                self.condstore = True
        parser.end()
        if self.view is not None:
            self._deselect()
            self.send(b"* OK [CLOSED] Previous mailbox closed")
        self.state = State.AUTHENTICATED
        info = await self.mailbox.get_folder(name)
        if info is None:
            raise _CommandError("NO", "[NONEXISTENT] Mailbox does not exist")
        event = self.mailbox.watch(info.id)
        info, metas = await self.mailbox.load_view(info.id)
        view = _View(
            folder_id=info.id,
            name=name,
            readonly=readonly,
            uidvalidity=info.uidvalidity,
            uidnext=info.uidnext,
            modseq=info.highestmodseq,
            uids=[m.uid for m in metas],
            meta={m.uid: m for m in metas},
            recent=set(),
            keywords={f for m in metas for f in m.flags if not f.startswith("\\")},
            event=event,
        )
        if not readonly:
            claimed = await self.mailbox.claim_recent(info.id)
            if claimed is not None:
                low, high = claimed
                start = bisect.bisect_left(view.uids, low)
                view.recent = {u for u in view.uids[start:] if u < high}
        else:
            # EXAMINE shows \Recent without taking it from the next SELECT.
            start = bisect.bisect_left(view.uids, info.recent_uid)
            view.recent = set(view.uids[start:])
        self.view = view
        self.state = State.SELECTED
        self._send_flags(view)
        self.send(b"* %d EXISTS" % len(view.uids))
        self.send(b"* %d RECENT" % len(view.recent))
        first_unseen = next(
            (i for i, u in enumerate(view.uids, 1) if "\\Seen" not in view.meta[u].flags), None
        )
        if first_unseen is not None:
            self.send(b"* OK [UNSEEN %d] First unseen" % first_unseen)
        self.send(b"* OK [UIDVALIDITY %d] UIDs valid" % view.uidvalidity)
        self.send(b"* OK [UIDNEXT %d] Predicted next UID" % view.uidnext)
        self.send(b"* OK [HIGHESTMODSEQ %d] Highest" % view.modseq)
        mode = "READ-ONLY" if readonly else "READ-WRITE"
        self.ok(context, "Select completed", mode)

    def _send_flags(self, view: _View) -> None:
        keywords = sorted(view.keywords, key=str.lower)
        flags = " ".join([*SYSTEM_FLAGS, *keywords])
        self.send(f"* FLAGS ({flags})".encode())
        if view.readonly:
            self.send(b"* OK [PERMANENTFLAGS ()] Read-only mailbox")
        else:
            self.send(f"* OK [PERMANENTFLAGS ({flags} \\*)] Flags permitted".encode())

    def _deselect(self) -> None:
        if self.view is not None:
            self.mailbox.unwatch(self.view.folder_id, self.view.event)
            self.view = None
        if self.state == State.SELECTED:
            self.state = State.AUTHENTICATED

    def _check_name(self, name: str) -> str:
        if not name or len(name) > 900 or "\x00" in name or "//" in name:
            raise _CommandError("NO", "Invalid mailbox name")
        if name.startswith(DELIMITER) or any(ord(c) < 0x20 for c in name):
            raise _CommandError("NO", "Invalid mailbox name")
        return name

    async def cmd_create(self, context: _CommandContext, parser: Parser) -> None:
        parser.sp()
        name = parser.mailbox().rstrip(DELIMITER)
        special = ""
        if parser.maybe_sp():
            parser.list_start()
            parser.expect(b"USE")
            parser.sp()
            uses = self._special_use_list(parser)
            if not parser.list_end():
                raise ParseError("Expected )")
            special = " ".join(uses)
        parser.end()
        self._check_name(name)
        if name == "INBOX":
            raise _CommandError("NO", "[ALREADYEXISTS] INBOX already exists")
        try:
            await self.mailbox.create_folder(name, special)
        except FolderExists:
            raise _CommandError("NO", "[ALREADYEXISTS] Mailbox already exists") from None
        self.ok(context, "Create completed")

    def _special_use_list(self, parser: Parser) -> list[str]:
        parser.list_start()
        uses: list[str] = []
        while not parser.list_end():
            parser.maybe_sp()
            parser.expect(b"\\")
            use = "\\" + parser.atom().capitalize()
            if use not in _SPECIAL_USES:
                raise _CommandError("NO", "[USEATTR] Unsupported special-use attribute")
            uses.append(use)
        return uses

    async def cmd_delete(self, context: _CommandContext, parser: Parser) -> None:
        parser.sp()
        name = parser.mailbox()
        parser.end()
        if name == "INBOX":
            raise _CommandError("NO", "INBOX cannot be deleted")
        if self.view is not None and self.view.name == name:
            self._deselect()
        try:
            await self.mailbox.delete_folder(name)
        except NoSuchFolder:
            raise _CommandError("NO", "[NONEXISTENT] Mailbox does not exist") from None
        self.ok(context, "Delete completed")

    async def cmd_rename(self, context: _CommandContext, parser: Parser) -> None:
        parser.sp()
        old = parser.mailbox()
        parser.sp()
        new = parser.mailbox().rstrip(DELIMITER)
        parser.end()
        self._check_name(new)
        if new == "INBOX":
            raise _CommandError("NO", "[ALREADYEXISTS] INBOX already exists")
        try:
            await self.mailbox.rename_folder(old, new)
        except NoSuchFolder:
            raise _CommandError("NO", "[NONEXISTENT] Mailbox does not exist") from None
        except FolderExists:
            raise _CommandError("NO", "[ALREADYEXISTS] Target mailbox already exists") from None
        if self.view is not None and self.view.name == old and old != "INBOX":
            self.view.name = new
        self.ok(context, "Rename completed")

    async def cmd_subscribe(self, context: _CommandContext, parser: Parser) -> None:
        parser.sp()
        name = parser.mailbox()
        parser.end()
        await self.mailbox.set_subscribed(name, True)
        self.ok(context, "Subscribe completed")

    async def cmd_unsubscribe(self, context: _CommandContext, parser: Parser) -> None:
        parser.sp()
        name = parser.mailbox()
        parser.end()
        await self.mailbox.set_subscribed(name, False)
        self.ok(context, "Unsubscribe completed")

    async def cmd_list(self, context: _CommandContext, parser: Parser) -> None:
        parser.sp()
        selection: set[str] = set()
        if parser.peek() == 0x28:
            parser.list_start()
            while not parser.list_end():
                parser.maybe_sp()
                selection.add(parser.atom().upper())
            parser.sp()
        reference = parser.mailbox() if parser.peek() != 0x22 else parser.string().decode()
        parser.sp()
        patterns: list[str] = []
        if parser.peek() == 0x28:
            parser.list_start()
            while not parser.list_end():
                parser.maybe_sp()
                patterns.append(parser.list_mailbox())
        else:
            patterns.append(parser.list_mailbox())
        returns: set[str] = set()
        status_items: list[str] = []
        if parser.maybe_sp():
            parser.expect(b"RETURN")
            parser.sp()
            parser.list_start()
            while not parser.list_end():
                parser.maybe_sp()
                option = parser.atom().upper()
                returns.add(option)
                if option == "STATUS":
                    parser.sp()
                    status_items = self._status_items(parser)
        parser.end()
        if patterns == [""]:
            self.send(b'* LIST (\\Noselect) "/" ""')
            self.ok(context, "List completed")
            return
        await self._list(
            "LIST", reference, patterns, selection, returns, status_items, subscribed_only=False
        )
        self.ok(context, "List completed")

    async def cmd_lsub(self, context: _CommandContext, parser: Parser) -> None:
        parser.sp()
        reference = parser.mailbox() if parser.peek() != 0x22 else parser.string().decode()
        parser.sp()
        pattern = parser.list_mailbox()
        parser.end()
        if pattern == "":
            self.send(b'* LSUB (\\Noselect) "/" ""')
        else:
            await self._list("LSUB", reference, [pattern], set(), set(), [], subscribed_only=True)
        self.ok(context, "Lsub completed")

    async def _list(
        self,
        verb: str,
        reference: str,
        patterns: list[str],
        selection: set[str],
        returns: set[str],
        status_items: list[str],
        *,
        subscribed_only: bool,
    ) -> None:
        folders = {f.name: f for f in await self.mailbox.list_folders()}
        subscribed = set(await self.mailbox.subscriptions())
        matchers = [ListPattern(reference + p, DELIMITER) for p in dict.fromkeys(patterns)]
        names = set(subscribed) if subscribed_only or "SUBSCRIBED" in selection else set(folders)
        # Parents without a folder of their own show as \Noselect (or \NonExistent).
        implied = {parent for name in names for parent in _parents(name)} - names
        parents = {parent for name in set(folders) | implied for parent in _parents(name)}
        slice_start = time.monotonic()
        for name in sorted(names | implied, key=lambda n: (n != "INBOX", n)):
            if time.monotonic() - slice_start > _SLICE_SECONDS:
                # Many folders or long patterns: let other clients in between slices.
                await self.maybe_flush()
                await asyncio.sleep(0)
                slice_start = time.monotonic()
            if not any(matcher.matches(name) for matcher in matchers):
                continue
            if (
                name in implied
                and not any("%" in p for p in patterns)
                and name not in folders
                and not subscribed_only
            ):
                continue
            attributes: list[str] = []
            info = folders.get(name)
            if subscribed_only:
                if name not in subscribed:
                    attributes.append("\\Noselect")
            else:
                if info is None:
                    attributes.append(
                        "\\Noselect" if "SUBSCRIBED" not in selection else "\\NonExistent"
                    )
                attributes.append("\\HasChildren" if name in parents else "\\HasNoChildren")
                if info is not None and info.special_use:
                    attributes += info.special_use.split()
                if ("SUBSCRIBED" in selection or "SUBSCRIBED" in returns) and name in subscribed:
                    attributes.append("\\Subscribed")
            if "SPECIAL-USE" in selection and not (info and info.special_use):
                continue
            self.send(f'* {verb} ({" ".join(attributes)}) "/" '.encode() + astring(name))
            if status_items and info is not None:
                await self._send_status(name, info.id, status_items)

    def _status_items(self, parser: Parser) -> list[str]:
        parser.list_start()
        items: list[str] = []
        while not parser.list_end():
            parser.maybe_sp()
            item = parser.atom().upper()
            if item not in (
                "MESSAGES",
                "RECENT",
                "UIDNEXT",
                "UIDVALIDITY",
                "UNSEEN",
                "HIGHESTMODSEQ",
            ):
                raise ParseError(f"Unknown status item {item}")
            items.append(item)
        if not items:
            raise ParseError("Empty status item list")
        return items

    async def cmd_status(self, context: _CommandContext, parser: Parser) -> None:
        parser.sp()
        name = parser.mailbox()
        parser.sp()
        items = self._status_items(parser)
        parser.end()
        info = await self.mailbox.get_folder(name)
        if info is None:
            raise _CommandError("NO", "[NONEXISTENT] Mailbox does not exist")
        await self._send_status(name, info.id, items)
        await self.sync_view(allow_expunge=True)
        self.ok(context, "Status completed")

    async def _send_status(self, name: str, folder_id: int, items: list[str]) -> None:
        info = await self.mailbox.get_folder(name)
        if info is None:
            return
        messages, unseen, recent = await self.mailbox.folder_counts(folder_id)
        values = {
            "MESSAGES": messages,
            "RECENT": recent,
            "UIDNEXT": info.uidnext,
            "UIDVALIDITY": info.uidvalidity,
            "UNSEEN": unseen,
            "HIGHESTMODSEQ": info.highestmodseq,
        }
        if self.view is not None and self.view.folder_id == folder_id:
            values["RECENT"] = len(self.view.recent) + recent
        text = " ".join(f"{item} {values[item]}" for item in items)
        self.send(b"* STATUS " + astring(name) + f" ({text})".encode())

    async def cmd_append(self, context: _CommandContext, parser: Parser) -> None:
        parser.sp()
        name = parser.mailbox()
        parser.sp()
        flags: list[str] = []
        when = None
        if parser.peek() == 0x28:
            flags = parser.flag_list()
            if "\\*" in flags:
                raise ParseError("\\* is not a flag")
            parser.sp()
        if parser.peek() == 0x22:
            when = parser.date_time()
            parser.sp()
        if not parser.is_literal():
            raise ParseError("APPEND needs a literal")
        literal = parser.message_literal()
        parser.end()
        info = await self.mailbox.get_folder(name)
        if info is None:
            raise _CommandError("NO", "[TRYCREATE] Mailbox does not exist")
        if isinstance(literal, SpooledLiteral):
            message: bytes | BinaryIO = literal.file
        elif not literal:
            raise _CommandError("NO", "Empty message")
        else:
            message = literal
        uidvalidity, uid = await self.mailbox.append(info.id, message, flags, when)
        await self.sync_view(allow_expunge=True)
        self.ok(context, "Append completed", f"APPENDUID {uidvalidity} {uid}")

    async def cmd_idle(self, context: _CommandContext, parser: Parser) -> None:
        parser.end()
        self.send(b"+ idling")
        await self.sync_view(allow_expunge=True)
        await self.flush()
        deadline = time.monotonic() + self.config.idle_timeout_seconds
        reading = asyncio.ensure_future(self.reader.readuntil(b"\n"))
        try:
            while True:
                waiters: set[asyncio.Future[Any]] = {reading}
                watcher: asyncio.Future[Any] | None = None
                if self.view is not None:
                    watcher = asyncio.ensure_future(self.view.event.wait())
                    waiters.add(watcher)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.send(b"* BYE Autologout; idle for too long")
                    raise _Disconnect()
                done, _ = await asyncio.wait(
                    waiters,
                    timeout=min(self.server.poll_interval, remaining),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if watcher is not None and not watcher.done():
                    watcher.cancel()
                if reading in done:
                    try:
                        line = reading.result()
                    except (
                        asyncio.IncompleteReadError,
                        asyncio.LimitOverrunError,
                        ConnectionError,
                        OSError,
                    ) as exc:
                        raise _Disconnect() from exc
                    if line.strip().upper() == b"DONE":
                        break
                    raise _CommandError("BAD", "Expected DONE")
                await self.sync_view(allow_expunge=True)
                await self.flush()
        finally:
            if not reading.done():
                reading.cancel()
        self.ok(context, "Idle completed")

    # endregion
    # region selected #####################################################################

    def _require_view(self) -> _View:
        if self.view is None:
            raise _CommandError("BAD", "No mailbox selected")
        return self.view

    async def sync_view(self, *, allow_expunge: bool) -> None:
        """Tell the client what changed in the selected mailbox since it last heard."""
        view = self.view
        if view is None:
            return
        view.event.clear()
        head = await self.mailbox.folder_head(view.folder_id)
        if head is None:
            self.send(b"* BYE Selected mailbox was deleted")
            self.closing = True
            return
        if head == (view.modseq, view.uidnext):
            return
        changes = await self.mailbox.changes(view.folder_id, view.modseq)
        if changes is None:
            return
        if changes.all_uids is not None:
            if not allow_expunge:
                view.expunge_pending = True
                return
            still = set(changes.all_uids)
            gone = [uid for uid in view.uids if uid not in still]
            for uid in reversed(gone):
                self.send(b"* %d EXPUNGE" % view.seq_of(uid))
            if gone:
                gone_set = set(gone)
                view.uids = [uid for uid in view.uids if uid not in gone_set]
                for uid in gone:
                    view.meta.pop(uid, None)
                    view.recent.discard(uid)
            view.expunge_pending = False
        last = view.uids[-1] if view.uids else 0
        new = [m for m in changes.changed if m.uid > last and m.uid not in view.meta]
        new_keywords = {
            f for m in changes.changed for f in m.flags if not f.startswith("\\")
        } - view.keywords
        if new_keywords:
            view.keywords |= new_keywords
            self._send_flags(view)
        for meta in changes.changed:
            old = view.meta.get(meta.uid)
            if old is None:
                continue
            view.meta[meta.uid] = meta
            if old.flags != meta.flags:
                self.send(
                    b"* %d FETCH (%s)" % (view.seq_of(meta.uid), self._flags_item(view, meta))
                )
        if new:
            for meta in new:
                view.uids.append(meta.uid)
                view.meta[meta.uid] = meta
            self.send(b"* %d EXISTS" % len(view.uids))
            if not view.readonly:
                claimed = await self.mailbox.claim_recent(view.folder_id)
                if claimed is not None:
                    low, high = claimed
                    view.recent |= {m.uid for m in new if low <= m.uid < high}
            self.send(b"* %d RECENT" % len(view.recent))
        view.modseq = max(view.modseq, changes.info.highestmodseq)
        view.uidnext = max(view.uidnext, changes.info.uidnext)

    def _flags_item(self, view: _View, meta: MessageMeta, with_uid: bool = False) -> bytes:
        flags = list(meta.flags)
        if meta.uid in view.recent:
            flags.append("\\Recent")
        out = b"FLAGS (" + " ".join(flags).encode() + b")"
        if with_uid:
            out = b"UID %d " % meta.uid + out
        if self.condstore:
            out += b" MODSEQ (%d)" % meta.modseq
        return out

    def _resolve(self, view: _View, sequence: SequenceSet, uid: bool) -> list[int]:
        """UIDs named by a sequence set, in mailbox order."""
        if uid:
            largest = view.uids[-1] if view.uids else 0
            out: set[int] = set()
            for low, high in sequence.resolve(largest):
                start = bisect.bisect_left(view.uids, low)
                end = bisect.bisect_right(view.uids, high)
                out.update(view.uids[start:end])
            return sorted(out)
        count = len(view.uids)
        for first, last in sequence.ranges:
            for number in (first, last):
                if number is not None and number > count:
                    raise _CommandError("BAD", "Error in IMAP command: Invalid message sequence")
        if count == 0:
            raise _CommandError("BAD", "Error in IMAP command: No messages")
        return [view.uids[seq - 1] for seq in sequence.iter_sorted(count, count)]

    async def cmd_close(self, context: _CommandContext, parser: Parser) -> None:
        parser.end()
        view = self._require_view()
        if not view.readonly:
            await self.mailbox.expunge(view.folder_id)
        self._deselect()
        self.ok(context, "Close completed")

    async def cmd_unselect(self, context: _CommandContext, parser: Parser) -> None:
        parser.end()
        self._require_view()
        self._deselect()
        self.ok(context, "Unselect completed")

    async def cmd_expunge(self, context: _CommandContext, parser: Parser) -> None:
        view = self._require_view()
        uids: list[int] | None = None
        if context.uid:
            parser.sp()
            uids = self._resolve(view, parser.sequence_set(), uid=True)
        parser.end()
        if view.readonly:
            raise _CommandError("NO", "[READ-ONLY] Mailbox is read-only")
        await self.mailbox.expunge(view.folder_id, uids)
        await self.sync_view(allow_expunge=True)
        self.ok(context, "Expunge completed")

    async def cmd_search(self, context: _CommandContext, parser: Parser) -> None:
        view = self._require_view()
        parser.sp()
        if parser.accept(b"RETURN "):
            parser.list_start()
            while not parser.list_end():
                parser.maybe_sp()
                parser.atom()
            parser.sp()
        if parser.accept(b"CHARSET "):
            charset = parser.astring().decode("ascii", "replace").upper()
            if charset not in ("UTF-8", "US-ASCII", "UTF8"):
                raise _CommandError("NO", "[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset")
            parser.sp()
        program = parse_search_keys(parser)
        await self.sync_view(allow_expunge=False)
        columns = columns_needed(program)
        count = len(view.uids)
        largest_uid = view.uids[-1] if view.uids else 0
        found: list[tuple[int, int]] = []
        for start in range(0, count, _SEARCH_BATCH):
            uids = view.uids[start : start + _SEARCH_BATCH]
            records: dict[int, MessageRecord] = {}
            if columns:
                for record in await self.mailbox.fetch_records(view.folder_id, uids, columns):
                    records[record.uid] = record
            blobs: dict[int, bytes] = {}
            if "blob" in columns:
                blob_list = await self.mailbox.read_blobs(
                    [records[u].blob for u in uids if u in records]
                )
                blobs = dict(zip([u for u in uids if u in records], blob_list, strict=True))
            # One context reused for every message: SEARCH over a big box is a hot loop.
            ctx = MessageContext(0, 0, (), 0, False, MessageRecord(0), count, largest_uid, bytes)
            empty = MessageRecord(0)
            recent = view.recent
            for offset, uid in enumerate(uids):
                meta = view.meta[uid]
                ctx.seq = start + offset + 1
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
        numbers = [uid if context.uid else seq for seq, uid in found]
        line = b"* SEARCH" + b"".join(b" %d" % n for n in numbers)
        if uses_modseq(program) and found:
            self.condstore = True
            line += b" (MODSEQ %d)" % max(view.meta[uid].modseq for _, uid in found)
        self.send(line)
        self.ok(context, "Search completed")

    def _fetch_items(self, parser: Parser) -> list[FetchAttribute]:
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

    async def cmd_fetch(self, context: _CommandContext, parser: Parser) -> None:
        view = self._require_view()
        parser.sp()
        sequence = parser.sequence_set()
        parser.sp()
        items = self._fetch_items(parser)
        changed_since: int | None = None
        if parser.maybe_sp():
            parser.list_start()
            parser.expect(b"CHANGEDSINCE ")
            changed_since = parser.number()
            if parser.maybe_sp():
                parser.expect(b"VANISHED")
                raise _CommandError("BAD", "VANISHED needs QRESYNC")
            if not parser.list_end():
                raise ParseError("Expected )")
        parser.end()
        await self.sync_view(allow_expunge=False)
        uids = self._resolve(view, sequence, context.uid)
        names = {item.name for item in items}
        if context.uid and "UID" not in names:
            items.insert(0, FetchAttribute("UID", label=b"UID"))
        if changed_since is not None or "MODSEQ" in names:
            self.condstore = True
        if changed_since is not None:
            uids = [uid for uid in uids if view.meta[uid].modseq > changed_since]
            if "MODSEQ" not in names:
                items.append(FetchAttribute("MODSEQ", label=b"MODSEQ"))
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
            elif item.name in ("RFC822", "RFC822.TEXT") or item.section:
                need_blob = True
            if item.name in ("RFC822", "RFC822.TEXT") or (item.section and not item.peek):
                sets_seen = True
        if need_blob:
            # Size and header: to leave large messages in their files and send them in pieces.
            columns |= {"blob", "size", "header"}
        sets_seen = sets_seen and not view.readonly
        folder_id = view.folder_id
        threshold = self.config.spool_threshold

        async def load(batch: list[int]) -> tuple[dict[int, MessageRecord], dict[int, bytes]]:
            records: dict[int, MessageRecord] = {}
            if columns:
                for record in await self.mailbox.fetch_records(folder_id, batch, columns):
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
                contents = await self.mailbox.read_blobs([records[u].blob for u in present])
                blobs = dict(zip(present, contents, strict=True))
            return records, blobs

        batches = [uids[i : i + _FETCH_BATCH] for i in range(0, len(uids), _FETCH_BATCH)]
        # Pipeline: the next batch is read from the database and the files while this one is
        # formatted and sent.
        upcoming = asyncio.ensure_future(load(batches[0])) if batches else None
        try:
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
                        updated, _ = await self.mailbox.store_flags(
                            folder_id, unseen, "add", ["\\Seen"]
                        )
                        for meta in updated:
                            view.meta[meta.uid] = meta
                        newly_seen = {m.uid for m in updated}
                for uid in batch:
                    if uid not in view.meta:
                        continue
                    record = records.get(uid)
                    if record is None:
                        if columns:
                            continue  # expunged by another session meanwhile
                        record = MessageRecord(uid)
                    pieces = self._fetch_one(
                        view, uid, items, record, blobs.get(uid), uid in newly_seen
                    )
                    if pieces:
                        await self._send_large(pieces)
                await self.maybe_flush()
        finally:
            if upcoming is not None and not upcoming.done():
                upcoming.cancel()
        self.ok(context, "Fetch completed")

    def _fetch_one(
        self,
        view: _View,
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
                parts.append(b"RFC822.HEADER " + _literal(record.header))
            elif in_file and (name in ("RFC822", "RFC822.TEXT") or _needs_raw(item)):
                parts.append(_LargeSection(record, item))
            elif name in ("RFC822", "RFC822.TEXT"):
                data = raw or b""
                if name == "RFC822.TEXT":
                    data = data[mime.split_header(data) :]
                parts.append(name.encode() + b" " + _literal(data))
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
                parts.append(item.label + b" " + _literal(data))
        if newly_seen and not flags_sent:
            flags = list(meta.flags) + (["\\Recent"] if uid in view.recent else [])
            parts.append(b"FLAGS (" + " ".join(flags).encode() + b")")
        wants_modseq = any(item.name == "MODSEQ" for item in items)
        if self.condstore and not wants_modseq and (newly_seen or flags_sent):
            parts.append(b"MODSEQ (%d)" % meta.modseq)
        head = b"* %d FETCH (" % view.seq_of(uid)
        if not any(isinstance(part, _LargeSection) for part in parts):
            self.out += head + b" ".join(cast(list[bytes], parts)) + b")\r\n"
            return []
        pieces: list[bytes | _LargeSection] = [head]
        for index, part in enumerate(parts):
            if index:
                pieces.append(b" ")
            pieces.append(part)
        pieces.append(b")\r\n")
        return pieces

    async def _send_large(self, pieces: list[bytes | _LargeSection]) -> None:
        """Send a FETCH response whose large sections are read from the message's file, in
        ``_SEND_CHUNK`` pieces, each written once the client took the previous one."""
        for piece in pieces:
            if isinstance(piece, bytes):
                self.out += piece
                continue
            record, item = piece.record, piece.item
            self.out += item.label + b" "
            span = await self._large_span(record, item)
            if isinstance(span, bytes):
                self.out += _literal(span)
                continue
            start, end = span
            if item.partial is not None:
                offset, count = item.partial
                start = min(start + offset, end)
                end = min(start + count, end)
            self.out += b"{%d}\r\n" % (end - start)
            await self.flush()
            for position in range(start, end, _SEND_CHUNK):
                wanted = min(_SEND_CHUNK, end - position)
                chunk = await self.mailbox.read_blob_range(record.blob, position, wanted)
                if len(chunk) != wanted:
                    # The literal's length is already sent: nothing else keeps the
                    # client in step.
                    _log.error("Message file %s shorter than its size", record.blob)
                    raise _Disconnect()
                self.out += chunk
                await self.flush()

    async def _large_span(
        self, record: MessageRecord, item: FetchAttribute
    ) -> tuple[int, int] | bytes:
        """Where the octets of ``item`` lie in a message left in its file."""
        if item.name == "RFC822.TEXT" or (item.section and not item.path and item.text == "TEXT"):
            return len(record.header), record.size
        if item.name == "RFC822" or (item.section and not item.path and item.text == ""):
            return 0, record.size
        # A part: the MIME analysis needs the whole message, once, in a thread.
        raw = await self.mailbox.read_blob(record.blob)
        return await asyncio.to_thread(
            lambda: mime.section_span(mime.parse_message(raw), item.path, item.text, item.fields)
        )

    async def cmd_store(self, context: _CommandContext, parser: Parser) -> None:
        view = self._require_view()
        parser.sp()
        sequence = parser.sequence_set()
        parser.sp()
        unchanged_since: int | None = None
        if parser.peek() == 0x28:
            parser.list_start()
            parser.expect(b"UNCHANGEDSINCE ")
            unchanged_since = parser.number()
            if not parser.list_end():
                raise ParseError("Expected )")
            parser.sp()
            self.condstore = True
        item = parser.atom().upper()
        mode: Literal["set", "add", "remove"]
        base = item.removesuffix(".SILENT")
        silent = item.endswith(".SILENT")
        if base == "FLAGS":
            mode = "set"
        elif base == "+FLAGS":
            mode = "add"
        elif base == "-FLAGS":
            mode = "remove"
        else:
            raise ParseError(f"Invalid STORE item {item}")
        parser.sp()
        flags = parser.flags_maybe_list()
        parser.end()
        if "\\*" in flags:
            raise ParseError("\\* is not a flag")
        await self.sync_view(allow_expunge=False)
        uids = self._resolve(view, sequence, context.uid)
        if view.readonly:
            raise _CommandError("NO", "[READ-ONLY] Mailbox is read-only")
        updated, failed = await self.mailbox.store_flags(
            view.folder_id, uids, mode, flags, unchanged_since
        )
        changed = set()
        for meta in updated:
            view.meta[meta.uid] = meta
            changed.add(meta.uid)
        new_keywords = {f for m in updated for f in m.flags if not f.startswith("\\")}
        if new_keywords - view.keywords:
            view.keywords |= new_keywords
            self._send_flags(view)
        failed_set = set(failed)
        for uid in uids:
            if uid in failed_set or uid not in view.meta:
                continue
            if silent and not (self.condstore and uid in changed):
                continue
            meta = view.meta[uid]
            if silent:
                body = b"MODSEQ (%d)" % meta.modseq
                if context.uid:
                    body = b"UID %d " % uid + body
            else:
                body = self._flags_item(view, meta, with_uid=context.uid)
            self.send(b"* %d FETCH (%s)" % (view.seq_of(uid), body))
        if failed:
            numbers = failed if context.uid else [view.seq_of(uid) for uid in failed]
            self.ok(context, "Conditional store failed", "MODIFIED " + _compress(numbers))
        else:
            self.ok(context, "Store completed")

    async def cmd_copy(self, context: _CommandContext, parser: Parser) -> None:
        await self._copy(context, parser, move=False)

    async def cmd_move(self, context: _CommandContext, parser: Parser) -> None:
        await self._copy(context, parser, move=True)

    async def _copy(self, context: _CommandContext, parser: Parser, *, move: bool) -> None:
        view = self._require_view()
        parser.sp()
        sequence = parser.sequence_set()
        parser.sp()
        name = parser.mailbox()
        parser.end()
        await self.sync_view(allow_expunge=move)
        uids = self._resolve(view, sequence, context.uid)
        target = await self.mailbox.get_folder(name)
        if target is None:
            raise _CommandError("NO", "[TRYCREATE] Mailbox does not exist")
        if move and view.readonly:
            raise _CommandError("NO", "[READ-ONLY] Mailbox is read-only")
        uidvalidity, mapping = await self.mailbox.copy(view.folder_id, uids, target.id, move=move)
        code = ""
        if mapping:
            code = (
                f"COPYUID {uidvalidity} {_compress([a for a, _ in mapping])} "
                f"{_compress([b for _, b in mapping])}"
            )
        if move:
            if code:
                self.send(f"* OK [{code}] Moved".encode())
            await self.sync_view(allow_expunge=True)
            self.ok(context, "Move completed")
        else:
            await self.sync_view(allow_expunge=False)
            self.ok(context, "Copy completed", code)

    # endregion


@dataclass(frozen=True, slots=True)
class _LargeSection:
    """A FETCH item of a message left in its file, sent by ``ImapSession._send_large``."""

    record: MessageRecord
    item: FetchAttribute


def _needs_raw(item: FetchAttribute) -> bool:
    """Whether a section needs the message's octets (not only its stored header)."""
    return item.section and (bool(item.path) or not item.text.startswith("HEADER"))


def _parents(name: str) -> list[str]:
    """``a``, ``a/b`` for ``a/b/c``: every ancestor in the hierarchy."""
    out = []
    index = name.find(DELIMITER)
    while index > 0:
        out.append(name[:index])
        index = name.find(DELIMITER, index + 1)
    return out


def _getter(blobs: dict[int, bytes], uid: int) -> Callable[[], bytes]:
    return lambda: blobs.get(uid, b"")


def _literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def _compress(numbers: Sequence[int]) -> str:
    """``1,2,3,5`` as ``1:3,5`` (order kept, runs merged)."""
    out: list[str] = []
    run_start: int | None = None
    previous: int | None = None
    for number in numbers:
        if previous is not None and number == previous + 1:
            previous = number
            continue
        if run_start is not None:
            out.append(str(run_start) if run_start == previous else f"{run_start}:{previous}")
        run_start = previous = number
    if run_start is not None:
        out.append(str(run_start) if run_start == previous else f"{run_start}:{previous}")
    return ",".join(out)


def _loggable(command: bytes) -> bytes:
    """At most 200 bytes of ``command`` for the log; of LOGIN and AUTHENTICATE, the name only."""
    words = command.split(maxsplit=2)
    if len(words) > 1 and words[1].upper() in (b"LOGIN", b"AUTHENTICATE"):
        return b" ".join(words[:2]) + b" [credentials not logged]"
    return command[:200]

"""One IMAP connection's state machine: its state, the dispatch of commands, its mailboxes.

The session never touches SQL: once logged in, everything it stores or reads goes through
the user's :class:`~releves_mailer.mailbox.contracts.MailboxSession`, opened by the store at
login. The commands live by state in :mod:`.not_authenticated`, :mod:`.authenticated`,
:mod:`.selected` and :mod:`.fetch`; the selected mailbox in :mod:`.view`; the wire in
:mod:`.connection`. Parsing problems answer ``BAD`` and the session goes on; an unexpected
error in a command answers ``NO [SERVERBUG]`` and the session goes on too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from releves_mailer.mailbox.contracts import (
    FolderExists,
    MailboxSession,
    NoSuchFolder,
    StoreError,
)
from releves_mailer.mailbox.imap.authenticated import AUTHENTICATED
from releves_mailer.mailbox.imap.connection import (
    CommandContext,
    CommandError,
    Disconnect,
    ImapConnection,
    peek_tag,
)
from releves_mailer.mailbox.imap.context import push_updates, removed_by_expunge
from releves_mailer.mailbox.imap.not_authenticated import ANY_STATE, NOT_AUTHENTICATED
from releves_mailer.mailbox.imap.parser import ParseError, Parser
from releves_mailer.mailbox.imap.selected import SELECTED
from releves_mailer.mailbox.imap.state import State
from releves_mailer.mailbox.imap.view import SelectedView

if TYPE_CHECKING:
    from releves_mailer.mailbox.imap.server import ImapServer

__all__ = ["Handler", "ImapSession"]

_log = logging.getLogger(__name__)

#: A command: parses its arguments from ``Parser`` and answers through the session.
Handler = Callable[["ImapSession", CommandContext, Parser], Awaitable[None]]

_UID_COMMANDS = ("FETCH", "SEARCH", "STORE", "COPY", "MOVE", "EXPUNGE", "SORT", "THREAD")
_ANYONE = frozenset(State)
_HANDLERS: dict[str, tuple[Handler, frozenset[State]]] = {
    **{name: (handler, _ANYONE) for name, handler in ANY_STATE.items()},
    **{
        name: (handler, frozenset({State.NOT_AUTHENTICATED}))
        for name, handler in NOT_AUTHENTICATED.items()
    },
    **{
        name: (handler, frozenset({State.AUTHENTICATED, State.SELECTED}))
        for name, handler in AUTHENTICATED.items()
    },
    **{name: (handler, frozenset({State.SELECTED})) for name, handler in SELECTED.items()},
}


class ImapSession(ImapConnection):
    """The state machine of one client connection."""

    def __init__(
        self,
        server: ImapServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        tls: bool,
    ) -> None:
        super().__init__(server.config, reader, writer, server.store.spool_file)
        self.server = server
        self.store = server.store
        self.tls = tls
        peer = writer.get_extra_info("peername")
        self.peer_host: str = peer[0] if isinstance(peer, tuple) else str(peer or "")
        self.state = State.NOT_AUTHENTICATED
        self.user: str | None = None
        #: The login's credentials when the session opened (see ``ImapServer.check_credentials``).
        self.credential_stamp: bytes | None = None
        self._mailbox: MailboxSession | None = None
        self.view: SelectedView | None = None
        self.condstore = False
        self.qresync = False
        self.utf8 = False
        self.closing = False
        self._held_ok: bytes | None = None

    @property
    def authenticated(self) -> bool:
        return self.state != State.NOT_AUTHENTICATED

    @property
    def mailbox(self) -> MailboxSession:
        """The logged-in user's mailboxes: only commands allowed after login use them."""
        assert self._mailbox is not None
        return self._mailbox

    async def open_mailbox(self, address: str) -> None:
        """Logged in as ``address``: its mailbox session, from the store."""
        self.user = address
        self.state = State.AUTHENTICATED
        self._mailbox = await self.store.new_session(address)

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
                "ESEARCH",
                "SEARCHRES",
                "WITHIN",
                "SORT",
                "SORT=DISPLAY",
                "ESORT",
                "THREAD=ORDEREDSUBJECT",
                "THREAD=REFERENCES",
                "CONTEXT=SEARCH",
                "CONTEXT=SORT",
                "MULTIAPPEND",
                "CATENATE",
                "LIST-EXTENDED",
                "CREATE-SPECIAL-USE",
                "BINARY",
                "QRESYNC",
                "UTF8=ACCEPT",
            ]
        return caps

    def enable_condstore(self) -> None:
        """A CONDSTORE-enabling command (RFC 7162 section 3.1): the first one with a mailbox
        selected is answered with the mailbox's HIGHESTMODSEQ too."""
        if self.condstore:
            return
        self.condstore = True
        if self.view is not None:
            self.send(b"* OK [HIGHESTMODSEQ %d] Highest" % self.view.modseq)

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
                    tag = peek_tag(data)
                    await self.dispatch(data)
                except CommandError as exc:
                    self.send(f"{exc.tag or tag} {exc.kind} {exc.text}".encode())
                finally:
                    self.drop_spooled()
                await self.flush()
        except Disconnect:
            pass
        except (ConnectionError, OSError):
            pass
        finally:
            self.drop_spooled()
            with contextlib.suppress(ConnectionError, OSError):
                await self.flush()
            await self.close()

    async def close(self) -> None:
        self.closing = True
        self.deselect()
        self.server.forget(self)
        try:
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 5)
        except (ConnectionError, OSError, TimeoutError):
            pass

    async def shutdown(self, reason: bytes = b"Server shutting down") -> None:
        """Say BYE and close (server stopping, credentials changed)."""
        self.closing = True
        try:
            self.writer.write(b"* BYE " + reason + b"\r\n")
            await asyncio.wait_for(self.writer.drain(), 2)
        except (ConnectionError, OSError, TimeoutError):
            pass
        self.writer.close()

    async def dispatch(self, data: bytes) -> None:
        data = data[:-2] if data.endswith(b"\r\n") else data.rstrip(b"\n")
        parser = Parser(data, self.spooled)
        parser.utf8_names = self.utf8
        try:
            tag = parser.tag()
        except ParseError:
            self.send(b"* BAD Missing or invalid tag")
            return
        context = CommandContext(tag)
        self._held_ok = None
        try:
            parser.sp()
            name = parser.atom().upper()
            if name == "UID":
                parser.sp()
                name = parser.atom().upper()
                if name not in _UID_COMMANDS:
                    raise ParseError(f"Unknown UID command {name}")
                context.uid = True
            entry = _HANDLERS.get(name)
            if entry is None:
                raise ParseError(f"Unknown command {name}")
            handler, states = entry
            if self.state not in states:
                raise CommandError("BAD", f"{name} not allowed now")
            await handler(self, context, parser)
            held = self._take_held_ok()
            if held is not None:
                await push_updates(self)
                self.send(held)
        except ParseError as exc:
            self.send(f"{tag} BAD Error in IMAP command: {exc}".encode())
        except CommandError as exc:
            self.send(f"{tag} {exc.kind} {exc.text}".encode())
        except (NoSuchFolder, FolderExists, StoreError) as exc:
            self.send(f"{tag} NO {exc}".encode())
        except (Disconnect, asyncio.CancelledError):
            raise
        except Exception:
            _log.exception("IMAP command failed: %s", _loggable(data))
            self.send(f"{tag} NO [SERVERBUG] Internal error".encode())

    def _take_held_ok(self) -> bytes | None:
        held, self._held_ok = self._held_ok, None
        return held

    def ok(self, context: CommandContext, text: str = "completed", code: str = "") -> None:
        prefix = f"[{code}] " if code else ""
        line = f"{context.tag} OK {prefix}{text}".encode()
        if self.view is not None and self.view.updates:
            # Searches kept up to date report what this command changed before it completes.
            self._held_ok = line
        else:
            self.send(line)

    # region selected mailbox #############################################################

    def require_view(self) -> SelectedView:
        if self.view is None:
            raise CommandError("BAD", "No mailbox selected")
        return self.view

    def deselect(self) -> None:
        if self.view is not None:
            self.mailbox.unwatch(self.view.folder_id, self.view.event)
            self.view = None
        if self.state == State.SELECTED:
            self.state = State.AUTHENTICATED

    async def sync_view(self, *, allow_expunge: bool) -> None:
        """Tell the client what changed in the selected mailbox since it last heard."""
        view = self.view
        if view is None:
            return
        expunging = None
        if view.updates:

            def expunging(gone: list[int]) -> None:
                removed_by_expunge(self, view, gone)

        alive = await view.sync(
            self.mailbox,
            self.send,
            condstore=self.condstore,
            allow_expunge=allow_expunge,
            before_expunge=expunging,
        )
        if not alive:
            self.send(b"* BYE Selected mailbox was deleted")
            self.closing = True
        elif view.touched:
            await push_updates(self)

    # endregion


def _loggable(command: bytes) -> bytes:
    """At most 200 bytes of ``command`` for the log; of LOGIN and AUTHENTICATE, the name only."""
    words = command.split(maxsplit=2)
    if len(words) > 1 and words[1].upper() in (b"LOGIN", b"AUTHENTICATE"):
        return b" ".join(words[:2]) + b" [credentials not logged]"
    return command[:200]

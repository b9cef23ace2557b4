"""Wire I/O of one IMAP connection: buffered responses, command lines and their literals.

Input is bounded where it enters: a line, the literals of a command and the silence between
them have limits, the smallest until login. Large literals go to temporary files.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import BinaryIO

from releves_mailer.config import ImapSection
from releves_mailer.mailbox.imap.parser import ParseError, Parser, SpooledLiteral

__all__ = [
    "CommandContext",
    "CommandError",
    "Disconnect",
    "ImapConnection",
    "Limits",
    "peek_tag",
]

_LITERAL_AT_END = re.compile(rb"\{(\d{1,19})(\+?)\}\r?\n$")
#: Before login, an ID command (RFC 2971) may be longer than the other lines: its largest
#: lawful form (30 pairs of a 30-octet field and a 1024-octet value, quoted) is about 31.9 KB.
#: The stream buffers up to ``max_line_length`` before any check anyway, so this costs no
#: memory; the ordinary pre-login line limit stays as it is for every other command.
PREAUTH_ID_MAX_LINE = 32 * 1024
_ID_COMMAND = re.compile(rb"[\x21-\x7e]{1,64} ID ", re.IGNORECASE)
_FLUSH_AT = 256 * 1024
#: Octets of a large literal read before they are written to its file, in a thread.
_SPOOL_CHUNK = 1024 * 1024


class Disconnect(Exception):
    """The session must end (LOGOUT, BYE sent, connection lost)."""


class CommandError(Exception):
    """Answer the command with ``<kind> <text>`` (kind is NO or BAD)."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind = kind
        self.text = text
        self.tag: str | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    """What one command may send: line and literal octets, seconds of silence."""

    line: int
    literal: int
    timeout: float
    authenticated: bool


@dataclass(slots=True)
class CommandContext:
    """The command being answered: its tag, and whether it came as ``UID <command>``."""

    tag: str
    uid: bool = False


def peek_tag(data: bytes) -> str:
    """The tag of a command line, ``*`` when it has none."""
    try:
        return Parser(data).tag()
    except ParseError:
        return "*"


class ImapConnection:
    """The streams of one client, the responses waiting to be sent, the command reader.

    Args:
        config: the ``[imap]`` section (limits).
        reader, writer: the client's streams.
        spool_file: makes the temporary file of a large literal.
    """

    def __init__(
        self,
        config: ImapSection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        spool_file: Callable[[], Awaitable[BinaryIO]],
    ) -> None:
        self.config = config
        self.reader = reader
        self.writer = writer
        self.spool_file = spool_file
        self.out = bytearray()
        #: The current command's spooled literals by offset (see :meth:`read_command`).
        self.spooled: dict[int, SpooledLiteral] = {}
        self._spooled_files: list[BinaryIO] = []

    @property
    def authenticated(self) -> bool:
        """Whether the client has logged in (the larger limits apply)."""
        return False

    def send(self, line: bytes) -> None:
        self.out += line + b"\r\n"

    async def flush(self) -> None:
        if self.out:
            # Handed over, not copied: the transport sends it or copies what is left.
            data = self.out
            self.out = bytearray()
            self.writer.write(data)
            await self.writer.drain()

    async def maybe_flush(self) -> None:
        if len(self.out) >= _FLUSH_AT:
            await self.flush()

    def limits(self) -> Limits:
        """The input limits of the session's state: the smallest until login."""
        config = self.config
        if not self.authenticated:
            return Limits(
                config.preauth_max_line_length,
                config.preauth_max_literal_size,
                float(config.preauth_idle_timeout_seconds),
                authenticated=False,
            )
        return Limits(
            config.max_line_length,
            config.max_literal_size,
            float(config.idle_timeout_seconds),
            authenticated=True,
        )

    def _idle_bye(self) -> Disconnect:
        self.send(b"* BYE Autologout; idle for too long")
        return Disconnect()

    async def readline(self, limits: Limits, *, command_start: bool = False) -> bytes:
        """One line (CRLF included) of at most ``limits.line`` octets.

        Too long a line is ``BAD`` once logged in (the rest of the line is skipped); before
        login it ends the connection, as nothing of it is worth reading, unless it is the
        first line of an ID command (``command_start``) within ``PREAUTH_ID_MAX_LINE``."""
        try:
            line = await asyncio.wait_for(self.reader.readuntil(b"\n"), limits.timeout)
        except asyncio.LimitOverrunError as exc:
            if not limits.authenticated:
                raise self._line_too_long_bye() from None
            start = await self.reader.readexactly(exc.consumed)
            await self._discard_line()
            error = CommandError("BAD", "Command line too long")
            error.tag = peek_tag(start[:200])
            raise error from None
        except asyncio.IncompleteReadError as exc:
            raise Disconnect() from exc
        except TimeoutError:
            raise self._idle_bye() from None
        except (ConnectionError, OSError) as exc:
            raise Disconnect() from exc
        if len(line) > limits.line:
            if not limits.authenticated:
                if command_start and len(line) <= PREAUTH_ID_MAX_LINE and _ID_COMMAND.match(line):
                    return line
                raise self._line_too_long_bye()
            raise CommandError("BAD", "Command line too long")
        return line

    def _line_too_long_bye(self) -> Disconnect:
        self.send(b"* BYE Command line too long")
        return Disconnect()

    async def _discard_line(self) -> None:
        while True:
            try:
                await self.reader.readuntil(b"\n")
                return
            except asyncio.LimitOverrunError as exc:
                await self.reader.readexactly(exc.consumed)
            except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
                raise Disconnect() from exc

    async def read_command(self) -> bytes:
        """A whole command with its literals inline; raises on limits.

        Literals above ``spool_threshold`` are not inline: they go to temporary files, listed
        in ``self.spooled`` by their offset in the command (see :class:`Parser`)."""
        limits = self.limits()
        data = bytearray()
        literal_total = 0
        while True:
            line = await self.readline(limits, command_start=not data)
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
                    raise Disconnect()
                if synchronising:
                    error = CommandError("NO", "[TOOBIG] Literal too big")
                    error.tag = peek_tag(bytes(data[:200]))
                    raise error
                self.send(b"* BYE [TOOBIG] Literal too big")
                raise Disconnect()
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
                raise Disconnect() from exc

    async def _spool(self, size: int, seconds: float) -> SpooledLiteral:
        """Read a ``size``-octet literal into a temporary file, ``_SPOOL_CHUNK`` at a time."""
        file = await self.spool_file()
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
                raise Disconnect() from exc
            if not chunk:
                raise Disconnect()
            remaining -= len(chunk)
            pending += chunk
            if len(pending) >= _SPOOL_CHUNK or not remaining:
                await asyncio.to_thread(file.write, pending)
                pending.clear()
        return spooled

    def drop_spooled(self) -> None:
        self.spooled.clear()
        for file in self._spooled_files:
            file.close()
        self._spooled_files.clear()

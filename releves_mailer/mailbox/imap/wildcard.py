"""LIST and LSUB patterns (RFC 3501 6.3.8): ``*`` and ``%`` matched in linear time.

A pattern compiled to a regular expression (``.*`` per ``*``) backtracks: ``*a*a*a*a*b``
against a name of 300 ``a`` took 20 s of the event loop. Here the pattern is a
nondeterministic automaton run bit-parallel over one Python integer (shift-and): each
character of the name costs a handful of integer operations, whatever the pattern, so a
match is O(len(name) x len(pattern) / 64) and never backtracks.
"""

from __future__ import annotations

__all__ = ["ListPattern"]


class ListPattern:
    """One mailbox pattern; ``matches(name)`` says whether LIST shows ``name``.

    ``*`` matches any run of characters, ``%`` any run without the hierarchy ``delimiter``.
    A pattern starting with ``INBOX`` in any case matches INBOX (RFC 3501 5.1); every other
    character matches itself only.
    """

    __slots__ = ("_accept", "_any", "_delimiter", "_literal", "_local", "_wild")

    def __init__(self, pattern: str, delimiter: str = "/") -> None:
        tokens: list[str] = []
        for char in pattern:
            if char in "*%" and tokens and tokens[-1] in "*%":
                # Runs of wildcards collapse: "*%", "%*" and "**" are "*", "%%" is "%".
                if char == "*":
                    tokens[-1] = "*"
                continue
            tokens.append(char)
        # Bit i set in a state: the first i tokens matched the name so far.
        literal: dict[str, int] = {}
        star = local = 0
        caseless = pattern[:5].upper() == "INBOX"
        for index, symbol in enumerate(tokens):
            if symbol == "*":
                star |= 1 << index
            elif symbol == "%":
                local |= 1 << index
            else:
                spellings = (
                    {symbol, symbol.lower(), symbol.upper()} if caseless and index < 5 else {symbol}
                )
                for spelling in spellings:
                    literal[spelling] = literal.get(spelling, 0) | 1 << (index + 1)
        self._literal = literal
        self._any = star
        self._local = local
        self._wild = star | local
        self._accept = 1 << len(tokens)
        self._delimiter = delimiter

    def _close(self, state: int) -> int:
        # A wildcard may match nothing: its state also stands for the next token's. Wildcards
        # never follow each other, so one step reaches the closure.
        return state | (state & self._wild) << 1

    def matches(self, name: str) -> bool:
        literal = self._literal
        star = self._any
        local = self._local
        delimiter = self._delimiter
        state = self._close(1)
        for char in name:
            state = ((state << 1) & literal.get(char, 0)) | (
                state & (star if char == delimiter else star | local)
            )
            if not state:
                return False
            state = self._close(state)
        return bool(state & self._accept)

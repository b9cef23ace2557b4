"""Text normalisation for CFONB zones: ASCII transliteration, upper case, fixed widths."""

from __future__ import annotations

import re
from typing import Final

from anyascii import anyascii

__all__ = ["clean_text", "clean_zone", "is_cfonb_text"]

_NOT_PRINTABLE: Final = re.compile(r"[^\x20-\x7e]")


def clean_zone(text: str) -> str:
    """Transliterate ``text`` to printable upper-case ASCII, keeping its spacing.

    Control characters (tabs, line breaks...) become blanks; trailing blanks go. Used for
    zones whose inner spacing is meaningful (35+35 identifier/type layouts).
    """
    if not text.isascii():
        text = anyascii(text)
    text = text.upper()
    if not text.isprintable():
        text = _NOT_PRINTABLE.sub(" ", text)
    return text.rstrip()


def clean_text(text: str) -> str:
    """Transliterate ``text`` to printable upper-case ASCII with single blanks.

    ``"Café  crème\\n"`` -> ``"CAFE CREME"``. anyascii gives the closest ASCII spelling of
    any script (``"北京"`` -> ``"BEIJING"``); whitespace runs collapse to one blank.
    """
    if not text.isascii():
        text = anyascii(text)
    # str.split() without argument also splits on the ASCII control separators.
    text = " ".join(text.upper().split())
    if not text.isprintable():
        text = " ".join(_NOT_PRINTABLE.sub(" ", text).split())
    return text


def is_cfonb_text(text: str) -> bool:
    """Tell whether ``text`` holds only printable ASCII without lowercase letters."""
    return text.isascii() and text.isprintable() and not any(c.islower() for c in text)

"""Modified UTF-7 (RFC 3501 section 5.1.3), the form of mailbox names on the IMAP wire and in
the store, and their UTF-8 form for clients that enabled UTF8=ACCEPT (RFC 6855)."""

from __future__ import annotations

import base64
import binascii

__all__ = ["decode", "encode"]


def _b64(run: str) -> str:
    data = base64.b64encode(run.encode("utf-16-be")).decode("ascii")
    return "&" + data.rstrip("=").replace("/", ",") + "-"


def encode(name: str) -> str:
    """``Café`` as ``Caf&AOk-``; ``&`` as ``&-``; printable ASCII as it is."""
    out: list[str] = []
    run: list[str] = []
    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            if run:
                out.append(_b64("".join(run)))
                run.clear()
            out.append("&-" if char == "&" else char)
        else:
            run.append(char)
    if run:
        out.append(_b64("".join(run)))
    return "".join(out)


def decode(name: str) -> str:
    """The Unicode form of a modified UTF-7 name; a name that is not valid modified UTF-7
    (stored before the server checked) comes back as it is."""
    if "&" not in name:
        return name
    out: list[str] = []
    index = 0
    while index < len(name):
        char = name[index]
        if char != "&":
            out.append(char)
            index += 1
            continue
        end = name.find("-", index + 1)
        if end < 0:
            return name
        chunk = name[index + 1 : end]
        if not chunk:
            out.append("&")
        else:
            padded = chunk.replace(",", "/") + "=" * (-len(chunk) % 4)
            try:
                out.append(base64.b64decode(padded, validate=True).decode("utf-16-be"))
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return name
        index = end + 1
    return "".join(out)

"""The base subject of RFC 5256 section 2.1 (for SORT SUBJECT and THREAD), in linear time.

Each step reads the subject by index instead of cutting it again and again, and a run of
``[blobs]`` is read once: a subject crafted with thousands of ``Re:`` or ``[x]`` costs no
more than its length. Subjects are cut to :data:`MAX_SUBJECT` characters first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from releves_mailer.mailbox.imap.search import decode_header_text

__all__ = ["MAX_SUBJECT", "base_subject", "casemap"]

#: Characters of a decoded subject that count for sorting and threading.
MAX_SUBJECT = 2000
_SPACES = re.compile(r"[ \t\r\n]+")
_WSP = " \t"


def casemap(text: str) -> bytes:
    """The i;ascii-casemap form of a string: its UTF-8 octets, a-z made upper case."""
    return text.encode("utf-8", "replace").upper()


def _blob_end(text: str, pos: int) -> int:
    """Where ``subj-blob = "[" *BLOBCHAR "]" *WSP`` at ``pos`` ends, or -1."""
    if pos >= len(text) or text[pos] != "[":
        return -1
    close = text.find("]", pos + 1)
    if close < 0 or text.find("[", pos + 1, close) >= 0:
        return -1
    end = close + 1
    while end < len(text) and text[end] in _WSP:
        end += 1
    return end


@dataclass(slots=True)
class _Leader:
    """One try at ``subj-leader`` at a position: where it ends (-1: none), whether it was a
    re/fwd one, and the blobs read on the way (their starts, and where the run ends)."""

    end: int
    refwd: bool
    blob_starts: list[int]
    after_blobs: int


def _leader(text: str, pos: int) -> _Leader:
    # subj-leader = (*subj-blob subj-refwd) / WSP
    # subj-refwd  = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"
    if pos < len(text) and text[pos] in _WSP:
        return _Leader(pos + 1, False, [], pos)
    starts: list[int] = []
    cursor = pos
    while (end := _blob_end(text, cursor)) >= 0:
        starts.append(cursor)
        cursor = end
    word = text[cursor : cursor + 3].lower()
    if word == "fwd":
        after = cursor + 3
    elif word[:2] in ("re", "fw"):
        after = cursor + 2
    else:
        return _Leader(-1, False, starts, cursor)
    while after < len(text) and text[after] in _WSP:
        after += 1
    blob = _blob_end(text, after)
    if blob >= 0:
        after = blob
    if after < len(text) and text[after] == ":":
        return _Leader(after + 1, True, starts, cursor)
    return _Leader(-1, False, starts, cursor)


def base_subject(raw: bytes | None) -> tuple[str, bool]:
    """The base subject of a Subject header value, and whether the message is a reply or
    a forward (some re/fwd leader, "(fwd)" trailer or "[fwd: ...]" wrapper was removed)."""
    if not raw:
        return "", False
    # Step 1: encoded words decoded, runs of white space made one space.
    text = _SPACES.sub(" ", decode_header_text(raw)[:MAX_SUBJECT])
    reply = False
    start, end = 0, len(text)
    lowered = text.lower()
    while True:
        # Step 2: trailers, "(fwd)" and white space, from the end.
        while end > start:
            if text[end - 1] in _WSP:
                end -= 1
            elif end - start >= 5 and lowered.startswith("(fwd)", end - 5):
                end -= 5
                reply = True
            else:
                break
        # Steps 3 to 5: leaders, then a leading blob if something is left after it.
        view = text[:end]
        while True:
            leader = _leader(view, start)
            if leader.end >= 0:
                start = leader.end
                reply = reply or leader.refwd
                continue
            if leader.blob_starts:
                # The leader failed after this run of blobs, and would fail the same way
                # after each blob removed: every blob goes, but the last if nothing follows.
                last_only = leader.after_blobs >= end
                start = leader.blob_starts[-1] if last_only else leader.after_blobs
            break
        # Step 6: a "[fwd: ...]" wrapper goes, and back to step 2.
        if end - start >= 6 and lowered.startswith("[fwd:", start) and text[end - 1] == "]":
            start += 5
            end -= 1
            reply = True
            continue
        return text[start:end], reply

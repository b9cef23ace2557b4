"""Zipping of mail attachments above 2 MB, byte for byte reproducible.

The seed: "Si la taille du relevé est supérieure à 2 Mo, la pièce jointe sera zippée." The
sizes that count are those of the files themselves (before base64). When their total is above
the limit they travel as one ``.zip`` (deflate) holding them all; every member carries the
same fixed timestamp and attributes, so the same statement always gives the same archive
bytes (a re-delivery after a crash is byte-comparable).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from typing import Final, NamedTuple

__all__ = ["ZIP_LIMIT", "ZIP_MIME_TYPE", "Attachment", "bundle_attachments", "zip_attachments"]

#: 2 Mo, as the seed says, counted in binary megabytes.
ZIP_LIMIT: Final = 2 * 1024 * 1024
ZIP_MIME_TYPE: Final = "application/zip"
#: Earliest date a zip entry can carry; used when no statement date is given.
_EPOCH: Final = (1980, 1, 1, 0, 0, 0)
_UNIX: Final = 3
_FILE_MODE: Final = 0o100644


class Attachment(NamedTuple):
    """One attached file: its name, its exact bytes and its MIME type."""

    name: str
    data: bytes
    mime_type: str


def zip_attachments(
    files: Sequence[Attachment | tuple[str, bytes, str]],
    *,
    date_time: tuple[int, int, int, int, int, int] = _EPOCH,
) -> bytes:
    """Deflate ``files`` into one zip archive, deterministically (same input, same bytes)."""
    names = [name for name, _, _ in files]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate attachment names: {names}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for name, data, _ in files:
            info = zipfile.ZipInfo(name, date_time=date_time)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = _UNIX
            info.external_attr = _FILE_MODE << 16
            zf.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=6)
    return buffer.getvalue()


def bundle_attachments(
    files: Sequence[Attachment | tuple[str, bytes, str]],
    limit: int = ZIP_LIMIT,
    zip_name: str = "pieces-jointes.zip",
    *,
    date_time: tuple[int, int, int, int, int, int] = _EPOCH,
) -> list[Attachment]:
    """Return ``files`` unchanged when their total size is at most ``limit``, else one zip.

    ``date_time`` is the timestamp written for every member (default 1980-01-01, the zip
    epoch); pass a date of the statement for a friendlier listing, it stays deterministic.
    """
    attachments = [Attachment(*item) for item in files]
    if sum(len(item.data) for item in attachments) <= limit:
        return attachments
    if not zip_name.lower().endswith(".zip"):
        raise ValueError(f"zip_name must end with .zip: {zip_name!r}")
    return [Attachment(zip_name, zip_attachments(attachments, date_time=date_time), ZIP_MIME_TYPE)]

"""Attachments above 2 MB travel as one reproducible zip that unzips to the exact bytes."""

from __future__ import annotations

import io
import os
import zipfile

import pytest

from releves_mailer.signing.archive import (
    ZIP_LIMIT,
    Attachment,
    bundle_attachments,
    zip_attachments,
)

CFONB_TYPE = "application/octet-stream"


def test_limit_is_two_binary_megabytes():
    assert ZIP_LIMIT == 2 * 1024 * 1024


def test_small_files_are_left_alone():
    files = [("a.cfonb", b"x" * 100, CFONB_TYPE), ("b.csv", b"y;z\r\n", "text/csv")]
    assert bundle_attachments(files) == [Attachment(*item) for item in files]


def test_total_exactly_at_the_limit_is_not_zipped():
    files = [("a.cfonb", b"x" * (ZIP_LIMIT - 10), CFONB_TYPE), ("b.csv", b"y" * 10, "text/csv")]
    assert [item.name for item in bundle_attachments(files)] == ["a.cfonb", "b.csv"]


def test_total_above_the_limit_is_one_zip_with_the_exact_bytes():
    cfonb = os.urandom(ZIP_LIMIT // 2).hex().encode()[: ZIP_LIMIT - 5]
    csv = b"id;date;montant\r\n1;2026-11-26;-12,50\r\n"
    assert len(cfonb) + len(csv) > ZIP_LIMIT
    bundled = bundle_attachments(
        [("r.cfonb", cfonb, CFONB_TYPE), ("t.csv", csv, "text/csv")], zip_name="r.zip"
    )
    assert len(bundled) == 1
    name, data, mime_type = bundled[0]
    assert (name, mime_type) == ("r.zip", "application/zip")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == ["r.cfonb", "t.csv"]
        assert archive.read("r.cfonb") == cfonb
        assert archive.read("t.csv") == csv
        assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in archive.infolist())


def test_zip_is_byte_for_byte_reproducible():
    files = [("r.cfonb", b"0" * 5000, CFONB_TYPE)]
    first = zip_attachments(files, date_time=(2026, 11, 26, 0, 10, 0))
    assert zip_attachments(files, date_time=(2026, 11, 26, 0, 10, 0)) == first
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        assert archive.getinfo("r.cfonb").date_time == (2026, 11, 26, 0, 10, 0)
    assert zip_attachments(files) != first  # the timestamp is really written


def test_custom_limit():
    assert len(bundle_attachments([("a", b"12345", "x/y")], limit=4, zip_name="a.zip")) == 1


def test_duplicate_names_and_bad_zip_name_are_refused():
    with pytest.raises(ValueError, match="duplicate"):
        zip_attachments([("a", b"1", "x/y"), ("a", b"2", "x/y")])
    with pytest.raises(ValueError, match=r"\.zip"):
        bundle_attachments([("a", b"12345", "x/y")], limit=1, zip_name="archive")

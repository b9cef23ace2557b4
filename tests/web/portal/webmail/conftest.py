"""Fixtures of the webmail tests: the bed of :mod:`tests.web.portal.webmail.harness`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from releves_mailer.clock import ManualClock
from releves_mailer.db import Database
from tests.web.portal.webmail.harness import WebmailBed, open_bed


@pytest.fixture
async def bed(database: Database, clock: ManualClock, tmp_path: Path) -> AsyncIterator[WebmailBed]:
    async with open_bed(database, clock, tmp_path) as found:
        yield found

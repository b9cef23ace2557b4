"""Fixtures of the webmail tests: the bed of :mod:`tests.web.portal.webmail.harness`, and
a headless Chromium page (Debian's, driven by Playwright) for the browser tests."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from releves_mailer.clock import ManualClock
from releves_mailer.db import Database
from tests.web.portal.webmail.harness import WebmailBed, open_bed


@pytest.fixture
async def bed(database: Database, clock: ManualClock, tmp_path: Path) -> AsyncIterator[WebmailBed]:
    async with open_bed(database, clock, tmp_path) as found:
        yield found


CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]


def chromium_present() -> bool:
    return CHROMIUM.exists() or shutil.which("chromium") is not None


@pytest.fixture
async def chromium_page(tmp_path: Path) -> AsyncIterator[Any]:
    """A phone-sized page of Debian's Chromium; skipped when Chromium or Playwright is absent."""
    if not chromium_present():
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
    async with api.async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=LAUNCH_ARGS,
            accept_downloads=True,
            viewport={"width": 390, "height": 844},
        )
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            page.set_default_timeout(60_000)
            yield page
        finally:
            await context.close()

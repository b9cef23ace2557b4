"""The webmail in headless Chromium: log in, open the dedicated box, read a signed statement,
download its .cfonb, ZIP three attachments, move one mail, delete one."""

from __future__ import annotations

import asyncio
import io
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.factories import PASSWORD
from tests.web.portal.webmail.harness import DEDICATED, WebmailBed, cfonb_of, csv_of
from tests.web.portal.webmail.test_webmail import create_folder, imap_attachments, imap_folder_count

pytestmark = [pytest.mark.db, pytest.mark.once]


async def read_bytes(path: Any) -> bytes:
    return await asyncio.to_thread(Path(path).read_bytes)


async def test_read_download_zip_move_and_delete_in_chromium(
    bed: WebmailBed, chromium_page: Any
) -> None:
    page = chromium_page
    reference = await asyncio.to_thread(imap_attachments, bed.imap_port, DEDICATED)
    await asyncio.to_thread(create_folder, bed.imap_port, DEDICATED, "Archives")

    await page.goto(f"{bed.base_url}/portail/connexion")
    await page.fill("#login", "cabinet")
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.click("nav.menu >> text=Webmail")
    assert await page.locator("h1").inner_text() == "Webmail"
    await page.click("h2 >> text=Boîte des relevés")
    assert await page.locator("#total").inner_text() == "3 message(s)"

    # Read the newest statement: its signature is checked and valid.
    await page.click("#messages a:has-text('SOCIETE 3')")
    signature = await page.locator("#signature").inner_text()
    assert signature == "Signé par Portail Relevés <portail@releves.example> : signature valide."
    async with page.expect_download() as waiting:
        await page.click("#pieces a.piece")
    download = await waiting.value
    content = await read_bytes(await download.path())
    assert content == cfonb_of(3) == reference[download.suggested_filename]

    # Back to the list: ZIP the attachments of statements 1 and 2 (three files).
    await page.click("text=« Retour à Boîte de réception")
    for name in ("SOCIETE 1", "SOCIETE 2"):
        await page.check(f"#messages tr:has-text('{name}') input[name=uids]")
    async with page.expect_download() as waiting:
        await page.click("button[value=zip]")
    archive = zipfile.ZipFile(io.BytesIO(await read_bytes(await (await waiting.value).path())))
    files = {name: archive.read(name) for name in archive.namelist()}
    assert len(files) == 3
    assert sorted(files.values()) == sorted([cfonb_of(1), cfonb_of(2), csv_of(2)])
    assert files.items() <= reference.items()

    # Move statement 1 to Archives, delete statement 2 (the download left the boxes ticked).
    await page.reload()
    await page.check("#messages tr:has-text('SOCIETE 1') input[name=uids]")
    await page.select_option("#cible", "Archives")
    await page.click("button[value=deplacer]")
    assert "déplacé" in await page.locator("[role=status]").inner_text()
    await page.check("#messages tr:has-text('SOCIETE 2') input[name=uids]")
    await page.click("button[value=supprimer]")
    assert "corbeille" in await page.locator("[role=status]").inner_text()
    assert await page.locator("#total").inner_text() == "1 message(s)"

    counts = {
        folder: await asyncio.to_thread(imap_folder_count, bed.imap_port, DEDICATED, folder)
        for folder in ("INBOX", "Archives", "Trash")
    }
    assert counts == {"INBOX": 1, "Archives": 1, "Trash": 1}

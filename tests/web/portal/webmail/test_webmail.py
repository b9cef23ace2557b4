"""The webmail over HTTP (httpx) against our IMAP server read with aioimaplib: every route."""

from __future__ import annotations

import asyncio
import email
import imaplib
import io
import re
import zipfile
from email import policy
from email.message import EmailMessage

import pytest

from releves_mailer.webmail import WebmailLimits
from tests.factories import PASSWORD
from tests.web.portal.conftest import csrf_of
from tests.web.portal.webmail.harness import (
    DEDICATED,
    OWN,
    WebmailBed,
    cfonb_of,
    csv_of,
)

pytestmark = [pytest.mark.db, pytest.mark.once]

UIDS = re.compile(r'name="uids" value="(\d+)"')


def imap_attachments(port: int, login: str, folder: str = "INBOX") -> dict[str, bytes]:
    """Every attachment of a box, by file name, read with imaplib (the reference)."""
    client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    try:
        client.login(login, PASSWORD)
        client.select(folder, readonly=True)
        _, data = client.fetch("1:*", "(BODY.PEEK[])")
        found = {}
        for item in data:
            if not isinstance(item, tuple):
                continue
            message = email.message_from_bytes(item[1], policy=policy.default)
            assert isinstance(message, EmailMessage)
            for part in message.walk():
                name = part.get_filename()
                if name and not name.endswith(".p7s"):
                    payload = part.get_payload(decode=True)
                    assert isinstance(payload, bytes)
                    found[name] = payload
        return found
    finally:
        client.logout()


def create_folder(port: int, login: str, name: str) -> None:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    try:
        client.login(login, PASSWORD)
        assert client.create(name)[0] == "OK"
    finally:
        client.logout()


def imap_folder_count(port: int, login: str, folder: str) -> int:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    try:
        client.login(login, PASSWORD)
        status, data = client.select(folder, readonly=True)
        return int(data[0]) if status == "OK" else -1
    finally:
        client.logout()


async def test_the_home_page_lists_both_boxes_with_unread_counts(bed: WebmailBed) -> None:
    async with bed.logged_in() as client:
        page = await client.get("/portail/webmail/")
    assert page.status_code == 200, page.text
    assert "Boîte des relevés" in page.text and "Boîte principale" in page.text
    assert DEDICATED in page.text and OWN in page.text
    # Three unread statements in the dedicated box, two unread mails in the own box.
    assert re.findall(r'<td class="non-lus">(\d+)</td>', page.text) == ["3", "2"]
    assert 'href="/portail/webmail/"' in page.text and "Messages envoyés" in page.text


async def test_the_list_shows_the_newest_first_with_attachments(bed: WebmailBed) -> None:
    async with bed.logged_in() as client:
        page = await client.get("/portail/webmail/releves", params={"dossier": "INBOX"})
    assert page.status_code == 200, page.text
    assert "3 message(s)" in page.text
    subjects = re.findall(r'releves/\d+\?dossier=INBOX">[^<]*(SOCIETE \d)', page.text)
    assert subjects == ["SOCIETE 3", "SOCIETE 2", "SOCIETE 1"]
    assert page.text.count('class="piece"') == 4  # three .cfonb and one .csv
    assert "Transactions_supprimees_" in page.text
    assert "portail@releves.example" in page.text


async def test_search_by_subject_sender_date_and_attachment_name(bed: WebmailBed) -> None:
    async with bed.logged_in() as client:
        by_subject = await client.get("/portail/webmail/releves", params={"objet": "SOCIETE 2"})
        by_sender = await client.get("/portail/webmail/principale", params={"expediteur": "news"})
        by_attachment = await client.get(
            "/portail/webmail/releves", params={"piece": "Transactions_supprimees"}
        )
        by_date = await client.get(
            "/portail/webmail/releves", params={"du": "2026-03-11", "au": "2026-03-12"}
        )
        reversed_dates = await client.get(
            "/portail/webmail/releves", params={"du": "2026-03-12", "au": "2026-03-11"}
        )
        too_long = await client.get("/portail/webmail/releves", params={"objet": "x" * 101})
        accented = await client.get("/portail/webmail/releves", params={"objet": "Relevé"})
        quoted = await client.get("/portail/webmail/releves", params={"objet": 'a"b\\'})
    assert "1 message(s)" in by_subject.text and "SOCIETE 2" in by_subject.text
    assert "1 message(s)" in by_sender.text and "Lettre d&#39;information" in by_sender.text
    assert "1 message(s)" in by_attachment.text and "SOCIETE 2" in by_attachment.text
    assert "0 message(s)" in by_date.text
    assert reversed_dates.status_code == 400 and "antérieure" in reversed_dates.text
    assert too_long.status_code == 400 and "100 caractères" in too_long.text
    assert "3 message(s)" in accented.text
    assert quoted.status_code == 200 and "0 message(s)" in quoted.text


async def test_reading_a_statement_shows_its_valid_signature(bed: WebmailBed) -> None:
    async with bed.logged_in() as client:
        listing = await client.get("/portail/webmail/releves")
        uid = UIDS.findall(listing.text)[0]
        page = await client.get(f"/portail/webmail/releves/{uid}", params={"dossier": "INBOX"})
        after = await client.get("/portail/webmail/releves")
    assert page.status_code == 200, page.text
    signature = re.search(r'id="signature"[^>]*>([^<]*)<', page.text)
    assert signature is not None
    assert signature.group(1) == (
        "Signé par Portail Relevés &lt;portail@releves.example&gt; : signature valide."
    )
    assert "SOCIETE 3" in page.text and "FR76" in page.text
    # Reading marked it read.
    assert after.text.count('class="non-lu"') == 2


async def test_a_tampered_or_unknown_signature_is_shown_as_such(bed: WebmailBed) -> None:
    raw = next(iter(bed.statements.values()))
    tampered = raw.replace(b"SOCIETE 1", b"SOCIETE 9", 2)
    await bed.servers.store.deliver(DEDICATED, tampered, "<falsifie@example.com>")
    async with bed.logged_in() as client:
        listing = await client.get("/portail/webmail/releves")
        uid = UIDS.findall(listing.text)[0]
        page = await client.get(f"/portail/webmail/releves/{uid}")
    assert "signature invalide : le message a été modifié après sa signature" in page.text
    assert "signature valide." not in page.text


async def test_html_is_sanitized_and_remote_content_blocked(bed: WebmailBed) -> None:
    async with bed.logged_in() as client:
        listing = await client.get("/portail/webmail/principale")
        uid = UIDS.findall(listing.text)[0]  # the newest: the HTML letter
        page = await client.get(f"/portail/webmail/principale/{uid}")
    assert page.status_code == 200
    assert "<b>du mois</b>" in page.text
    assert "<script>" not in page.text and "onclick" not in page.text
    assert "tracker.example" not in page.text
    assert "Contenus distants bloqués" in page.text
    assert 'rel="noopener noreferrer nofollow"' in page.text
    assert "Message non signé." in page.text


async def test_each_attachment_downloads_with_the_exact_bytes(bed: WebmailBed) -> None:
    reference = await asyncio.to_thread(imap_attachments, bed.imap_port, DEDICATED)
    async with bed.logged_in() as client:
        listing = await client.get("/portail/webmail/releves")
        links = re.findall(
            r'href="(/portail/webmail/releves/\d+/pieces/[0-9.]+\?[^"]+)"', listing.text
        )
        downloads = {}
        for link in links:
            response = await client.get(link.replace("&amp;", "&"))
            assert response.status_code == 200
            name = re.search(r'filename="([^"]+)"', response.headers["Content-Disposition"])
            assert name is not None
            downloads[name.group(1)] = response.content
        missing = await client.get(re.sub(r"/pieces/[0-9.]+", "/pieces/9.9", links[0]))
    assert downloads == reference
    assert sorted(downloads.values()) == sorted([cfonb_of(1), cfonb_of(2), cfonb_of(3), csv_of(2)])
    assert missing.status_code == 404


async def test_zip_of_a_selection_and_of_everything(bed: WebmailBed) -> None:
    reference = await asyncio.to_thread(imap_attachments, bed.imap_port, DEDICATED)
    async with bed.logged_in() as client:
        listing = await client.get("/portail/webmail/releves")
        uids = UIDS.findall(listing.text)
        token = csrf_of(listing.text)
        some = await client.post(
            "/portail/webmail/releves/actions",
            data={"csrf": token, "dossier": "INBOX", "action": "zip", "uids": uids[:2]},
        )
        everything = await client.post(
            "/portail/webmail/releves/actions",
            data={"csrf": token, "dossier": "INBOX", "action": "zip", "tout": "1"},
        )
        nothing = await client.post(
            "/portail/webmail/releves/actions",
            data={"csrf": token, "dossier": "INBOX", "action": "zip"},
        )
        forged = await client.post(
            "/portail/webmail/releves/actions",
            data={"csrf": "x" * 40, "dossier": "INBOX", "action": "zip", "tout": "1"},
        )
    assert some.status_code == 200 and some.headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(some.content)) as archive:
        assert len(archive.namelist()) == 3  # statements 3 and 2: two .cfonb and one .csv
        assert {n: archive.read(n) for n in archive.namelist()}.items() <= reference.items()
    with zipfile.ZipFile(io.BytesIO(everything.content)) as archive:
        assert {n: archive.read(n) for n in archive.namelist()} == reference
    assert nothing.status_code == 400 and "au moins un message" in nothing.text
    assert forged.status_code == 403


async def test_mark_move_and_delete_go_to_the_imap_server(bed: WebmailBed) -> None:
    async with bed.logged_in() as client:
        listing = await client.get("/portail/webmail/principale")
        uids = UIDS.findall(listing.text)
        token = csrf_of(listing.text)
        read = await client.post(
            "/portail/webmail/principale/actions",
            data={"csrf": token, "dossier": "INBOX", "action": "lu", "uids": uids},
        )
        after_read = await client.get(read.headers["Location"])
        unread = await client.post(
            "/portail/webmail/principale/actions",
            data={"csrf": token, "dossier": "INBOX", "action": "non_lu", "uids": uids[:1]},
        )
        after_unread = await client.get(unread.headers["Location"])
        # A folder to move to, made by a mail client.
        await asyncio.to_thread(create_folder, bed.imap_port, OWN, "Archives")
        moved = await client.post(
            "/portail/webmail/principale/actions",
            data={
                "csrf": token,
                "dossier": "INBOX",
                "action": "deplacer",
                "cible": "Archives",
                "uids": uids[:1],
            },
        )
        deleted = await client.post(
            "/portail/webmail/principale/actions",
            data={"csrf": token, "dossier": "INBOX", "action": "supprimer", "uids": uids[1:]},
        )
        home = await client.get("/portail/webmail/")
        bad_target = await client.post(
            "/portail/webmail/principale/actions",
            data={"csrf": token, "dossier": "INBOX", "action": "deplacer", "cible": "Nulle part"},
        )
    assert read.status_code == 303 and "msg=lu" in read.headers["Location"]
    assert 'class="non-lu"' not in after_read.text
    assert after_unread.text.count('class="non-lu"') == 1
    assert moved.status_code == 303 and deleted.status_code == 303
    assert await asyncio.to_thread(imap_folder_count, bed.imap_port, OWN, "INBOX") == 0
    assert await asyncio.to_thread(imap_folder_count, bed.imap_port, OWN, "Archives") == 1
    assert (
        await asyncio.to_thread(imap_folder_count, bed.imap_port, OWN, "Trash") == 1
    )  # created when missing
    assert "Corbeille" in home.text
    assert bad_target.status_code == 400


async def test_another_account_cannot_reach_these_boxes(bed: WebmailBed) -> None:
    async with bed.logged_in("autre") as client:
        own = await client.get("/portail/webmail/principale")
        unknown_box = await client.get("/portail/webmail/cabinet")
        unknown_folder = await client.get("/portail/webmail/principale", params={"dossier": "Nope"})
    assert own.status_code == 200 and "Secret de autre" in own.text
    assert "SOCIETE" not in own.text
    assert unknown_box.status_code == 404 and unknown_folder.status_code == 404


async def test_logout_forgets_the_password_and_closes_the_connections(bed: WebmailBed) -> None:
    async with bed.logged_in() as client:
        assert (await client.get("/portail/webmail/")).status_code == 200
        assert bed.webmail.pool.open_count == 2
        listing = await client.get("/portail/webmail/releves")
        await client.post("/portail/deconnexion", data={"csrf": csrf_of(listing.text)})
    assert bed.webmail.pool.open_count == 0
    assert len(bed.webmail.pool.vault._secrets) == 0


async def test_without_a_stored_password_the_page_says_to_log_in_again(bed: WebmailBed) -> None:
    async with bed.logged_in() as client:
        # As after a restart of the daemon: the session lives on, the password is gone.
        bed.webmail.pool.vault._secrets.clear()
        page = await client.get("/portail/webmail/")
    assert page.status_code == 502
    assert "reconnectez-vous" in page.text


async def test_a_message_over_the_size_limit_is_not_shown_but_its_attachments_are(
    bed: WebmailBed,
) -> None:
    bed.webmail.limits = WebmailLimits(message_max_bytes=1024)
    async with bed.logged_in() as client:
        listing = await client.get("/portail/webmail/releves")
        uid = UIDS.findall(listing.text)[0]
        page = await client.get(f"/portail/webmail/releves/{uid}")
    assert page.status_code == 200
    assert "il n'est pas affiché" in page.text and 'id="signature"' not in page.text
    assert 'class="piece"' in page.text


async def test_the_webmail_follows_a_password_change(bed: WebmailBed) -> None:
    """The session's remembered password is the new one at once: the webmail keeps opening
    the boxes, and IMAP takes the new password only."""
    new_password = "un tout nouveau mot de passe 2026"
    async with bed.logged_in() as client:
        # No webmail page yet: the first IMAP logins come after the change.
        page = await client.get("/portail/mon-compte")
        done = await client.post(
            "/portail/mon-compte/mot-de-passe",
            data={
                "csrf": csrf_of(page.text),
                "ancien": PASSWORD,
                "nouveau": new_password,
                "confirmation": new_password,
            },
        )
        assert done.status_code == 303, done.text
        listed = await client.get("/portail/webmail/")
        assert listed.status_code == 200, listed.text
        assert DEDICATED in listed.text and OWN in listed.text
    with pytest.raises(imaplib.IMAP4.error):
        await asyncio.to_thread(imap_folder_count, bed.imap_port, "cabinet", "INBOX")

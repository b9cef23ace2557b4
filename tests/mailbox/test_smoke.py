"""First end-to-end checks: login, select, fetch, search with imaplib."""

from __future__ import annotations

import imaplib

from releves_mailer.mailbox.imap.server import ImapServer
from releves_mailer.mailbox.store import MessageStore

from .conftest import DOMAIN, PASSWORD, in_thread, put, sample_message


async def test_login_select_fetch(server: ImapServer, store: MessageStore) -> None:
    address = f"demo@{DOMAIN}"
    for index in range(3):
        await put(store, address, sample_message(subject=f"S{index}"))

    def conversation() -> list[object]:
        client = imaplib.IMAP4("127.0.0.1", server.port)
        client.login("demo", PASSWORD)
        typ, data = client.select("INBOX")
        assert typ == "OK" and data == [b"3"]
        typ, fetched = client.uid(
            "FETCH", "1:*", "(FLAGS ENVELOPE BODY.PEEK[HEADER.FIELDS (SUBJECT)])"
        )
        assert typ == "OK"
        typ, found = client.uid("SEARCH", None, "SUBJECT", "S1")
        client.logout()
        return [fetched, found]

    fetched, found = await in_thread(conversation)
    assert len(fetched) == 6
    assert found == [b"2"]

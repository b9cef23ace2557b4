"""Test mails with chosen headers, for the SORT, THREAD and ESEARCH tests."""

from __future__ import annotations


def mail(
    subject: str = "Hello",
    date: str | None = "Tue, 10 Mar 2026 10:00:00 +0100",
    *,
    sender: str = "Alice <alice@example.org>",
    to: str | None = "demo@example.test",
    cc: str | None = None,
    message_id: str | None = None,
    references: str | None = None,
    in_reply_to: str | None = None,
    body: str = "Body text\r\n",
) -> bytes:
    lines = [f"From: {sender}"]
    if to is not None:
        lines.append(f"To: {to}")
    if cc is not None:
        lines.append(f"Cc: {cc}")
    lines.append(f"Subject: {subject}")
    if date is not None:
        lines.append(f"Date: {date}")
    if message_id is not None:
        lines.append(f"Message-ID: {message_id}")
    if references is not None:
        lines.append(f"References: {references}")
    if in_reply_to is not None:
        lines.append(f"In-Reply-To: {in_reply_to}")
    lines += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8", "", body]
    return "\r\n".join(lines).encode()

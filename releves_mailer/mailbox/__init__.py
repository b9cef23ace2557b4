"""Mailboxes: the message store, delivery into boxes, and the IMAP server."""

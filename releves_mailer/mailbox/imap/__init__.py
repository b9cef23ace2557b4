"""Our own IMAP4rev1 server (RFC 3501 with IDLE, UIDPLUS, MOVE, CONDSTORE and friends)."""

"""Tables of the message store (owned by the mailbox area)."""

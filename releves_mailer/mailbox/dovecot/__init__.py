"""Dovecot as the mailbox engine: its configuration for an installation, and delivery into it."""

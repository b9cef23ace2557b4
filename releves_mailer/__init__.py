"""releves-mailer: bank transactions to signed CFONB120 statements in IMAP mailboxes."""

__all__ = ["__version__"]

__version__ = "0.1.0"

"""Entry point for ``python -m releves_mailer``."""

from releves_mailer.cli import main

main()

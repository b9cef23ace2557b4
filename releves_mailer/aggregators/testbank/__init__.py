"""The test bank ("Connecteur de test"): a deterministic simulated bank, also the demo bank.

Also in this package: its partner mode (``partner``), the pages of its webview served by the
daemon (``webview``) and the registry entry that opens it and mounts them (``aggregator``).
"""

from releves_mailer.aggregators.testbank.bank import BANK_CODE, BIC, TestBank, TestBankToken
from releves_mailer.aggregators.testbank.schedule import (
    ScheduledError,
    parse_error_schedule,
    parse_scheduled_error,
)

__all__ = [
    "BANK_CODE",
    "BIC",
    "ScheduledError",
    "TestBank",
    "TestBankToken",
    "parse_error_schedule",
    "parse_scheduled_error",
]

"""The test bank ("Connecteur de test"): a deterministic simulated bank, also the demo bank."""

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

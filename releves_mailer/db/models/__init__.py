"""ORM models of every area; importing this package registers all tables on ``Base.metadata``."""

from releves_mailer.db.models.collect import (
    BankAccount,
    BankConnection,
    BankEvent,
    BankEventKind,
    BankTransaction,
    BankTransactionVersion,
    ConnectionState,
    TransactionStatus,
)
from releves_mailer.db.models.edi import (
    EdiAnalysis,
    EdiAnalysisLock,
    EdiAutoDiscovery,
    EdiDeclaration,
    EdiDeposit,
)
from releves_mailer.db.models.mailbox import (
    MailDelivered,
    MailExpunged,
    MailFolder,
    MailMessage,
    MailSubscription,
)
from releves_mailer.db.models.notify import OutboxMessage, OutboxState
from releves_mailer.db.models.partner import ConnectionWatch, SecureLink
from releves_mailer.db.models.portal import LoginAttempt, PortalSession
from releves_mailer.db.models.portfolio import Periodicity, PortalAccount, ReceptionMode, Redevable
from releves_mailer.db.models.statements import (
    LineKind,
    Statement,
    StatementFile,
    StatementLine,
    StatementState,
    WindowKind,
)

__all__ = [
    "BankAccount",
    "BankConnection",
    "BankEvent",
    "BankEventKind",
    "BankTransaction",
    "BankTransactionVersion",
    "ConnectionState",
    "ConnectionWatch",
    "EdiAnalysis",
    "EdiAnalysisLock",
    "EdiAutoDiscovery",
    "EdiDeclaration",
    "EdiDeposit",
    "LineKind",
    "LoginAttempt",
    "MailDelivered",
    "MailExpunged",
    "MailFolder",
    "MailMessage",
    "MailSubscription",
    "OutboxMessage",
    "OutboxState",
    "Periodicity",
    "PortalAccount",
    "PortalSession",
    "ReceptionMode",
    "Redevable",
    "SecureLink",
    "Statement",
    "StatementFile",
    "StatementLine",
    "StatementState",
    "TransactionStatus",
    "WindowKind",
]

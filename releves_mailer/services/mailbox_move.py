"""The service behind ``mailbox move --to dovecot``: the configured store moved into Dovecot."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from releves_mailer.clock import SystemClock
from releves_mailer.config import Config, ConfigError
from releves_mailer.db import Database
from releves_mailer.db.migrate import SchemaOutOfDate, check_schema
from releves_mailer.errors import UserError
from releves_mailer.mailbox.dovecot.move import MoveReport, move_to_dovecot
from releves_mailer.mailbox.dovecot.setup import load_dovecot_setup
from releves_mailer.mailbox.store import MessageStore

__all__ = ["MoveReport", "move_mailboxes_to_dovecot"]


async def move_mailboxes_to_dovecot(
    config: Config,
    dovecot_dir: Path | None = None,
    *,
    parallel: int = 4,
    on_total: Callable[[int, int], None] | None = None,
    on_message: Callable[[int], None] | None = None,
) -> MoveReport:
    """Move the built-in store of ``config`` into the Dovecot written in ``dovecot_dir``
    (default: ``[mailbox] dovecot_dir``). ``on_total`` hears the store's message count and
    bytes before the move starts."""
    if not config.database_url.startswith("postgresql"):
        raise ConfigError(
            "la base est encore SQLite : Dovecot lit les comptes dans PostgreSQL. Copiez "
            "d'abord la base (releves-mailer db copy --to postgresql://…), mettez son adresse "
            "dans [database] url, puis relancez le déplacement",
            file=config.source,
            key="database.url",
        )
    folder = config.path(dovecot_dir if dovecot_dir is not None else config.mailbox.dovecot_dir)
    setup = load_dovecot_setup(folder)
    blob_dir = config.data_dir / "messages"
    database = Database(config.database_url)
    store = MessageStore(database, blob_dir, SystemClock())
    try:
        try:
            await check_schema(database)
        except SchemaOutOfDate as error:
            raise ConfigError(str(error), file=config.source) from None
        if on_total is not None:
            on_total(*await store.totals())
        try:
            return await move_to_dovecot(store, setup, parallel=parallel, on_message=on_message)
        except ConnectionError as error:
            raise UserError(str(error)) from None
    finally:
        await store.close()
        await database.dispose()

"""Command line: the ``releves-mailer`` console script and its command groups."""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from releves_mailer.cli.common import AppContext
from releves_mailer.cli.errors import french_message, os_error_message
from releves_mailer.cli.help import FrenchContext, in_french
from releves_mailer.config import ConfigError
from releves_mailer.errors import UserError
from releves_mailer.signing.secrets import KeyRingError
from releves_mailer.signing.smime import SigningError

__all__ = ["COMMANDS", "main"]

#: Each command and the module that holds it, in the order of the help. A module is imported
#: when its command runs (or the help lists it): a command loads only the rooms it uses.
COMMANDS = {
    "init": "admin",
    "check-config": "admin",
    "db": "admin",
    "dovecot-config": "admin",
    "mailbox": "mailbox",
    "accounts": "portfolio",
    "redevables": "portfolio",
    "banks": "banks",
    "tokens": "tokens",
    "collect": "collect",
    "simulate": "collect",
    "statements": "collect",
    "serve": "serve",
    "demo": "demo",
    "cfonb": "cfonb",
    "backup": "backup",
    "restore": "backup",
    "edi": "edi",
}


class MainGroup(click.Group):
    """Turns every refusal into one French line on stderr and a non-zero exit; loads a
    command's module only when the command is asked for; every help page is in French."""

    context_class = FrenchContext

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is None:
            return None
        found = importlib.import_module(f"releves_mailer.cli.{module}")
        command = getattr(found, cmd_name.replace("-", "_"))
        assert isinstance(command, click.Command) and command.name == cmd_name, cmd_name
        return in_french(command)

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """click's standalone mode, but its errors in French and without "Error:"."""
        run = functools.partial(
            super().main, args, prog_name, complete_var, standalone_mode=False, **extra
        )
        if not standalone_mode:
            return run()
        try:
            result: Any = run()
        except click.ClickException as error:
            click.echo(french_message(error), err=True)
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("Interrompu.", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (UserError, ConfigError, SigningError, KeyRingError) as error:
            raise click.ClickException(str(error)) from None
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            raise click.Abort from None
        except OSError as error:
            if ctx.obj is not None and getattr(ctx.obj, "debug", False):
                raise
            raise click.ClickException(os_error_message(error)) from None
        except Exception as error:
            if ctx.obj is not None and getattr(ctx.obj, "debug", False):
                raise
            logging.getLogger(__name__).debug("unexpected error", exc_info=True)
            raise click.ClickException(
                f"erreur inattendue ({type(error).__name__}) : {error} "
                "— relancez avec --debug pour le détail"
            ) from None


@click.group(cls=MainGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_option",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Fichier de configuration (sinon $RELEVES_MAILER_CONFIG, "
    "sinon ./releves-data/releves-mailer.toml).",
)
@click.option("--debug", is_flag=True, help="Affiche la trace complète des erreurs inattendues.")
@click.version_option(package_name="releves-mailer", help="Affiche la version et quitte.")
@click.pass_context
def main(ctx: click.Context, config_option: Path | None, debug: bool) -> None:
    """releves-mailer : relevés bancaires CFONB120 livrés dans vos boîtes IMAP."""
    app = ctx.ensure_object(AppContext)
    app.config_option = config_option
    app.debug = debug
    # Everything the commands create (database, WAL, messages, keys, logs, exports) is the
    # user's alone, whatever the umask of the shell; the code also asks for 0600/0700.
    os.umask(0o077)
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )

"""Command line: the ``releves-mailer`` console script and its command groups."""

import click


@click.group()
def main() -> None:
    """releves-mailer."""

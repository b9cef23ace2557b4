"""Command ``mailbox move --to dovecot``: the built-in store's boxes moved into Dovecot."""

from __future__ import annotations

from pathlib import Path

import click
from tqdm import tqdm

from releves_mailer.cli.common import AppContext, async_command
from releves_mailer.services.mailbox_move import move_mailboxes_to_dovecot

__all__ = ["mailbox"]


@click.group()
def mailbox() -> None:
    """Boîtes aux lettres."""


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} Mo".replace(".", ",")


@mailbox.command(name="move")
@click.option(
    "--to",
    "engine",
    required=True,
    type=click.Choice(["dovecot"]),
    help="Moteur cible (dovecot).",
)
@click.option(
    "--dovecot-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Dossier écrit par « releves-mailer dovecot-config » (sinon [mailbox] dovecot_dir).",
)
@click.option(
    "--parallel",
    type=click.IntRange(1, 32),
    default=4,
    show_default=True,
    help="Boîtes déplacées en même temps.",
)
@async_command
async def mailbox_move(
    app: AppContext, engine: str, dovecot_dir: Path | None, parallel: int
) -> None:
    """Recopie les messages du stockage intégré dans Dovecot (octets, drapeaux, dates).

    Chaque dossier est créé, chaque message déposé une seule fois : relancée après une
    interruption, la commande reprend où elle en était. Le stockage intégré n'est pas
    effacé. Arrêtez le démon avant le dernier passage, puis passez [mailbox] engine à
    « dovecot »."""
    progress: tqdm[None] | None = None

    def started(messages: int, size: int) -> None:
        nonlocal progress
        click.echo(f"Stockage intégré : {messages} message(s), {_megabytes(size)}.")
        progress = tqdm(
            total=size,
            desc="Déplacement vers Dovecot",
            unit="o",
            unit_scale=True,
            leave=False,
            disable=None,
        )

    def done(size: int) -> None:
        if progress is not None:
            progress.update(size)

    try:
        report = await move_mailboxes_to_dovecot(
            app.config, dovecot_dir, parallel=parallel, on_total=started, on_message=done
        )
    finally:
        if progress is not None:
            progress.close()
    click.echo(
        f"Déplacement terminé : {report.boxes} boîte(s), {report.folders} dossier(s) ; "
        f"{report.moved} message(s) déposé(s) ({_megabytes(report.moved_bytes)}), "
        f"{report.found} déjà présent(s) dans Dovecot ({_megabytes(report.found_bytes)})."
    )
    if report.flags_updated:
        click.echo(f"Drapeaux remis à jour sur {report.flags_updated} message(s) déjà présent(s).")
    for name in report.special_use_lost:
        click.echo(f"Usage spécial non repris par Dovecot : {name}", err=True)
    if report.unknown_boxes:
        for box in report.unknown_boxes:
            click.echo(f"Boîte inconnue de Dovecot (aucun compte du portail) : {box}", err=True)
        raise click.ClickException(
            f"{len(report.unknown_boxes)} boîte(s) non déplacée(s), {report.skipped} message(s)"
        )

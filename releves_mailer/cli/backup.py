"""Commands ``backup`` and ``restore``: a whole installation in one file, and back."""

from __future__ import annotations

from pathlib import Path

import click

from releves_mailer.backup import restore as restore_backup
from releves_mailer.backup import take_backup
from releves_mailer.cli.common import AppContext, async_command
from releves_mailer.clock import SystemClock

__all__ = ["backup", "restore"]


@click.command()
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Fichier à écrire : .tar, .tar.gz (.tgz) ou .tar.xz (.txz). Remplacé d'un coup.",
)
@click.option(
    "--with-keys",
    is_flag=True,
    help="Inclut les clés (chiffrement des jetons, signature, TLS) et les secrets de la "
    "configuration : le fichier devient alors aussi secret que les clés.",
)
@async_command
async def backup(app: AppContext, out: Path, with_keys: bool) -> None:
    """Sauvegarde cohérente (base, messages, configuration), même démon en marche.

    Sans --with-keys, ni les clés ni les secrets de la configuration ne sont dans le
    fichier : gardez-les à part. Avec --with-keys, le fichier est aussi secret que les
    clés qu'il contient (il est écrit en mode 0600).
    """
    report = await take_backup(app.config, out, with_keys=with_keys, clock=SystemClock())
    counts = report.counts
    click.echo(
        f"Sauvegarde écrite : {report.path} ({report.size} octets, base {report.database}, "
        f"{counts['statements']} relevés, {counts['messages']} messages)"
    )
    if with_keys:
        click.echo("Ce fichier contient les clés : gardez-le aussi secret qu'elles.")
    else:
        click.echo("Clés non incluses : conservez-les à part (--with-keys pour les inclure).")


@click.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Dossier de données à créer (neuf ou vide).",
)
@click.option(
    "--database-url",
    help="Base PostgreSQL vide où charger une sauvegarde PostgreSQL "
    "(postgresql+asyncpg://utilisateur@hôte:5432/base).",
)
@async_command
async def restore(_app: AppContext, file: Path, data_dir: Path, database_url: str | None) -> None:
    """Reconstruit une installation à partir d'une sauvegarde, dans un dossier neuf."""
    report = await restore_backup(file, data_dir, database_url=database_url)
    counts = report.counts
    click.echo(
        f"Installation restaurée dans {report.data_dir} (base {report.database}, "
        f"{counts['statements']} relevés, {counts['messages']} messages)"
    )
    click.echo(f"Configuration : {report.config_path}")
    if report.missing_keys:
        click.echo("Clés absentes de la sauvegarde, à remettre en place avant de démarrer :")
        for path, what in report.missing_keys:
            click.echo(f"  {path} : {what}")
    if report.missing_secrets:
        click.echo(
            "Secrets retirés de la configuration, à redonner (fichier ou environnement "
            "RELEVES_MAILER__SECTION__CLE) : " + ", ".join(report.missing_secrets)
        )

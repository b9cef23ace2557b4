"""Run the ``releves-mailer`` command line as a real process on a data directory's config."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from releves_mailer.config import Config

__all__ = ["run_command", "run_command_async"]


def run_command(config: Config, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m releves_mailer --config ... ARGS`` without the caller's RELEVES_MAILER_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELEVES_MAILER")}
    return subprocess.run(
        [sys.executable, "-m", "releves_mailer", "--config", str(config.source), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


async def run_command_async(config: Config, *args: str) -> subprocess.CompletedProcess[str]:
    """:func:`run_command` in a thread, so this loop keeps serving (fake Powens, daemon)."""
    return await asyncio.to_thread(run_command, config, *args)

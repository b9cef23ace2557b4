"""Import of 10,000 redevables on SQLite, through the real command (target: under 10 s).

Usage: .venv/bin/python bench/import_bench.py [--count N]
Prints the wall and CPU time of ``releves-mailer redevables import`` in a fresh data
directory (process start, parsing, checks, insert and commit included). Half the lines have
field 9 = 1: the import runs twice, in two data directories, once with ``--no-auto-link``
(the import alone, what the target is about) and once mailing their secure "saisie" links
(link rows, mails composed, signed and queued in the outbox); the difference is the cost of
the links.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stdnum import luhn

TARGET_SECONDS = 10.0
PERIODICITIES = [
    ("JOURNALIERE", "", ""),
    ("HEBDOMADAIRE", "", "2"),
    ("MENSUELLE", "", "0"),
    ("TRIMESTRIELLE", "3", "15"),
    ("SEMESTRIELLE", "6", "0"),
    ("ANNUELLE", "12", "31"),
]


def siren(index: int) -> str:
    base = f"8{index:07d}"
    return base + luhn.calc_check_digit(base)


def import_file(count: int) -> bytes:
    rng = random.Random(1)
    lines = [
        "SIREN;NIC;Raison Sociale;Raison Sociale (Suite);Email;Périodicité;Mois;Jour;"
        "Saisie Identifiants Bancaires Déportés"
    ]
    for index in range(count):
        number = siren(index)
        nic_base = f"{rng.randint(1, 999):04d}"
        nic = nic_base + luhn.calc_check_digit(number + nic_base)
        periodicity, month, day = PERIODICITIES[index % len(PERIODICITIES)]
        remote = index % 2
        email = f"compta{index}@client{index}.example" if remote else ""
        lines.append(
            f"{number};{nic};SOCIÉTÉ NUMÉRO {index};ÉTABLISSEMENT PRINCIPAL;{email};"
            f"{periodicity};{month};{day};{remote}"
        )
    return ("\n".join(lines) + "\n").encode("utf-8")


def run_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RELEVES_MAILER_CONFIG=str(data_dir / "releves-mailer.toml"))
    return subprocess.run(
        [sys.executable, "-m", "releves_mailer", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_import(data: bytes, *options: str) -> tuple[float, float]:
    """Wall and CPU seconds of one import of ``data`` into a fresh data directory."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "data"
        run_cli(directory, "init", str(directory))
        password = Path(tmp) / "password"
        password.write_text("mot de passe de bench\n")
        owner = siren(9_999_998)
        owner_nic = "0001" + luhn.calc_check_digit(owner + "0001")
        run_cli(
            directory,
            "accounts",
            "add",
            "bench",
            "--siret",
            owner + owner_nic,
            "--name",
            "Bench",
            "--email",
            "bench@example.com",
            "--password-file",
            str(password),
        )
        path = Path(tmp) / "redevables.csv"
        path.write_bytes(data)
        cpu = children_cpu()
        started = time.perf_counter()
        result = run_cli(
            directory, "redevables", "import", str(path), "--account", "bench", *options
        )
        elapsed = time.perf_counter() - started
        cpu = children_cpu() - cpu
        print(result.stdout.strip())
        listed = run_cli(directory, "redevables", "list", "--account", "bench", "--limit", "1")
        print(listed.stderr.strip())
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=10_000)
    args = parser.parse_args()
    data = import_file(args.count)
    links = args.count // 2
    elapsed, cpu = timed_import(data, "--no-auto-link")
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    verdict = "OK" if elapsed < TARGET_SECONDS else "TOO SLOW"
    print(
        f"import of {args.count} redevables (CLI, SQLite, --no-auto-link): {elapsed:.2f} s "
        f"wall, {cpu:.2f} s CPU (target < {TARGET_SECONDS:.0f} s) {verdict}"
    )
    print(f"{args.count / elapsed:,.0f} redevables/s; peak RSS of the command: {children:.0f} MB")
    mailed, mailed_cpu = timed_import(data)
    print(
        f"same import mailing {links} saisie links: {mailed:.2f} s wall, {mailed_cpu:.2f} s CPU; "
        f"per link {(mailed - elapsed) / links * 1000:.1f} ms wall, "
        f"{(mailed_cpu - cpu) / links * 1000:.1f} ms CPU"
    )


if __name__ == "__main__":
    main()

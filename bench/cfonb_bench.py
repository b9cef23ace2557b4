"""Benchmark of the CFONB120 writer: movements written per second and peak memory.

Writes one statement of 1,000,000 movements (by default) to a counting stream that keeps
nothing, three ways:

- baseline: a plain f-string loop writing one 120-character line per movement (what
  "as fast as Python formats text" means on this machine);
- writer: ``stream_statement`` fed from a generator cycling over 1,000 prepared
  movements (realistic mix: a third of the labels need a LIB continuation, one in five
  movements has NBE/RUM/LCC complements, some labels are accented);
- end to end: the same, but every ``Movement`` is built inside the generator, as the
  collection engine does from provider rows.

Each rate is given per wall-clock second and per CPU second of this process; the target
is checked against the CPU rate, which other processes sharing the machine do not move.
Then the writer runs again under tracemalloc for the peak of Python allocations, and the
process peak RSS (ru_maxrss) is read. Usage: ``python bench/cfonb_bench.py [--movements N]``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import sys
import time
import tracemalloc
from collections.abc import Iterator
from datetime import date, timedelta

from releves_mailer.cfonb import Account, Complement, Movement, op_code_for, stream_statement
from releves_mailer.cfonb import complements as c

TARGET_RATE = 250_000
TARGET_MEMORY_MB = 100
ACCOUNT = Account.from_iban("FR76 3000 6000 0112 3456 7890 189", "EUR")
OPENING, CLOSING = date(2024, 1, 31), date(2024, 2, 29)

SHORT = ["CB CARREFOUR MARKET", "PRLV SEPA EDF", "VIR SEPA CLIENT", "RETRAIT DAB", "FRAIS"]
LONG = [
    "VIREMENT SEPA RECU DE SARL LES JARDINS DE PROVENCE FACTURE 2024-0042",
    "PRÉLÈVEMENT SEPA URSSAF ÎLE-DE-FRANCE COTISATIONS DU MOIS",
    "PAIEMENT PAR CARTE 1234 XXXX XXXX 5678 LA BOULANGERIE DU COIN",
]


class CountingStream:
    """A text stream that counts characters and keeps nothing."""

    def __init__(self) -> None:
        self.characters = 0

    def write(self, text: str) -> int:
        self.characters += len(text)
        return len(text)


def row(i: int) -> tuple[date, int, str, str]:
    """A provider-like row: booking date, amount, raw label, aggregator type."""
    label = LONG[i % 3] if i % 3 == 0 else f"{SHORT[i % 5]} {i % 97:02d}"
    kind = ("card", "order", "transfer", "withdrawal", "bank")[i % 5]
    return OPENING + timedelta(days=1 + i % 29), (i * 7919) % 200_001 - 100_000, label, kind


def build(i: int, booking: date, amount: int, label: str, kind: str) -> Movement:
    extra: tuple[Complement, ...] = ()
    if i % 5 == 1:
        extra = (
            c.beneficiary_name("EDF SA"),
            c.mandate(f"RUM{i % 1000:06d}", "RCUR"),
            *c.remittance_information(f"FACTURE {i}"),
        )
    return Movement(booking, amount, label, op_code_for(kind, amount, label), complements=extra)


def pool_movements(count: int) -> Iterator[Movement]:
    pool = [build(i, *row(i)) for i in range(1000)]
    return itertools.islice(itertools.cycle(pool), count)


def built_movements(count: int) -> Iterator[Movement]:
    rows = [row(i) for i in range(1000)]
    for i in range(count):
        yield build(i, *rows[i % 1000])


class Clock:
    """Wall-clock and CPU time of a block: on a shared machine the CPU time of this
    process is the figure that does not depend on what the neighbours run."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def baseline(count: int) -> Clock:
    out = CountingStream()
    with Clock() as clock:
        buffer: list[str] = []
        for i in range(count):
            buffer.append(
                f"04300060000001EUR2 12345678901B1050124  050124{'CB CARREFOUR MARKET':<31}  "
                f"{i % 10_000_000:07d}  {i:013d}{{{'':16}\n"
            )
            if len(buffer) >= 512:
                out.write("".join(buffer))
                buffer.clear()
        out.write("".join(buffer))
    return clock


def write(movements: Iterator[Movement]) -> tuple[Clock, int]:
    out = CountingStream()
    with Clock() as clock:
        stream_statement(out, ACCOUNT, OPENING, 0, CLOSING, movements)
    return clock, out.characters


def rates(count: int, clock: Clock) -> str:
    return f"{count / clock.wall:>10,.0f}/s wall, {count / clock.cpu:>10,.0f}/s CPU"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movements", type=int, default=1_000_000)
    count = parser.parse_args().movements

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"CFONB120 writer, {count:,} movements, Python {sys.version.split()[0]},"
        f" {os.cpu_count()} CPUs, load average {load}"
    )
    base = baseline(count)
    print(f"  f-string loop baseline : {rates(count, base)}  lines")

    clock, characters = write(pool_movements(count))
    records = characters // 121
    cpu_rate = count / clock.cpu
    verdict = "OK" if cpu_rate >= TARGET_RATE else "BELOW TARGET"
    print(
        f"  writer                 : {rates(count, clock)}  movements"
        f"  (target >= {TARGET_RATE:,}/s: {verdict})"
    )
    print(
        f"  writer, per record     : {rates(records, clock)}  records"
        f"  ({records:,} records, {characters / 1e6:,.0f} MB;"
        f" {records / clock.cpu / (count / base.cpu):.0%} of the baseline line rate)"
    )
    clock, _ = write(built_movements(count))
    print(
        f"  end to end (+Movement) : {rates(count, clock)}  movements"
        "  (each Movement, its complements and op code built from a provider-like row)"
    )

    tracemalloc.start()
    write(pool_movements(count))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak_mb = peak / 2**20
    verdict = "OK" if peak_mb < TARGET_MEMORY_MB else "ABOVE TARGET"
    print(
        f"  peak Python memory     : {peak_mb:>10,.1f} MB"
        f"  (tracemalloc; target < {TARGET_MEMORY_MB} MB: {verdict})"
    )
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    verdict = "OK" if rss_mb < TARGET_MEMORY_MB else "ABOVE TARGET"
    print(
        f"  peak process RSS       : {rss_mb:>10,.1f} MB"
        f"  (ru_maxrss, interpreter included; target < {TARGET_MEMORY_MB} MB: {verdict})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

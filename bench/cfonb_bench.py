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

Then the writer run again under tracemalloc for the peak of Python allocations, and the
process peak RSS (ru_maxrss). Usage: ``python bench/cfonb_bench.py [--movements N]``.
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


def baseline(count: int) -> float:
    out = CountingStream()
    start = time.perf_counter()
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
    return count / (time.perf_counter() - start)


def write(movements: Iterator[Movement]) -> tuple[float, int, int]:
    out = CountingStream()
    start = time.perf_counter()
    stream_statement(out, ACCOUNT, OPENING, 0, CLOSING, movements)
    return time.perf_counter() - start, out.characters, out.characters // 121


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movements", type=int, default=1_000_000)
    count = parser.parse_args().movements

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"CFONB120 writer, {count:,} movements, Python {sys.version.split()[0]},"
        f" {os.cpu_count()} CPUs, load average {load}"
    )
    rate = baseline(count)
    print(f"  f-string loop baseline : {rate:>10,.0f} lines/s")

    elapsed, characters, records = write(pool_movements(count))
    writer_rate = count / elapsed
    verdict = "OK" if writer_rate >= TARGET_RATE else "BELOW TARGET"
    print(
        f"  writer                 : {writer_rate:>10,.0f} movements/s"
        f"  (target >= {TARGET_RATE:,}: {verdict}; {writer_rate / rate:.0%} of the baseline;"
        f" {records:,} records, {characters / 1e6:,.0f} MB written)"
    )
    record_rate = records / elapsed
    print(
        f"  writer, per record     : {record_rate:>10,.0f} records/s"
        f"  ({record_rate / rate:.0%} of the baseline line rate; 01/04/05/07 all counted)"
    )
    elapsed, _, _ = write(built_movements(count))
    print(
        f"  end to end (+Movement) : {count / elapsed:>10,.0f} movements/s"
        "  (building each Movement and its op code included)"
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

"""Composition and S/MIME signing of statement mails (target: at least 200 mails/s).

Usage: .venv/bin/python bench/delivery_sign_bench.py [--count 1000] [--movements 200]
       [--concurrency 8] [--verify]

Builds ``--count`` statements of ``--movements`` movements (synthetic CFONB120 bytes: one
01 record, one 04 record per movement, one 07 record: ~25 KB for 200 movements),
then composes and signs every mail with a fresh self-signed portal pair, twice:

- sequentially (``compose_statement_bytes`` + ``SmimeSigner.sign`` on one core);
- through ``build_signed_statement_mail`` on the event loop, ``--concurrency`` at a time
  (worker threads, as the daemon does).

Prints mails/s for both, the mean mail size, one >2 MB (zipped) statement's time, and the
peak memory (RSS of the process, and Python allocations of the sequential pass).
``--verify`` also checks one mail with ``openssl smime -verify``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from releves_mailer.delivery.compose import (
    StatementMail,
    build_signed_statement_mail,
    compose_statement_bytes,
)
from releves_mailer.render import Renderer
from releves_mailer.signing.certificates import write_signing_pair
from releves_mailer.signing.smime import SmimeSigner

TARGET_PER_SECOND = 200.0


def synthetic_cfonb(rng: random.Random, movements: int) -> bytes:
    """CFONB120-shaped bytes: 120 characters + CRLF per record."""

    def record(code: str) -> bytes:
        body = code + "".join(rng.choice("0123456789ABCDEFGHIJ ") for _ in range(118))
        return body.encode("ascii") + b"\r\n"

    lines = [record("01")]
    lines += [record("04") for _ in range(movements)]
    lines.append(record("07"))
    return b"".join(lines)


def statements(count: int, movements: int) -> list[StatementMail]:
    rng = random.Random(1)
    pool = [synthetic_cfonb(rng, movements) for _ in range(16)]
    created = dt.datetime(2026, 11, 25, 23, 10, tzinfo=dt.UTC)
    mails = []
    for index in range(count):
        mails.append(
            StatementMail(
                statement_id=index + 1,
                periodicity="HEBDOMADAIRE",
                company_name=f"Société Bench {index:05d}",
                siret="40483304800022",
                bank_name="Connecteur de test",
                account_label="Compte chèque",
                iban="FR7613026240019300290000029",
                period_start=dt.date(2026, 11, 19),
                period_end=dt.date(2026, 11, 25),
                due_date=dt.date(2026, 11, 25),
                movement_count=movements,
                opening_balance=rng.randrange(-(10**8), 10**8),
                closing_balance=rng.randrange(-(10**8), 10**8),
                currency="EUR",
                cfonb=pool[index % len(pool)],
                deleted_csv=b"id;date;montant\r\n1;2026-11-20;-12,50\r\n"
                if index % 10 == 0
                else None,
                recipient=f"releves.client{index % 50}@releves.example",
                domain="releves.example",
                portal_name="Portail ASPOne.fr",
                created_at=created,
            )
        )
    return mails


def peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux, bytes on macOS.
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


async def concurrent_pass(
    mails: list[StatementMail], renderer: Renderer, signer: SmimeSigner, concurrency: int
) -> int:
    semaphore = asyncio.Semaphore(concurrency)
    total = 0

    async def one(mail: StatementMail) -> None:
        nonlocal total
        async with semaphore:
            total += len(await build_signed_statement_mail(mail, renderer, signer))

    await asyncio.gather(*(one(mail) for mail in mails))
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--movements", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--verify", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        key, cert = Path(folder) / "key.pem", Path(folder) / "cert.pem"
        write_signing_pair("portail@releves.example", "Portail", key, cert, dt.datetime.now(dt.UTC))
        signer = SmimeSigner.from_files(key, cert)
        renderer = Renderer()
        mails = statements(args.count, args.movements)
        cfonb_size = sum(len(mail.cfonb) for mail in mails) / len(mails)

        compose_statement_bytes(mails[0], renderer)  # compile the templates once
        started = time.perf_counter()
        total = 0
        for mail in mails:
            total += len(signer.sign(compose_statement_bytes(mail, renderer)))
        sequential = time.perf_counter() - started
        # Allocations measured apart: tracemalloc slows everything down.
        tracemalloc.start()
        for mail in mails[:100]:
            signer.sign(compose_statement_bytes(mail, renderer))
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

        started = time.perf_counter()
        asyncio.run(concurrent_pass(mails, renderer, signer, args.concurrency))
        concurrent = time.perf_counter() - started

        rng = random.Random(2)
        big = StatementMail(
            **{
                **{f: getattr(mails[0], f) for f in StatementMail.__dataclass_fields__},
                "statement_id": "big",
                "cfonb": synthetic_cfonb(rng, 18000),
            }
        )
        started = time.perf_counter()
        big_mail = signer.sign(compose_statement_bytes(big, renderer))
        big_seconds = time.perf_counter() - started

        print(
            f"statements: {args.count} x {args.movements} movements, "
            f"CFONB {cfonb_size / 1024:.1f} KiB"
        )
        print(f"mean signed mail: {total / args.count / 1024:.1f} KiB")
        rate = args.count / sequential
        print(f"sequential compose+sign: {rate:.0f} mails/s ({sequential:.2f} s)")
        rate_async = args.count / concurrent
        print(
            f"build_signed_statement_mail, {args.concurrency} at a time: "
            f"{rate_async:.0f} mails/s ({concurrent:.2f} s)"
        )
        print(
            f"one zipped statement ({len(big.cfonb) / 1024 / 1024:.1f} MiB CFONB -> "
            f"{len(big_mail) / 1024:.0f} KiB mail): {big_seconds * 1000:.0f} ms"
        )
        print(
            f"peak memory: RSS {peak_rss_mb():.0f} MiB, "
            f"Python allocations (100 sequential mails) {traced_peak / 1024 / 1024:.1f} MiB"
        )
        if args.verify:
            openssl = shutil.which("openssl")
            if openssl is None:
                print("openssl not found: signature not checked")
            else:
                sample = Path(folder) / "mail.eml"
                sample.write_bytes(signer.sign(compose_statement_bytes(mails[0], renderer)))
                result = subprocess.run(
                    [
                        openssl,
                        "smime",
                        "-verify",
                        "-in",
                        str(sample),
                        "-CAfile",
                        str(cert),
                        "-out",
                        "/dev/null",
                    ],
                    capture_output=True,
                    check=False,
                )
                print(f"openssl smime -verify: {result.stderr.decode().strip()}")
        best = max(rate, rate_async)
        verdict = "OK" if best >= TARGET_PER_SECOND else "BELOW TARGET"
        print(f"target {TARGET_PER_SECOND:.0f} mails/s: {verdict}")
        return 0 if best >= TARGET_PER_SECOND else 1


if __name__ == "__main__":
    raise SystemExit(main())

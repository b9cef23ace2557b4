"""Benchmark of the scale path: refreshes with 1 and 2 worker processes on PostgreSQL, and
delivery into Dovecot over LMTP next to the built-in store.

Part 1, workers. Creates a fresh PostgreSQL database (dropped at the end) holding 20,000
redevables, each with one test bank connection, none refreshed yet (every one is due at
once). Then runs the nightly refresh at one clock time with 1 worker process for
``--seconds``, stops it, and runs 2 worker processes for ``--seconds`` on the connections
still due. Each worker is a process of its own running ``CollectionService.run_due`` (the
collector's real claim path: ``FOR UPDATE SKIP LOCKED``, leases) in a loop. The refreshes are
counted in the database (``last_check_at`` set) twice a second; the rate is taken from the
first refresh seen to the end of the phase (process start-up left out). Both phases do the
same work: first refreshes of connections of the same mix.

While a phase runs, the bench samples where the time goes: CPU seconds of the workers and of
this database's PostgreSQL backends (``/proc/PID/stat``), the machine's busy share of its
cores (``/proc/stat``: another program's load shows there), and what the backends of the
database are doing or waiting for (``pg_stat_activity``, five times a second: CPU, ``Lock``
waits, ``IO`` or ``LWLock`` waits, client reads = waiting for the worker).

Part 2, delivery. The same ``--messages`` statement-sized mails delivered one at a time into
one box: into the built-in store (``MessageStore.deliver``, on this PostgreSQL database) and
into a private Dovecot (``LmtpSink.deliver``: a Message-ID lookup over IMAP, then LMTP), then
the built-in store's messages moved into another box of the Dovecot by ``mailbox move``'s
code (``move_to_dovecot``). Prints messages/s for each.

Usage::

    python bench/scale_bench.py                          # 20,000 connections, 90 s a phase
    python bench/scale_bench.py --connections 2000 --seconds 20 --messages 100   # quick look
    python bench/scale_bench.py --skip-workers           # delivery only

Needs PostgreSQL on 127.0.0.1:5432 (``--admin-url``) and, for part 2, Dovecot 2.3.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import os
import shutil
import signal
import smtplib
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from releves_mailer.clock import PARIS, ManualClock, SystemClock
from releves_mailer.collect.connections import add_connection, build_test_bank
from releves_mailer.collect.scheduler import RefreshPlan
from releves_mailer.collect.service import CollectionService
from releves_mailer.config import load_config
from releves_mailer.daemon.bootstrap import initialise_data_dir
from releves_mailer.db import Database
from releves_mailer.db.migrate import upgrade
from releves_mailer.db.models import BankConnection, Periodicity, Redevable
from releves_mailer.mailbox.dovecot.lmtp import LmtpSink
from releves_mailer.mailbox.dovecot.move import move_to_dovecot
from releves_mailer.mailbox.dovecot.setup import DovecotSetup
from releves_mailer.mailbox.store import MessageStore
from releves_mailer.portfolio.accounts import AccountInput, create_account
from releves_mailer.signing.secrets import KeyRing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test helpers
from tests.factories import Holder, Spec, add_portfolio, make_nic, make_siren

DOMAIN = "bench.localhost"
#: The night the workers refresh in (any time would do: never-refreshed connections are due).
NIGHT = dt.datetime(2026, 3, 3, 2, 0, tzinfo=PARIS)
TARGET_RATIO = 1.7
P = Periodicity
MIX = (
    Spec(P.JOURNALIERE),
    Spec(P.HEBDOMADAIRE, day=2),
    Spec(P.MENSUELLE, day=0),
    Spec(P.MENSUELLE, day=15, include_pending=True),
    Spec(P.TRIMESTRIELLE, month=1, day=1),
)
_TICKS = os.sysconf("SC_CLK_TCK")


# -- measuring -------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class Sampler:
    """Refresh counts, CPU of workers and backends, and the backends' wait events."""

    def __init__(self, url: str, workers: list[int]) -> None:
        self.engine = create_async_engine(url, poolclass=NullPool)
        self.workers = workers
        self.counts: list[tuple[float, int]] = []
        self.backend_cpu: dict[int, tuple[float, float]] = {}  # pid: (first, last)
        self.worker_cpu: dict[int, tuple[float, float]] = {}
        self.waits: collections.Counter[str] = collections.Counter()
        self.samples = 0
        self.machine_start = machine_ticks()
        self.machine_end = self.machine_start

    async def run(self, stop: asyncio.Event) -> None:
        tick = 0
        async with self.engine.connect() as connection:
            while not stop.is_set():
                rows = (
                    await connection.execute(
                        text(
                            "SELECT pid, state, wait_event_type, wait_event FROM "
                            "pg_stat_activity WHERE datname = current_database() "
                            "AND pid <> pg_backend_pid()"
                        )
                    )
                ).all()
                self.samples += 1
                for pid, state, kind, event in rows:
                    if state == "active":
                        self.waits[f"{kind}:{event}" if kind else "CPU (running)"] += 1
                    elif state == "idle in transaction":
                        self.waits["idle in transaction (waiting for the worker)"] += 1
                    else:
                        self.waits["idle (no work asked)"] += 1
                    self._cpu(self.backend_cpu, pid)
                for pid in self.workers:
                    self._cpu(self.worker_cpu, pid)
                if tick % 2 == 0:
                    count = await connection.scalar(
                        text("SELECT count(*) FROM bank_connection WHERE last_check_at IS NOT NULL")
                    )
                    await connection.commit()
                    self.counts.append((time.monotonic(), int(count or 0)))
                    self.machine_end = machine_ticks()
                tick += 1
                await asyncio.sleep(0.2)
        await self.engine.dispose()

    @staticmethod
    def _cpu(table: dict[int, tuple[float, float]], pid: int) -> None:
        seconds = cpu_seconds(pid)
        if seconds is not None:
            first = table.get(pid, (seconds, seconds))[0]
            table[pid] = (first, seconds)

    def rate(self) -> tuple[int, float]:
        """Refreshes and seconds from the first refresh seen to the last sample."""
        if not self.counts:
            return 0, 0.0
        base = self.counts[0][1]
        moving = [(t, c) for t, c in self.counts if c > base]
        if not moving:
            return 0, 0.0
        # From the last sample before the first refresh (the refresh started in between).
        start = max((t for t, c in self.counts if c == base), default=moving[0][0])
        end_t, end_c = self.counts[-1]
        return end_c - base, end_t - start


# -- part 1: workers -------------------------------------------------------------------------


async def build_portfolio(url: str, data: Path, connections: int) -> None:
    config = load_config(data / "releves-mailer.toml")
    clock = ManualClock(NIGHT - dt.timedelta(days=1))
    keyring = KeyRing.from_file(config.path(config.secrets.key_file))
    bank = build_test_bank(config, clock)
    database = Database(url)
    try:
        await upgrade(database)
        specs = [MIX[index % len(MIX)] for index in range(connections)]
        _account, ids = await add_portfolio(
            database, clock.now(), specs, holder=Holder(login="bench"), first_index=0
        )
        for start in range(0, len(ids), 500):
            async with database.session() as session:
                chunk = ids[start : start + 500]
                sirens = dict(
                    (
                        await session.execute(
                            select(Redevable.id, Redevable.siren).where(Redevable.id.in_(chunk))
                        )
                    ).all()
                )
                for redevable_id in chunk:
                    access, _token = bank.open_connection(sirens[redevable_id])
                    await add_connection(
                        session,
                        redevable_id=redevable_id,
                        provider=bank.name,
                        access=access,
                        bank_name=bank.display_name,
                        keyring=keyring,
                        now=clock.now(),
                        message="Connexion créée (banc d'essai)",
                    )
        async with database.session() as session:
            made = await session.scalar(select(func.count()).select_from(BankConnection))
        assert made == connections, made
    finally:
        await database.dispose()


async def worker(url: str, data: Path) -> None:
    """One worker process: the nightly refresh at :data:`NIGHT`, round after round."""
    config = load_config(data / "releves-mailer.toml")
    clock = ManualClock(NIGHT)
    keyring = KeyRing.from_file(config.path(config.secrets.key_file))
    bank = build_test_bank(config, clock)
    database = Database(url)
    try:
        collection = CollectionService(
            database,
            clock,
            {bank.name: bank},
            keyring,
            plan=RefreshPlan.from_config(config.collection),
        )
        while (await collection.run_due(refresh=True)).refresh_count:
            pass
    finally:
        await database.dispose()


async def phase(url: str, data: Path, processes: int, seconds: float) -> dict[str, float]:
    command = [sys.executable, __file__, "--worker", url, "--data", str(data)]
    procs = [await asyncio.create_subprocess_exec(*command) for _ in range(processes)]
    sampler = Sampler(url, [proc.pid for proc in procs])
    stop = asyncio.Event()
    sampling = asyncio.create_task(sampler.run(stop))
    waits = [asyncio.create_task(proc.wait()) for proc in procs]
    # The phase ends after ``seconds``, or earlier when the workers ran out of work.
    await asyncio.wait(waits, timeout=seconds)
    stop.set()
    await sampling
    for proc in procs:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    await asyncio.gather(*waits)
    done, elapsed = sampler.rate()
    busy0, total0 = sampler.machine_start
    busy1, total1 = sampler.machine_end
    worker_cpu = sum(last - first for first, last in sampler.worker_cpu.values())
    backend_cpu = sum(last - first for first, last in sampler.backend_cpu.values())
    span = sampler.counts[-1][0] - sampler.counts[0][0] if sampler.counts else 1.0
    rate = done / elapsed if elapsed else 0.0
    print(f"\n{processes} worker process(es), {seconds:.0f} s")
    print(f"  refreshes          {done} in {elapsed:.1f} s = {rate:.1f} refreshes/s")
    print(
        f"  workers CPU        {worker_cpu:.1f} s ({worker_cpu / span:.2f} cores, "
        f"{1000 * worker_cpu / max(done, 1):.1f} ms per refresh)"
    )
    print(
        f"  PostgreSQL CPU     {backend_cpu:.1f} s ({backend_cpu / span:.2f} cores, "
        f"{1000 * backend_cpu / max(done, 1):.1f} ms per refresh; this database's backends)"
    )
    cores = os.cpu_count() or 1
    busy = (busy1 - busy0) / max(total1 - total0, 1)
    others = max(busy * cores - (worker_cpu + backend_cpu) / span, 0.0)
    print(
        f"  machine            {busy * 100:.0f} % busy of {cores} cores ({busy * cores:.2f} "
        f"cores, of which {others:.2f} not this bench's: other programs, PostgreSQL's own)"
    )
    total = sum(sampler.waits.values()) or 1
    print(f"  backends sampled   {sampler.samples} times (what each backend was doing):")
    for what, count in sampler.waits.most_common(8):
        print(f"    {100 * count / total:5.1f} %  {what}")
    return {
        "rate": rate,
        "workers_cpu": worker_cpu / span,
        "pg_cpu": backend_cpu / span,
        "busy": busy,
        "others": others,
        "per_refresh": 1000 * (worker_cpu + backend_cpu) / max(done, 1),
    }


async def workers_part(args: argparse.Namespace, url: str, data: Path) -> None:
    started = time.perf_counter()
    await build_portfolio(url, data, args.connections)
    print(
        f"portfolio          {args.connections} redevables, one test bank connection each "
        f"({time.perf_counter() - started:.1f} s to build)"
    )
    one = await phase(url, data, 1, args.seconds)
    two = await phase(url, data, 2, args.seconds)
    ratio = two["rate"] / one["rate"] if one["rate"] else 0.0
    verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
    print(f"\nratio 2 workers / 1 worker: {ratio:.2f}x (target {TARGET_RATIO}x: {verdict})")
    print(
        f"  CPU per refresh (workers + PostgreSQL backends): {one['per_refresh']:.1f} ms with "
        f"1 worker, {two['per_refresh']:.1f} ms with 2 (the work does not grow with workers "
        "when these are equal: what remains is cores)"
    )
    print("  where the time goes (cores used on average during each phase):")
    for label, figures in (("1 worker ", one), ("2 workers", two)):
        print(
            f"    {label}  workers {figures['workers_cpu']:.2f}, PostgreSQL backends "
            f"{figures['pg_cpu']:.2f}, not this bench {figures['others']:.2f}, machine "
            f"{figures['busy'] * 100:.0f} % busy"
        )
    if ratio < TARGET_RATIO:
        print(
            "  short of the target: with equal CPU per refresh, the second worker lacked a "
            "core (see 'not this bench'); lock waits would show as Lock:* above"
        )


# -- part 2: delivery ------------------------------------------------------------------------


def statement_mail(index: int, size: int) -> tuple[bytes, str]:
    message_id = f"<bench.{index}.{uuid.uuid4().hex[:8]}@{DOMAIN}>"
    body = ("0" * 119 + "\r\n") * (size // 121)
    raw = (
        f"From: Portail <portail@{DOMAIN}>\r\nTo: bench@{DOMAIN}\r\n"
        f"Subject: =?utf-8?q?Relev=C3=A9?= {index}\r\nMessage-ID: {message_id}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n" + body
    ).encode()
    return raw, message_id


def bare_lmtp(setup: DovecotSetup, box: str, mails: list[tuple[bytes, str]]) -> None:
    """The same mails over one LMTP session, no lookup: the ceiling of LMTP itself."""
    with smtplib.LMTP(setup.listen, setup.ports.lmtp, timeout=60) as lmtp:
        for raw, _message_id in mails:
            refused = lmtp.sendmail("", [box], raw)
            assert not refused, refused


async def delivery_part(args: argparse.Namespace, url: str, data: Path) -> None:
    from tests.mailbox.dovecot_instance import DOVECOT, running_dovecot

    if not Path(DOVECOT).exists():  # noqa: ASYNC240  (once, before anything runs)
        print("\ndelivery: Dovecot is not installed, part 2 skipped")
        return
    config = load_config(data / "releves-mailer.toml")
    clock = SystemClock()
    database = Database(url)
    await upgrade(database)
    logins = ("storebox", "lmtpbox", "barebox")
    async with database.session() as session:
        for index, login in enumerate(logins):
            siren = make_siren(900 + index)
            await create_account(
                session,
                clock,
                AccountInput(
                    login=login,
                    company_name="Banc",
                    siret=siren + make_nic(siren),
                    email=f"{login}@example.org",
                ),
                "mot de passe du banc",
            )
    mails = [statement_mail(index, args.message_size) for index in range(args.messages)]
    size = sum(len(raw) for raw, _ in mails)
    count = len(mails)

    def line(label: str, seconds: float, note: str) -> None:
        print(
            f"  {label:<22} {count / seconds:7.1f} messages/s "
            f"({size / seconds / 1e6:.2f} MB/s, {1000 * seconds / count:.1f} ms each; {note})"
        )

    print(f"\ndelivery of the same {count} mails of {args.message_size} bytes, one at a time")
    store = MessageStore(database, data / "messages", clock)
    folder = Path(tempfile.mkdtemp(prefix="releves-bench-dovecot-"))
    os.chmod(folder, 0o755)  # Dovecot's own processes run as another user
    try:
        started = time.perf_counter()
        for raw, message_id in mails:
            await store.deliver(f"storebox@{DOMAIN}", raw, message_id)
        builtin = time.perf_counter() - started
        line("built-in store", builtin, "MessageStore.deliver on PostgreSQL, file fsynced")
        async with running_dovecot(
            folder,
            database_url=url,
            domain=DOMAIN,
            certificate=config.path(config.tls.certificate),
            key=config.path(config.tls.key),
        ) as setup:
            sink = LmtpSink(setup)
            started = time.perf_counter()
            for raw, message_id in mails:
                await sink.deliver(f"lmtpbox@{DOMAIN}", raw, message_id)
            lmtp = time.perf_counter() - started
            line(
                "Dovecot, LmtpSink",
                lmtp,
                "per mail: IMAP STARTTLS, master login, SEARCH Message-ID, then LMTP",
            )
            started = time.perf_counter()
            await asyncio.to_thread(bare_lmtp, setup, f"barebox@{DOMAIN}", mails)
            bare = time.perf_counter() - started
            line("Dovecot, bare LMTP", bare, "one LMTP session, no lookup")
            print(f"  {'Dovecot / built-in':<22} {builtin / lmtp:7.2f} (LmtpSink)")
            started = time.perf_counter()
            report = await move_to_dovecot(store, setup)
            move = time.perf_counter() - started
            assert (report.moved, report.found) == (count, 0), report
            line("mailbox move", move, "the built-in store's box appended over IMAP")
    finally:
        await store.close()
        await database.dispose()
        shutil.rmtree(folder, ignore_errors=True)


# -- main ------------------------------------------------------------------------------------


async def admin(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def run(args: argparse.Namespace) -> int:
    name = f"scale_bench_{uuid.uuid4().hex[:10]}"
    url = make_url(args.admin_url).set(database=name).render_as_string(hide_password=False)
    await admin(args.admin_url, f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory(prefix="scale-bench-") as folder:
            data = Path(folder) / "data"
            await initialise_data_dir(data, DOMAIN, SystemClock())
            # The workers read the database address from the command line, not the config.
            if not args.skip_workers:
                await workers_part(args, url, data)
            if not args.skip_delivery:
                await delivery_part(args, url, data)
    finally:
        await admin(args.admin_url, f'DROP DATABASE "{name}" WITH (FORCE)')
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--admin-url",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL database to create and drop the bench's database from",
    )
    parser.add_argument("--connections", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=90.0, help="length of each phase")
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--message-size", type=int, default=20_000)
    parser.add_argument("--skip-workers", action="store_true")
    parser.add_argument("--skip-delivery", action="store_true")
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        asyncio.run(worker(args.worker, args.data))
        return 0
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of the scale path: refreshes with 1 and 2 worker processes on PostgreSQL, and
delivery into Dovecot over LMTP next to the built-in store.

Part 1, workers. Creates a fresh PostgreSQL database (dropped at the end) holding 20,000
redevables, each with one test bank connection, none refreshed yet (every one is due at
once), and starts two worker processes, each running ``CollectionService.run_due`` (the
collector's real claim path: ``FOR UPDATE SKIP LOCKED``, leases) in a loop at one night's
clock time. The second worker is stopped (SIGSTOP) and let go (SIGCONT) in turn:
``--cycles`` pairs of ``--seconds`` windows, one with 1 worker running, one with 2. Windows
alternate because the machine is shared: a load from outside that comes and goes falls on
both, where two long phases one after the other would each get a different share of it.
Refreshes are counted in the database (``last_check_at`` set) at each window's ends; the
windows open at the first refresh (process start-up left out). All windows do the same
work: first refreshes of connections of one mix.

During each window the bench takes where the time goes: CPU seconds of the workers and of
this database's PostgreSQL backends (``/proc/PID/stat``), the machine's busy cores
(``/proc/stat``: other programs' load shows there), and what the database's backends are
doing or waiting for (``pg_stat_activity`` five times a second: running, ``Lock`` waits,
``IO`` or ``LWLock`` waits, idle in a transaction while their worker computes).

Part 2, delivery. The same ``--messages`` statement-sized mails delivered one at a time,
each way into a box of its own: into the built-in store (``MessageStore.deliver`` on this
PostgreSQL database), into a private Dovecot through ``LmtpSink.deliver`` (a Message-ID
lookup over IMAP, then LMTP), over one bare LMTP session (no lookup: LMTP's own ceiling),
and the built-in store's box moved into Dovecot by ``mailbox move``'s code
(``move_to_dovecot``). Prints messages/s for each.

Usage::

    python bench/scale_bench.py                                  # 20,000 connections
    python bench/scale_bench.py --connections 2000 --cycles 2 --messages 100   # quick look
    python bench/scale_bench.py --skip-workers                   # delivery only

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
from dataclasses import dataclass, field
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


@dataclass
class Mode:
    """What the bench saw while ``workers`` worker processes ran."""

    workers: int
    refreshes: int = 0
    seconds: float = 0.0
    workers_cpu: float = 0.0
    backends_cpu: float = 0.0
    busy_ticks: int = 0
    total_ticks: int = 0
    waits: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def rate(self) -> float:
        return self.refreshes / self.seconds if self.seconds else 0.0

    def show(self) -> None:
        cores = os.cpu_count() or 1
        span = self.seconds or 1.0
        busy = self.busy_ticks / max(self.total_ticks, 1) * cores
        others = max(busy - (self.workers_cpu + self.backends_cpu) / span, 0.0)
        print(f"\n{self.workers} worker process(es) running, {self.seconds:.0f} s in all")
        print(f"  refreshes          {self.refreshes} = {self.rate:.1f} refreshes/s")
        print(
            f"  workers CPU        {self.workers_cpu:.1f} s ({self.workers_cpu / span:.2f} cores)"
        )
        print(
            f"  PostgreSQL CPU     {self.backends_cpu:.1f} s ({self.backends_cpu / span:.2f} cores,"
            " this database's backends)"
        )
        print(f"  CPU per refresh    {self.per_refresh:.1f} ms (workers + PostgreSQL backends)")
        print(
            f"  machine            {busy:.2f} of {cores} cores busy, {others:.2f} of them not "
            "this bench's (other programs, PostgreSQL's own processes)"
        )
        total = sum(self.waits.values()) or 1
        print("  database backends, sampled 5 times a second:")
        for what, count in self.waits.most_common(8):
            print(f"    {100 * count / total:5.1f} %  {what}")

    @property
    def per_refresh(self) -> float:
        return 1000 * (self.workers_cpu + self.backends_cpu) / max(self.refreshes, 1)


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


_ACTIVITY = text(
    "SELECT pid, state, wait_event_type, wait_event FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)
_REFRESHED = text("SELECT count(*) FROM bank_connection WHERE last_check_at IS NOT NULL")


async def alternate(
    url: str, data: Path, cycles: int, seconds: float, nice: int
) -> tuple[Mode, Mode]:
    """Two worker processes; the second one stopped (SIGSTOP) during the 1-worker windows
    and let go (SIGCONT) during the 2-worker windows, alternately, so that a change of the
    machine's load from outside falls on both."""
    command = [sys.executable, __file__, "--worker", url, "--data", str(data), "--nice", str(nice)]
    # Each worker in a session of its own, as each daemon is a service of its own: with the
    # kernel's autogroups, CPU is shared fairly between sessions, so workers started in the
    # bench's session would share one session's share of a busy machine between them.
    first, second = [
        await asyncio.create_subprocess_exec(*command, start_new_session=True) for _ in range(2)
    ]
    modes = {1: Mode(1), 2: Mode(2)}
    backends: set[int] = set()
    engine = create_async_engine(url, poolclass=NullPool)

    def backends_cpu() -> float:
        return sum(cpu_seconds(pid) or 0.0 for pid in backends)

    try:
        async with engine.connect() as connection:

            async def refreshed() -> int:
                count = await connection.scalar(_REFRESHED)
                await connection.commit()
                return int(count or 0)

            # Start-up (imports, first claims) left out: the windows open at the first refresh.
            base = await refreshed()
            while await refreshed() == base:  # noqa: ASYNC110  (polling another process)
                await asyncio.sleep(0.2)
            for _cycle in range(cycles):
                for workers in (1, 2):
                    mode = modes[workers]
                    second.send_signal(signal.SIGSTOP if workers == 1 else signal.SIGCONT)
                    for row in (await connection.execute(_ACTIVITY)).all():
                        backends.add(row[0])
                    start = (
                        time.monotonic(),
                        await refreshed(),
                        (cpu_seconds(first.pid) or 0.0) + (cpu_seconds(second.pid) or 0.0),
                        backends_cpu(),
                        machine_ticks(),
                    )
                    while time.monotonic() - start[0] < seconds:
                        for pid, state, kind, event in (await connection.execute(_ACTIVITY)).all():
                            backends.add(pid)
                            if state == "active":
                                what = f"{kind}:{event}" if kind else "CPU (running)"
                            elif state == "idle in transaction":
                                what = "idle in transaction (waiting for its worker)"
                            else:
                                what = "idle (no work asked)"
                            mode.waits[what] += 1
                        await connection.commit()
                        await asyncio.sleep(0.2)
                    end_ticks = machine_ticks()
                    mode.seconds += time.monotonic() - start[0]
                    mode.refreshes += await refreshed() - start[1]
                    mode.workers_cpu += (
                        (cpu_seconds(first.pid) or 0.0) + (cpu_seconds(second.pid) or 0.0)
                    ) - start[2]
                    mode.backends_cpu += backends_cpu() - start[3]
                    mode.busy_ticks += end_ticks[0] - start[4][0]
                    mode.total_ticks += end_ticks[1] - start[4][1]
    finally:
        await engine.dispose()
        for proc in (first, second):
            if proc.returncode is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
            await proc.wait()
    return modes[1], modes[2]


async def workers_part(args: argparse.Namespace, url: str, data: Path) -> None:
    started = time.perf_counter()
    await build_portfolio(url, data, args.connections)
    print(
        f"portfolio          {args.connections} redevables, one test bank connection each "
        f"({time.perf_counter() - started:.1f} s to build)"
    )
    print(
        f"refresh windows    {args.cycles} x ({args.seconds:.0f} s with 1 worker, "
        f"{args.seconds:.0f} s with 2), alternately"
    )
    if args.nice:
        print(f"workers' priority  nice {args.nice} (the machine's other programs at 0)")
    one, two = await alternate(url, data, args.cycles, args.seconds, args.nice)
    one.show()
    two.show()
    ratio = two.rate / one.rate if one.rate else 0.0
    verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
    print(f"\nratio 2 workers / 1 worker: {ratio:.2f}x (target {TARGET_RATIO}x: {verdict})")
    print(
        f"  CPU per refresh: {one.per_refresh:.1f} ms with 1 worker, {two.per_refresh:.1f} ms "
        "with 2 (equal: a second worker adds no work per refresh, no lock contention)"
    )
    if ratio < TARGET_RATIO:
        print(
            "  short of the target: where the 2-worker windows' cores went is above (workers, "
            "PostgreSQL, other programs); lock waits show as Lock:* among the backends"
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
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each window")
    parser.add_argument("--cycles", type=int, default=6, help="pairs of windows (1 then 2)")
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--message-size", type=int, default=20_000)
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="the workers' priority (negative, as root: ahead of the machine's other programs)",
    )
    parser.add_argument("--skip-workers", action="store_true")
    parser.add_argument("--skip-delivery", action="store_true")
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        if args.nice:
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        asyncio.run(worker(args.worker, args.data))
        return 0
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())

"""IMAP benchmark: our server against a private Dovecot over the same 10,000 statement mails.

Usage::

    .venv/bin/python bench/imap_bench.py [--count 10000] [--clients 50] [--repeat 7]
    .venv/bin/python bench/imap_bench.py --serve --data DIR --port 1143   # for imaptest
    .venv/bin/python bench/imap_bench.py --serve-dovecot --data DIR --port 1144

The data set is statement-like mails of about 4 KB (a short French text body and one
base64 CFONB attachment) with internal dates spread over 400 days. Our server runs in a
child process (so that client and server do not share a GIL); Dovecot, when Debian's
``dovecot-imapd`` is installed, runs privately on a high loopback port over a Maildir with the
same messages and the same internal dates. Both get one warm-up pass before timing, then
are measured in turns.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import datetime as dt
import gc
import imaplib
import itertools
import os
import pstats
import pwd
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from releves_mailer.clock import SystemClock  # noqa: E402
from releves_mailer.config import AuthSection, ImapSection  # noqa: E402
from releves_mailer.daemon.gc_tuning import tune_garbage_collector  # noqa: E402
from releves_mailer.db import Database  # noqa: E402
from releves_mailer.db.migrate import upgrade  # noqa: E402
from releves_mailer.listeners import reserve_port  # noqa: E402
from releves_mailer.mailbox.imap.server import ImapServer  # noqa: E402
from releves_mailer.mailbox.sink import MailDelivery  # noqa: E402
from releves_mailer.mailbox.store import MessageStore  # noqa: E402
from releves_mailer.portfolio.auth import PasswordGuard  # noqa: E402
from releves_mailer.portfolio.logins import LocalBox  # noqa: E402

USER = "bench"
PASSWORD = "pass"
DOMAIN = "bench.test"
START = dt.datetime(2025, 1, 1, 8, 0, tzinfo=dt.UTC)
SINCE = "1-Jan-2026"


class AnyUser:
    """Accepts any login with the password ``pass`` (bench and imaptest only)."""

    async def authenticate(self, username: str, password: str) -> str | None:
        if password != PASSWORD or not username:
            return None
        name = username.lower()
        return name if "@" in name else f"{name}@{DOMAIN}"

    async def local_box(self, address: str) -> LocalBox | None:
        return LocalBox(address.lower(), 1, False)

    async def credential_stamps(self, addresses: Collection[str]) -> dict[str, bytes]:
        return dict.fromkeys(addresses, b"bench")


def statement_mail(index: int, rng: random.Random) -> tuple[bytes, dt.datetime]:
    when = START + dt.timedelta(minutes=index * 58)
    lines = []
    for line_no in range(20):
        amount = rng.randint(100, 999999)
        label = f"VIR SEPA CLIENT {rng.randint(1000, 9999)} FACTURE {line_no:04d}"
        lines.append(
            f"0430004{index:05d}EUR2 {line_no:011d}{when:%d%m%y}  {label:<40}{amount:013d}".ljust(
                120
            )
        )
    cfonb = ("\r\n".join(lines) + "\r\n").encode()
    attachment = base64.encodebytes(cfonb).decode().replace("\n", "\r\n")
    date = when.strftime("%a, %d %b %Y %H:%M:%S +0000")
    raw = (
        f"From: Portail <portail@{DOMAIN}>\r\n"
        f"Reply-To: noreply@{DOMAIN}\r\n"
        f"To: {USER}@{DOMAIN}\r\n"
        f"Subject: Relevé QUOTIDIEN du compte bancaire Société {index % 97} - Compte {index}\r\n"
        f"Date: {date}\r\n"
        f"Message-ID: <stmt-{index}@{DOMAIN}>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="=_b"\r\n'
        "\r\n"
        "--=_b\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "Bonjour,\r\n\r\nVeuillez trouver ci-joint le relevé du compte "
        f"FR76 3000 4000 0500 0000 {index:07d} 42.\r\n\r\nCordialement,\r\nLe portail\r\n"
        "--=_b\r\n"
        f'Content-Type: application/octet-stream; name="releve_{index}.cfonb"\r\n'
        f'Content-Disposition: attachment; filename="releve_{index}.cfonb"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
        f"{attachment}"
        "--=_b--\r\n"
    ).encode()
    return raw, when


def make_mails(count: int) -> list[tuple[bytes, dt.datetime]]:
    rng = random.Random(42)
    return [statement_mail(index, rng) for index in range(count)]


# region our server ###########################################################################


def database_url(data: Path) -> str:
    return os.environ.get("RELEVES_MAILER_BENCH_DATABASE_URL") or (
        f"sqlite+aiosqlite:///{data}/bench.sqlite3"
    )


async def populate(data: Path, mails: list[tuple[bytes, dt.datetime]]) -> None:
    database = Database(database_url(data))
    await upgrade(database)
    store = MessageStore(database, data / "messages", SystemClock())
    address = f"{USER}@{DOMAIN}"
    for start in range(0, len(mails), 500):
        await store.deliver_many(
            [
                MailDelivery(address, raw, f"<bench-{start + index}@{DOMAIN}>", internal_date=when)
                for index, (raw, when) in enumerate(mails[start : start + 500])
            ]
        )
    await store.close()
    await database.dispose()


async def serve(data: Path, port: int, ready: Path | None = None) -> None:
    database = Database(database_url(data))
    await upgrade(database)
    store = MessageStore(database, data / "messages", SystemClock())
    config = ImapSection(
        listen="127.0.0.1",
        port=port,
        tls_port=0,
        max_connections_per_login=1000,
        max_literal_size=64 * 1024 * 1024,
    )
    # imaptest logs in very often: a guard that never refuses nor slows down.
    lenient = AuthSection(
        max_failures_per_login_and_address=1000,
        max_failures_per_address=1000,
        delay_after_failures=1000,
    )
    guard = PasswordGuard(SystemClock(), lenient, DOMAIN)
    server = ImapServer(config, store, AnyUser(), None, SystemClock(), guard=guard)
    tune_garbage_collector()  # as the daemon does
    await server.start()
    if ready is not None:
        ready.write_text(str(server.port))  # noqa: ASYNC240  (tiny, once)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await server.stop()
    await store.close()
    await database.dispose()


def start_ours(data: Path, profile: Path | None = None) -> tuple[subprocess.Popen[bytes], int]:
    ready = data / "port"
    ready.unlink(missing_ok=True)
    command = [sys.executable, __file__, "--serve", "--data", str(data), "--port", "0"]
    command += ["--ready", str(ready)]
    if profile is not None:
        command += ["--profile", str(profile)]
    process = subprocess.Popen(command)
    for _ in range(600):
        if ready.exists() and ready.read_text():
            return process, int(ready.read_text())
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("our server did not start")


def peak_rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# endregion
# region dovecot ##############################################################################


def start_dovecot(
    base: Path, mails: list[tuple[bytes, dt.datetime]], port: int = 0
) -> tuple[subprocess.Popen[bytes], int] | None:
    """A private Dovecot over a Maildir holding ``mails``, on ``port`` (0: a free one)."""
    binary = shutil.which("dovecot") or (
        "/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None
    )
    if binary is None:
        return None
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        return None
    home = base / "home"
    maildir = home / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    for index, (raw, when) in enumerate(mails):
        path = maildir / "cur" / f"{int(when.timestamp())}.M{index}P1.bench,S={len(raw)}:2,"
        path.write_bytes(raw)
        os.utime(path, (when.timestamp(), when.timestamp()))
    for path in [home, *home.rglob("*")]:
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    for directory in (base.parent, base):
        directory.chmod(0o755)  # the mail user (nobody) must reach the Maildir
    port = port or reserve_port()
    config = base / "dovecot.conf"
    config.write_text(
        f"""
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
first_valid_uid = 1
mail_location = maildir:{maildir}
passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = static
  args = uid={nobody.pw_uid} gid={nobody.pw_gid} home={home}
}}
service imap-login {{
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
mail_max_userip_connections = 1000
"""
    )
    process = subprocess.Popen([binary, "-F", "-c", str(config)])
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    print("Dovecot did not start; see", base / "dovecot.log")
    return None


def serve_dovecot(data: Path, port: int, ready: Path | None) -> None:
    """Run an empty private Dovecot until SIGTERM (imaptest's yardstick)."""
    started = start_dovecot(data, [], port)
    if started is None:
        raise SystemExit("Dovecot: not installed or did not start")
    process, bound = started
    if ready is not None:
        ready.write_text(str(bound))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        while not stop.wait(0.5) and process.poll() is None:
            pass
    finally:
        process.terminate()
        process.wait(30)


# endregion
# region measures #############################################################################


def timed(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def connect(port: int) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", port)
    client.login(USER, PASSWORD)
    return client


class Server:
    """One server under test: its port, the processes whose CPU time it spends, the
    connection the measures share, the figures."""

    def __init__(self, name: str, port: int, pids: Callable[[], list[int]]) -> None:
        self.name = name
        self.port = port
        self.pids = pids
        self.client: imaplib.IMAP4 | None = None
        self.series: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}
        #: The bench's own CPU (all its threads) during each measure.
        self.client_cpu: dict[str, list[float]] = {}

    def cpu_seconds(self) -> float:
        """User and system CPU of the server's processes, with their reaped children."""
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(value) for value in fields[11:15])
        return total / os.sysconf("SC_CLK_TCK")


def client_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def dovecot_pids(master: int) -> Callable[[], list[int]]:
    """Dovecot's master and its live children (imap, imap-login, auth...)."""

    def pids() -> list[int]:
        found = [master]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(stat[1]) == master:
                    found.append(int(entry.name))
        return found

    return pids


def steps(server: Server, clients: int) -> list[tuple[str, Callable[[], object]]]:
    """The measures, in order; each leaves what the next needs on ``server``."""
    tags = itertools.count(1)

    def login_select() -> None:
        client = connect(server.port)
        typ, _ = client.select("INBOX")
        assert typ == "OK"
        server.client = client

    def shared() -> imaplib.IMAP4:
        assert server.client is not None
        return server.client

    def envelopes() -> None:
        typ, data = shared().uid("FETCH", "1:*", "(FLAGS ENVELOPE)")
        assert typ == "OK" and len(data) > 0

    def bodies() -> None:
        typ, data = shared().uid("FETCH", "1:*", "(BODY.PEEK[])")
        assert typ == "OK"
        size = sum(len(item[1]) for item in data if isinstance(item, tuple))
        server.series["bodies MB"] = [size / 1e6]

    def raw(command: str) -> Callable[[], None]:
        """``command`` on the shared connection, its answer read as bytes and not parsed:
        what the server alone takes (imaplib's parsing bounds the lines above)."""

        def run() -> None:
            client = shared()
            tag = b"RAW" + str(next(tags)).encode()
            client.sock.sendall(tag + b" " + command.encode() + b"\r\n")
            tail, size = b"", 0
            while True:
                chunk = client.sock.recv(1 << 20)
                assert chunk, "connection closed"
                size += len(chunk)
                tail = (tail + chunk)[-300:]
                end = tail.rfind(b"\r\n" + tag + b" ")
                if end >= 0 and tail.endswith(b"\r\n"):
                    assert tail[end + len(tag) + 3 :].startswith(b"OK"), tail
                    break
            server.series.setdefault(f"{command[:20]} bytes MB", [size / 1e6])

        return run

    def search() -> None:
        typ, data = shared().uid("SEARCH", None, "SINCE", SINCE)
        assert typ == "OK"
        server.series["search hits"] = [len(data[0].split())]

    def sort_by_date() -> None:
        typ, data = shared().uid("SORT", "(DATE)", "UTF-8", "ALL")
        assert typ == "OK"
        server.series["sorted"] = [len(data[0].split())]

    def one_client() -> None:
        own = connect(server.port)
        typ, data = own.select("INBOX")
        exists = int(data[0])
        typ, _ = own.fetch(f"{max(1, exists - 9)}:{exists}", "(FLAGS ENVELOPE BODY.PEEK[])")
        assert typ == "OK"
        own.logout()

    def concurrent() -> None:
        if server.client is not None:  # as many connections as clients, no more
            server.client.logout()
            server.client = None
        threads = [threading.Thread(target=one_client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    return [
        ("login+select", login_select),
        ("UID FETCH 1:* (FLAGS ENVELOPE)", envelopes),
        ("FETCH all bodies", bodies),
        ("same envelopes, raw client", raw("UID FETCH 1:* (FLAGS ENVELOPE)")),
        ("same bodies, raw client", raw("UID FETCH 1:* (BODY.PEEK[])")),
        ("UID SEARCH SINCE", search),
        ("SORT by date", sort_by_date),
        # Timed inside: only the SELECT, not the changes made before it.
        ("QRESYNC resync after 100 changes", lambda: qresync_resync(shared(), server.port)),
        (f"{clients} concurrent clients", concurrent),
    ]


def qresync_resync(changer: imaplib.IMAP4, port: int) -> float:
    """SELECT (QRESYNC (uidvalidity modseq)) after 90 flag changes and 10 expunges.

    ``changer`` has the box selected and makes the changes; the timed client knew the box's
    UIDVALIDITY and HIGHESTMODSEQ from before them, as a client coming back online does."""
    # The keyword of earlier runs goes first, so that every run's 90 stores are changes.
    typ, _ = changer.uid("STORE", "1:*", "-FLAGS.SILENT", "($Bench)")
    assert typ == "OK"
    client = connect(port)
    typ, _ = client.enable("QRESYNC")
    assert typ == "OK"
    typ, data = client.status("INBOX", "(UIDVALIDITY HIGHESTMODSEQ)")
    assert typ == "OK"
    words = data[0].decode().replace("(", " ").replace(")", " ").split()
    uidvalidity = words[words.index("UIDVALIDITY") + 1]
    modseq = words[words.index("HIGHESTMODSEQ") + 1]
    typ, data = changer.uid("SEARCH", None, "ALL")
    uids = data[0].split()
    rng = random.Random(len(uids))
    chosen = rng.sample(uids, 100)
    for uid in chosen[:90]:
        typ, _ = changer.uid("STORE", uid.decode(), "+FLAGS.SILENT", "($Bench)")
        assert typ == "OK"
    doomed = b",".join(chosen[90:]).decode()
    typ, _ = changer.uid("STORE", doomed, "+FLAGS.SILENT", "(\\Deleted)")
    assert typ == "OK"
    typ, _ = changer.uid("EXPUNGE", doomed)
    assert typ == "OK"

    def resync() -> None:
        typ, _ = client.select(f"INBOX (QRESYNC ({uidvalidity} {modseq}))")
        assert typ == "OK"

    elapsed = timed(resync)
    fetches = client.untagged_responses.get("FETCH", [])
    vanished = client.untagged_responses.get("VANISHED", [])
    assert len(fetches) >= 90 and vanished, (len(fetches), vanished)
    client.logout()
    return elapsed


def run_series(servers: list[Server], clients: int, repeat: int) -> None:
    """Each measure taken on each server in turn, ``repeat`` times (the order of the servers
    swapped every time), so that a change of the machine's load weighs on both alike."""
    for server in servers:  # warm-up: Dovecot builds its index, we fill the OS cache
        for _, step in steps(server, 5):
            step()
        if server.client is not None:
            server.client.logout()
            server.client = None
        server.series.clear()
    for round_no in range(repeat):
        order = servers if round_no % 2 == 0 else servers[::-1]
        plans = {server.name: steps(server, clients) for server in servers}
        for index in range(len(plans[servers[0].name])):
            key = plans[servers[0].name][index][0]
            # Reads that change nothing are short and noisy: several samples a round, the
            # servers alternating, for a steadier median.
            samples = READ_SAMPLES if key in READS else 1
            for sample in range(samples):
                for server in order if sample % 2 == 0 else order[::-1]:
                    measure(server, *plans[server.name][index])
        for server in servers:
            if server.client is not None:
                server.client.logout()
                server.client = None


#: The measures that only read, and how many samples of each a round takes.
READS = frozenset(
    {
        "UID FETCH 1:* (FLAGS ENVELOPE)",
        "FETCH all bodies",
        "same envelopes, raw client",
        "same bodies, raw client",
        "UID SEARCH SINCE",
        "SORT by date",
    }
)
READ_SAMPLES = 5


def measure(server: Server, key: str, step: Callable[[], object]) -> None:
    """Run ``step`` on ``server`` and record its wall time, the server's and the bench's CPU."""
    # The client's garbage collector would fire at random points of a measure and add its
    # pauses to whichever server was then measured.
    gc.collect()
    gc.disable()
    cpu = server.cpu_seconds()
    client_cpu = client_cpu_seconds()
    started = time.perf_counter()
    try:
        result = step()
    finally:
        elapsed = time.perf_counter() - started
        gc.enable()
    if isinstance(result, float):  # timed inside: the bench's CPU is not the measure's
        elapsed = result
    else:
        server.client_cpu.setdefault(key, []).append(client_cpu_seconds() - client_cpu)
    server.series.setdefault(key, []).append(elapsed)
    server.cpu.setdefault(key, []).append(server.cpu_seconds() - cpu)


_COUNTS = (
    "bodies MB",
    "search hits",
    "sorted",
    "UID FETCH 1:* (FLAGS bytes MB",
    "UID FETCH 1:* (BODY. bytes MB",
)


def client_bound(server: Server, key: str) -> bool:
    """Whether the bench's own CPU took 90 % of the measure or more (medians)."""
    spent = server.client_cpu.get(key)
    if not spent:
        return False
    return statistics.median(spent) >= 0.9 * statistics.median(server.series[key])


def show(title: str, server: Server) -> None:
    print(f"\n{title}")
    for key, values in server.series.items():
        if key in _COUNTS:
            print(f"  {key:<34} {values[0]:.1f}")
            continue
        print(
            f"  {key:<34} min {min(values):7.3f} s   median {statistics.median(values):7.3f} s"
            f"   server CPU median {statistics.median(server.cpu[key]):6.3f} s"
            + (
                f"   client CPU median {statistics.median(server.client_cpu[key]):6.3f} s"
                if key in server.client_cpu
                else ""
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--serve", action="store_true", help="only run our server")
    parser.add_argument(
        "--serve-dovecot", action="store_true", help="only run an empty private Dovecot"
    )
    parser.add_argument("--data", type=Path)
    parser.add_argument("--port", type=int, default=1143)
    parser.add_argument("--ready", type=Path)
    parser.add_argument("--no-dovecot", action="store_true")
    parser.add_argument(
        "--profile", type=Path, help="profile our server (cProfile) into this file; print it"
    )
    args = parser.parse_args()

    if args.serve:
        data = args.data or Path(tempfile.mkdtemp(prefix="imap-serve-"))
        data.mkdir(parents=True, exist_ok=True)
        if args.profile is None:
            asyncio.run(serve(data, args.port, args.ready))
            return
        profiler = cProfile.Profile()
        profiler.runcall(asyncio.run, serve(data, args.port, args.ready))
        profiler.dump_stats(args.profile)
        return
    if args.serve_dovecot:
        data = args.data or Path(tempfile.mkdtemp(prefix="imap-dovecot-"))
        data.mkdir(parents=True, exist_ok=True)
        serve_dovecot(data, args.port, args.ready)
        return

    base = Path(tempfile.mkdtemp(prefix="imap-bench-"))
    try:
        print(f"Generating {args.count} statement mails...")
        mails = make_mails(args.count)
        average = sum(len(raw) for raw, _ in mails) / len(mails)
        print(f"  average size {average:.0f} bytes")
        ours_dir = base / "ours"
        ours_dir.mkdir()
        elapsed = timed(lambda: asyncio.run(populate(ours_dir, mails)))
        print(f"Delivered into our store in {elapsed:.1f} s ({args.count / elapsed:.0f} msg/s)")

        process, port = start_ours(ours_dir, args.profile)
        servers = [Server("ours", port, lambda: [process.pid])]
        dovecot = None
        try:
            if args.no_dovecot:
                print("Dovecot: skipped (--no-dovecot)")
            else:
                started = start_dovecot(base / "dovecot", mails)
                if started is None:
                    print("Dovecot: not installed (apt-get install dovecot-imapd), ours only")
                else:
                    dovecot, dport = started
                    servers.append(Server("dovecot", dport, dovecot_pids(dovecot.pid)))
            run_series(servers, args.clients, args.repeat)
            peak = peak_rss_kb(process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
            if dovecot is not None:
                dovecot.terminate()
                dovecot.wait(30)
        if args.profile is not None:
            pstats.Stats(str(args.profile)).sort_stats("tottime").print_stats(30)
        show("releves-mailer IMAP server", servers[0])
        print(f"  peak memory (server process RSS)   {peak / 1024:.0f} MB")
        if len(servers) == 1:
            return
        ours, theirs = servers
        show("Dovecot (same data, same client)", theirs)
        print("\nratio ours / Dovecot (medians)            wall  server CPU")
        bound = False
        for key, values in ours.series.items():
            if key in theirs.series and key not in _COUNTS:
                wall = statistics.median(values) / max(statistics.median(theirs.series[key]), 1e-9)
                mine, other = statistics.median(ours.cpu[key]), statistics.median(theirs.cpu[key])
                # CPU times come in clock ticks (10 ms): below 3 ticks a ratio means nothing.
                cpu = f"{mine / other:8.2f}x" if min(mine, other) >= 0.03 else "       -"
                mark = " *" if client_bound(ours, key) and client_bound(theirs, key) else ""
                bound = bound or bool(mark)
                print(f"  {key:<34} {wall:5.2f}x {cpu}{mark}")
        print("(the QRESYNC line's server CPU includes the 100 changes made before the SELECT)")
        if bound:
            print(
                "* bound by the client: with both servers the bench's own CPU took 90 % of the"
                " time or more,\n  so the line measures the client library (see the raw lines)"
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

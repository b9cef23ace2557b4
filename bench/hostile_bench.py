"""Hostile IMAP clients: the event loop's worst stall and the server's memory under attack.

Usage::

    .venv/bin/python bench/hostile_bench.py [--size-mb 60]

Starts our IMAP server in a child process (``bench/imap_bench.py --serve``: the real server
over a real store, default limits), then, one attack at a time (issue 13 points 1, 3 and 11):
- LIST ``"*a*a*a*a*b"`` over a folder named with 300 ``a``;
- ten unauthenticated ``a LOGIN {60000000+}`` connections pushing their literal;
- one APPEND of a ``--size-mb`` message, three at once, and a FETCH of it.

A second client sends NOOP after NOOP all along; the longest NOOP round trip during an
attack is the event loop's worst stall, printed against the 100 ms target. The server's
peak RSS during each attack (``VmHWM``, reset through ``/proc/<pid>/clear_refs``) less its
RSS before is printed against the target of message size + 32 MB per transfer.
Exit status 1 when a figure misses its target.
"""

from __future__ import annotations

import argparse
import base64
import imaplib
import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from imap_bench import PASSWORD, USER, start_ours

STALL_TARGET = 0.100
MB = 1024 * 1024


def rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class NoopProbe:
    """A logged-in client sending NOOPs back to back; remembers each round trip."""

    def __init__(self, port: int) -> None:
        self.imap = imaplib.IMAP4("127.0.0.1", port)
        self.imap.login(USER, PASSWORD)
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            self.imap.noop()
            self.samples.append((started, time.perf_counter() - started))
            time.sleep(0.002)

    def worst_between(self, start: float, end: float) -> float:
        return max((lat for at, lat in self.samples if start <= at <= end), default=0.0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.imap.logout()


def big_message(size: int) -> bytes:
    payload = random.Random(1).randbytes(size * 3 // 4 - 2048)
    attachment = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    return (
        b"From: Portail <portail@bench.test>\r\nTo: bench@bench.test\r\n"
        b"Subject: Gros message\r\nMessage-ID: <big@bench.test>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="=_b"\r\n\r\n'
        b"--=_b\r\nContent-Type: text/plain\r\n\r\nBonjour.\r\n"
        b"--=_b\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + attachment + b"--=_b--\r\n"
    )


def raw_login(port: int) -> tuple[socket.socket, object]:
    sock = socket.create_connection(("127.0.0.1", port))
    reader = sock.makefile("rb")
    reader.readline()
    sock.sendall(f'l LOGIN {USER} "{PASSWORD}"\r\n'.encode())
    while not reader.readline().startswith(b"l "):
        pass
    return sock, reader


def append(port: int, raw: bytes) -> None:
    sock, reader = raw_login(port)
    try:
        sock.sendall(b"a APPEND INBOX {%d}\r\n" % len(raw))
        assert reader.readline().startswith(b"+")  # type: ignore[attr-defined]
        view = memoryview(raw)
        for start in range(0, len(raw), MB):
            sock.sendall(view[start : start + MB])
        sock.sendall(b"\r\n")
        while True:
            line = reader.readline()  # type: ignore[attr-defined]
            if line.startswith(b"a "):
                assert line.startswith(b"a OK"), line
                return
    finally:
        sock.close()


def fetch(port: int, size: int) -> None:
    imap = imaplib.IMAP4("127.0.0.1", port)
    try:
        imap.login(USER, PASSWORD)
        imap.select("INBOX", readonly=True)
        status, data = imap.uid("FETCH", "1", "(BODY.PEEK[])")
        first = data[0]
        assert status == "OK" and isinstance(first, tuple) and len(first[1]) == size
    finally:
        imap.logout()


def list_attack(port: int) -> None:
    imap = imaplib.IMAP4("127.0.0.1", port)
    try:
        imap.login(USER, PASSWORD)
        imap.create("a" * 300)
        status, _ = imap.list('""', '"*a*a*a*a*b"')
        assert status == "OK"
    finally:
        imap.logout()


def preauth_literals(port: int) -> None:
    """Ten unauthenticated clients announce 60 MB literals and push data until cut off."""

    def one() -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.settimeout(30)
        try:
            sock.recv(4096)
            sock.sendall(b"a LOGIN {60000000+}\r\n")
            chunk = b"x" * 65536
            for _ in range(60000000 // len(chunk)):
                sock.sendall(chunk)
        except OSError:
            pass  # the server said BYE and closed
        finally:
            sock.close()

    threads = [threading.Thread(target=one) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)


def attack(
    name: str,
    pid: int,
    probe: NoopProbe,
    run: Callable[[], None],
    memory_target_mb: float | None,
) -> bool:
    time.sleep(0.5)
    before = rss_kb(pid, "VmRSS")
    exact = reset_peak(pid)
    peak_sampled = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_sampled
        while not done.is_set():
            peak_sampled = max(peak_sampled, rss_kb(pid, "VmRSS"))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    run()
    end = time.perf_counter()
    done.set()
    sampler.join()
    time.sleep(0.2)
    peak = max(rss_kb(pid, "VmHWM") if exact else 0, peak_sampled)
    growth = (peak - before) / 1024
    stall = probe.worst_between(start, end + 0.1)
    ok = stall <= STALL_TARGET
    line = (
        f"{name:<34} {end - start:7.2f} s   worst NOOP {stall * 1000:7.1f} ms "
        f"(target {STALL_TARGET * 1000:.0f})"
    )
    if memory_target_mb is not None:
        ok = ok and growth <= memory_target_mb
        line += f"   RSS +{growth:6.0f} MB (target {memory_target_mb:.0f})"
    print(line + ("" if ok else "   MISSED"), flush=True)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=60)
    args = parser.parse_args()
    size = args.size_mb * 1000 * 1000
    raw = big_message(size)
    data = Path(tempfile.mkdtemp(prefix="hostile-bench-"))
    process, port = start_ours(data)
    ok = True
    try:
        probe = NoopProbe(port)
        per_transfer = len(raw) / MB + 32
        print(f"server pid {process.pid}, message {len(raw) / MB:.1f} MiB", flush=True)
        ok &= attack(
            "LIST *a*a*a*a*b, 300 'a'", process.pid, probe, lambda: list_attack(port), None
        )
        ok &= attack(
            "10 x pre-auth LOGIN {60000000+}",
            process.pid,
            probe,
            lambda: preauth_literals(port),
            32,
        )
        ok &= attack(
            "APPEND 1 message", process.pid, probe, lambda: append(port, raw), per_transfer
        )

        def three() -> None:
            threads = [threading.Thread(target=append, args=(port, raw)) for _ in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        ok &= attack("APPEND 3 at once", process.pid, probe, three, 3 * per_transfer)
        ok &= attack(
            "FETCH BODY.PEEK[]", process.pid, probe, lambda: fetch(port, len(raw)), per_transfer
        )
        probe.close()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        shutil.rmtree(data, ignore_errors=True)
    print("all within targets" if ok else "some figures missed their target")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

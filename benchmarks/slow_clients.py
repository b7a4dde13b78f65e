"""Slow clients against ``cds-service serve``: the p99 of normal requests, with and without nginx.

    python -m benchmarks.slow_clients          # 1,000 slow connections, CDS_PROXY=nginx then off
    python -m benchmarks.slow_clients --slow 200 --proxy off

Each slow connection sends one byte every 2 s: half of them the request line and headers, half a
body after complete headers that declare it. One thread drives them all and opens a new one for
each the server cuts, so the count stays up. Meanwhile one client sends normal requests one after
another (a new connection each: ``GET /healthz`` and a small ``patient-view`` call, alternately)
and the p99 of their latency is compared with the same measurement before the attack.

The test suite (tests/integration/test_slow_clients.py) uses the same parts and asserts the figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
SERVICE = "footdrop-im-injection"
INTERVAL = 2.0  # seconds between two bytes of one slow connection
READY_SECONDS = 90.0
SPACING = 0.05  # between two measured requests: 200 of them span about 11 s


def raise_open_files_limit() -> int:
    """The soft RLIMIT_NOFILE raised to the hard limit; the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class Served:
    """``cds-service serve`` in its own session on 127.0.0.1; all its processes stopped on exit."""

    def __init__(self, settings: Mapping[str, str], log: Path, cwd: Path) -> None:
        self.port = free_port()
        self.log = log
        self.cwd = cwd
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
        self.env.update({"HOST": "127.0.0.1", "PORT": str(self.port), "WEB_CONCURRENCY": "2"})
        self.env.update(settings)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Served:
        command = [sys.executable, "-m", "cds_service", "serve"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited with {self.process.returncode}: {self.tail()}")
            if request("127.0.0.1", self.port, "GET", "/healthz", timeout=2).status == 200:
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"not answering /healthz after {READY_SECONDS:.0f} s: {self.tail()}")

    def stop(self) -> None:
        """SIGTERM to the whole process group, SIGKILL after 30 s."""
        process = self.process
        if process is None:
            return
        for signo, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 30.0)):
            if not _process_group_alive(process.pid):
                break
            try:
                os.killpg(process.pid, signo)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _process_group_alive(process.pid):
                if process.poll() is None:
                    time.sleep(0.1)
                    continue
                time.sleep(0.1)  # the leader is gone; its children may still be stopping
        if process.poll() is None:
            process.wait(timeout=30)

    def tail(self, size: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-size:]

    def __enter__(self) -> Served:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Answer:
    status: int  # 0: no answer (refused, reset or timed out)
    seconds: float


def request(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    timeout: float = 10.0,
) -> Answer:
    """One request on a new connection; its status and how long the whole exchange took."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    started = time.perf_counter()
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        status = response.status
    except (OSError, http.client.HTTPException):
        status = 0
    finally:
        connection.close()
    return Answer(status, time.perf_counter() - started)


def hook_body(port: int) -> bytes:
    """A small valid patient-view call: every prefetch key in discovery ``null`` ("known empty")."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", "/cds-services")
        services = json.loads(connection.getresponse().read())["services"]
    finally:
        connection.close()
    keys = next(s for s in services if s["id"] == SERVICE).get("prefetch", {})
    return json.dumps(
        {
            "hook": "patient-view",
            "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/example", "patientId": "p1"},
            "prefetch": dict.fromkeys(keys),
        }
    ).encode()


@dataclass
class Latencies:
    answers: list[Answer] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return sum(1 for a in self.answers if a.status != 200)

    @property
    def healthz_failures(self) -> int:
        return sum(1 for i, a in enumerate(self.answers) if i % 2 == 0 and a.status != 200)

    def percentile(self, share: float) -> float:
        ordered = sorted(a.seconds for a in self.answers)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    @property
    def p50(self) -> float:
        return self.percentile(0.50)

    @property
    def p99(self) -> float:
        return self.percentile(0.99)


def measure(
    port: int,
    body: bytes,
    count: int = 200,
    timeout: float = 10.0,
    budget: float = 120.0,
    spacing: float = SPACING,
) -> Latencies:
    """``count`` requests one after another, alternately ``GET /healthz`` and a hook call.

    ``spacing`` s apart, so that the measurement spans the client timeout (10 s) and the slow
    header connections being cut and reopened. Stops early after ``budget`` seconds (when nothing
    answers, each request waits ``timeout``).
    """
    result = Latencies()
    path = f"/cds-services/{SERVICE}"
    deadline = time.monotonic() + budget
    for index in range(count):
        if index % 2 == 0:
            answer = request("127.0.0.1", port, "GET", "/healthz", timeout=timeout)
        else:
            answer = request("127.0.0.1", port, "POST", path, body=body, timeout=timeout)
        result.answers.append(answer)
        if time.monotonic() > deadline:
            break
        time.sleep(spacing)
    return result


class SlowClients:
    """``count`` connections sending one byte every ``interval`` s, driven by one thread.

    Even-numbered ones send the request line and headers byte by byte (and, when a header is
    done, another header: they never finish); odd-numbered ones send complete headers declaring
    a 1 MB JSON body at once, then the body byte by byte. A connection the server closes or
    resets is counted as cut and replaced by a new one of the same kind.
    """

    TICK = 0.05
    HEADERS = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    HEADER_LINE = b"X-Slow: 1\r\n"
    BODY_HEADERS = (
        f"POST /cds-services/{SERVICE} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
    ).encode()

    def __init__(self, port: int, count: int, interval: float = INTERVAL) -> None:
        self.port = port
        self.count = count
        self.interval = interval
        self.sockets: list[socket.socket | None] = [None] * count
        self.progress = [0] * count
        self.opened = 0
        self.cut = 0
        self.connect_failures = 0
        self.answered = 0  # cut with an answer (a 408, say) rather than a bare close or reset
        self.bytes_sent = 0
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)

    @property
    def open_now(self) -> int:
        return sum(1 for s in self.sockets if s is not None)

    def start(self) -> SlowClients:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        for index in range(self.count):
            self._close(index)
        self._selector.close()

    def wait_all_open(self, seconds: float = 60.0) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.open_now >= self.count:
                return True
            time.sleep(0.1)
        return False

    def _open(self, index: int) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except OSError:
            self.connect_failures += 1
            return
        sock.setblocking(False)  # one byte never fills a send buffer; a full one counts as cut
        self.sockets[index] = sock
        self.progress[index] = 0
        self.opened += 1
        self._selector.register(sock, selectors.EVENT_READ, index)
        if index % 2 == 1:  # complete headers at once, then the body byte by byte
            self._send(index, self.BODY_HEADERS)

    def _close(self, index: int) -> None:
        sock = self.sockets[index]
        if sock is not None:
            self._selector.unregister(sock)
            sock.close()
            self.sockets[index] = None

    def _next_byte(self, index: int) -> bytes:
        sent = self.progress[index]
        if index % 2 == 1:
            return b" "  # whitespace inside a JSON body that never ends
        if sent < len(self.HEADERS):
            return self.HEADERS[sent : sent + 1]
        offset = (sent - len(self.HEADERS)) % len(self.HEADER_LINE)
        return self.HEADER_LINE[offset : offset + 1]

    def _send(self, index: int, data: bytes) -> None:
        sock = self.sockets[index]
        if sock is None:
            return
        try:
            sent = sock.send(data)
        except OSError:  # reset or closed: the server cut it
            sent = 0
        if sent != len(data):
            self._close(index)
            self.cut += 1
            return
        self.bytes_sent += sent
        if sent == 1:
            self.progress[index] += 1

    def _run(self) -> None:
        # Open them all first (a few per millisecond), then one byte each every `interval` s.
        for index in range(self.count):
            if self._stop.is_set():
                return
            self._open(index)
        # Every TICK seconds the next share of the connections sends its byte: each one sends one
        # byte every `interval` s, and this thread wakes 20 times a second, not 500. In between,
        # the selector says which connections the server answered or closed: they are replaced at
        # once, so the count stays up.
        per_tick = max(1, round(self.count * self.TICK / self.interval))
        next_at = time.monotonic()
        index = 0
        while not self._stop.is_set():
            next_at += self.TICK
            while (pause := next_at - time.monotonic()) > 0:
                for key, _ in self._selector.select(pause):
                    self._server_done(key.data)
            for _ in range(per_tick):
                if self.sockets[index] is None:
                    self._open(index)
                else:
                    self._send(index, self._next_byte(index))
                index = (index + 1) % self.count

    def _server_done(self, index: int) -> None:
        """Readable: the server answered or closed it; either way it is done with it."""
        sock = self.sockets[index]
        if sock is None:
            return
        try:
            if sock.recv(4096):
                self.answered += 1
        except BlockingIOError:
            return
        except OSError:
            pass
        self._close(index)
        self.cut += 1
        self._open(index)

    def __enter__(self) -> SlowClients:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Run:
    proxy: str
    slow: int
    before: Latencies
    during: Latencies
    slow_open_min: int
    slow_cut: int
    connect_failures: int

    def lines(self) -> list[str]:
        def ms(seconds: float) -> str:
            return f"{seconds * 1000:.1f} ms"

        b, d = self.before, self.during
        return [
            f"CDS_PROXY={self.proxy}, {self.slow} slow connections (1 byte / {INTERVAL:g} s)",
            f"  before: {len(b.answers)} requests, p50 {ms(b.p50)}, p99 {ms(b.p99)}, "
            f"{b.failures} failed",
            f"  during: {len(d.answers)} requests, p50 {ms(d.p50)}, p99 {ms(d.p99)}, "
            f"{d.failures} failed ({d.healthz_failures} of them /healthz); "
            f"p99 ratio {d.p99 / b.p99:.2f}",
            f"  slow connections: at least {self.slow_open_min} open while measuring, "
            f"{self.slow_cut} cut by the server and reopened, {self.connect_failures} refused",
        ]


def attack(
    port: int, slow: int, count: int = 200, settle: float = 2 * INTERVAL, timeout: float = 10.0
) -> tuple[Latencies, Latencies, SlowClients, int]:
    """Baseline, then ``slow`` slow connections held while the same requests are measured."""
    body = hook_body(port)
    measure(port, body, 20, timeout=timeout, spacing=0)  # warm-up: first requests of each worker
    before = measure(port, body, count, timeout=timeout)
    clients = SlowClients(port, slow)
    with clients:
        clients.wait_all_open()
        time.sleep(settle)  # every slow connection has sent a couple of bytes
        open_min = clients.open_now
        sampler_stop = threading.Event()

        def sample() -> None:
            nonlocal open_min
            while not sampler_stop.wait(0.05):
                open_min = min(open_min, clients.open_now)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            during = measure(port, body, count, timeout=timeout, budget=60.0)
        finally:
            sampler_stop.set()
            sampler.join()
    return before, during, clients, open_min


@contextmanager
def served(proxy: str, log: Path, cwd: Path) -> Iterator[Served]:
    with Served({"CDS_PROXY": proxy}, log, cwd) as server:
        yield server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slow", type=int, default=1000, help="slow connections (1000)")
    parser.add_argument("--requests", type=int, default=200, help="measured requests (200)")
    parser.add_argument("--proxy", choices=("nginx", "off", "both"), default="both")
    args = parser.parse_args(argv)
    limit = raise_open_files_limit()
    if limit < args.slow + 256:
        print(f"RLIMIT_NOFILE is {limit}: too low for {args.slow} connections", file=sys.stderr)
        return 2
    work = ROOT / "var" / "slow-clients"
    work.mkdir(parents=True, exist_ok=True)
    for proxy in ("nginx", "off") if args.proxy == "both" else (args.proxy,):
        with served(proxy, work / f"serve-{proxy}.log", work) as server:
            before, during, clients, open_min = attack(
                server.port, args.slow, args.requests, timeout=5.0
            )
        run = Run(proxy, args.slow, before, during, open_min, clients.cut, clients.connect_failures)
        print("\n".join(run.lines()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Hostile FHIR servers on loopback against the FHIR client: latency, stuck threads, memory.

    python -m benchmarks.fhir_hostile memory      # peak RSS of one hook call (7 keys) against a
                                                  # server answering 32 MB Bundles to everything
    python -m benchmarks.fhir_hostile dribble     # 24 hook calls against a server dribbling a byte
                                                  # every 0.3 s: latency, threads still stuck
    python -m benchmarks.fhir_hostile huge        # one call against an endless fast body

Each prints one JSON line. The client runs with the production defaults (0.4 s per read, 0.9 s
deadline, 64 workers); run it with PYTHONPATH pointing at another checkout to compare versions.
Memory is measured as VmHWM (peak resident set) of this process, so run one scenario per process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cds_service.edge.fhir_client import FetchPolicy, FhirClient

KEYS = {
    k: f"{t}?patient=p1"
    for k, t in [
        ("patient", "Patient"),
        ("conditions", "Condition"),
        ("procedures", "Procedure"),
        ("observations", "Observation"),
        ("medicationAdministrations", "MedicationAdministration"),
        ("deviceRequests", "DeviceRequest"),
        ("appointments", "Appointment"),
    ]
}


def status(field: str) -> int:
    """A VmHWM/VmRSS figure of this process, in MB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) // 1024
    return -1


def client() -> FhirClient:
    wanted: dict[str, Any] = {
        "timeout_seconds": 0.4,
        "deadline_seconds": 0.9,
        "max_workers": 64,
        "allowed_networks": ("127.0.0.0/8",),
    }
    known = {f.name for f in dataclasses.fields(FetchPolicy)}
    return FhirClient(FetchPolicy(**{k: v for k, v in wanted.items() if k in known}))


def serve(handler: Any) -> tuple[str, threading.Event]:
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0), backlog=512)
    listener.settimeout(0.05)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            threading.Thread(target=handler, args=(conn, stop), daemon=True).start()
        listener.close()

    threading.Thread(target=accept, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/fhir", stop


SHAPES = [
    b'{"resource":{"resourceType":"Condition","id":"x"}},',  # 0: kept resources
    b'{"resource":{"resourceType":"A"}},',  # 1: the most kept objects per byte
    b"{},",  # 2: the most transient objects per byte (nothing kept)
]


def memory(
    megabytes: float = 32, keys: float = 7, calls: float = 1, shape: float = 0
) -> dict[str, Any]:
    """``calls`` concurrent hook calls of ``keys`` keys, every answer a ``megabytes`` Bundle."""
    entry = SHAPES[int(shape)]
    count = int(megabytes * 1024 * 1024) // len(entry) - 10
    body = b'{"resourceType":"Bundle","entry":[' + entry * count + b'{"resource":{}}]}'

    def handler(conn: socket.socket, stop: threading.Event) -> None:
        with conn:
            conn.recv(65536)
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            with contextlib.suppress(OSError):
                conn.sendall(head)
                conn.sendall(body)  # no copy: the server shares one body between connections

    url, stop = serve(handler)
    before = status("VmHWM")
    fhir = client()
    queries = dict(list(KEYS.items())[: int(keys)])
    kept: list[Any] = []  # hold every answer, as hook calls evaluating at the same time would
    started = time.monotonic()
    with ThreadPoolExecutor(int(calls)) as hooks:
        kept = list(hooks.map(lambda _: fhir.fetch(url, "token", queries), range(int(calls))))
    elapsed = time.monotonic() - started
    time.sleep(15)  # let workers that outlive the call finish what they hold
    stop.set()
    return {
        "scenario": "memory",
        "body_mb": round(len(body) / 2**20, 1),
        "shape": entry.decode(),
        "keys": int(keys),
        "calls": int(calls),
        "keys_ok": sum(len(r.resources) for r in kept),
        "seconds": round(elapsed, 2),
        "failures": sorted({v for r in kept for v in r.failures.values()}),
        "peak_rss_mb_before": before,
        "peak_rss_mb": status("VmHWM"),
        "rss_mb_after": status("VmRSS"),
    }


def dribble() -> dict[str, Any]:
    def handler(conn: socket.socket, stop: threading.Event) -> None:
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Dribble: " + b"a" * 100_000:
                if stop.wait(0.3):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    url, stop = serve(handler)
    fhir = client()
    latencies: list[float] = []

    def hook(_: int) -> None:
        started = time.monotonic()
        fhir.fetch(url, "token", KEYS)
        latencies.append(time.monotonic() - started)

    with ThreadPoolExecutor(24) as pool:
        list(pool.map(hook, range(24)))
    stuck = {}
    for at in (1, 5, 20):
        time.sleep(at - (1 if at == 5 else 5 if at == 20 else 0))
        stuck[at] = busy_threads()

    bundle = b'{"resourceType":"Bundle","type":"searchset","entry":[]}'

    def healthy(conn: socket.socket, _stop: threading.Event) -> None:
        with conn:
            conn.recv(65536)
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(bundle)}\r\n\r\n".encode()
            conn.sendall(head + bundle)

    good, good_stop = serve(healthy)
    started = time.monotonic()
    after = fhir.fetch(good, "token", KEYS)
    healthy_seconds = time.monotonic() - started
    stop.set()
    good_stop.set()
    return {
        "scenario": "dribble",
        "calls": 24,
        "max_call_seconds": round(max(latencies), 2),
        "threads_in_fetch_after_s": stuck,
        "healthy_server_after": {
            "seconds": round(healthy_seconds, 2),
            "keys_ok": len(after.resources),
            "failures": sorted(set(after.failures.values())),
        },
    }


def busy_threads() -> int:
    names = {t.ident: t.name for t in threading.enumerate()}
    busy = 0
    for ident, frame in sys._current_frames().items():
        if not names.get(ident, "").startswith("fhir-fetch"):
            continue
        while frame is not None:
            if frame.f_code.co_name == "_fetch_key":
                busy += 1
                break
            frame = frame.f_back
    return busy


def huge() -> dict[str, Any]:
    def handler(conn: socket.socket, stop: threading.Event) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\n\r\n[")
            while not stop.is_set():
                try:
                    conn.sendall(b"0," * 32768)
                except OSError:
                    return
                time.sleep(0.002)

    url, stop = serve(handler)
    started = time.monotonic()
    result = client().fetch(url, "token", {"c": "Condition?patient=1"})
    elapsed = time.monotonic() - started
    stop.set()
    return {"scenario": "huge", "call_seconds": round(elapsed, 2), "failures": result.failures}


if __name__ == "__main__":
    scenario = {"memory": memory, "dribble": dribble, "huge": huge}[sys.argv[1]]
    args = [float(arg) for arg in sys.argv[2:]]
    print(json.dumps(scenario(*args)), flush=True)

"""The replay store alone: per-claim latency under concurrent claimers in several processes.

``python -m benchmarks.replay URL [--processes 2] [--threads 16 64] [--seconds 4]`` opens the
store the way a worker does (``cds_service.open_replay_guard``), then in each of ``--processes``
processes runs ``threads / processes`` threads that claim fresh ``jti`` values back to back for
``--seconds``; it prints p50 / p99 / max per claim and claims per second over all processes.
This is what a hook's JWT check waits for, without the rest of the request around it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class ClaimStats:
    """Latency of one claim in ms over every process and thread; claims per second."""

    threads: int
    claims: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    refused: int
    errors: int

    @property
    def per_second(self) -> float:
        return self.claims / self.seconds if self.seconds else 0.0


def _claimer(url: str, threads: int, seconds: float, start_at: float, out: multiprocessing.Queue):
    from cds_service import open_replay_guard

    guard = open_replay_guard(url)
    latencies: list[float] = []
    counts = {"refused": 0, "errors": 0}
    lock = threading.Lock()
    guard.probe()  # warm: connection, table, writer thread
    while time.time() < start_at:
        time.sleep(0.005)
    stop_at = start_at + seconds

    def run() -> None:
        mine: list[float] = []
        refused = errors = 0
        while time.time() < stop_at:
            started = time.perf_counter()
            try:
                if not guard.claim("https://bench.invalid", uuid.uuid4().hex, time.time() + 600):
                    refused += 1
            except Exception:
                errors += 1
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)
            counts["refused"] += refused
            counts["errors"] += errors

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    guard.dispose()
    out.put({"latencies": latencies, **counts})


def measure(url: str, threads: int, processes: int = 2, seconds: float = 4.0) -> ClaimStats:
    """``threads`` claimers spread over ``processes`` processes for ``seconds``."""
    context = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = context.Queue()
    start_at = time.time() + 3.0  # every process has opened its store by then
    share = [threads // processes + (1 if n < threads % processes else 0) for n in range(processes)]
    children = [
        context.Process(target=_claimer, args=(url, n, seconds, start_at, out)) for n in share
    ]
    for child in children:
        child.start()
    results = [out.get(timeout=seconds + 120) for _ in children]
    for child in children:
        child.join(timeout=30)
    latencies = sorted(x for r in results for x in r["latencies"]) or [0.0]
    return ClaimStats(
        threads=threads,
        claims=len(latencies),
        seconds=seconds,
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000,
        max_ms=latencies[-1] * 1000,
        refused=sum(r["refused"] for r in results),
        errors=sum(r["errors"] for r in results),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.replay", description=__doc__)
    parser.add_argument("url", help="replay store URL (sqlite:///…, postgresql://…, redis://…)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--json", action="store_true", help="one JSON line per run")
    args = parser.parse_args(argv)
    for threads in args.threads:
        stats = measure(args.url, threads, args.processes, args.seconds)
        if args.json:
            print(json.dumps({**stats.__dict__, "per_second": stats.per_second}), flush=True)
        else:
            print(
                f"{threads:>3} claimers in {args.processes} processes: p50 {stats.p50_ms:7.2f} ms  "
                f"p99 {stats.p99_ms:7.2f} ms  max {stats.max_ms:7.1f} ms  "
                f"{stats.per_second:7.0f} claims/s  refused {stats.refused}  "
                f"errors {stats.errors}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Per-request cost of the metrics and of a log line: ``python -m benchmarks.ops_overhead``.

Metrics are measured in prometheus-client's multiprocess mode (as under gunicorn: values in
mmap'd files) and in-process. The log line is measured through the queue (the service's path) and
written directly to a file (the old path), each from 8 threads at once, as gthread workers do.
Not part of ``make bench``: it is a micro-benchmark of two helpers, in microseconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

CALLS = 20000

CHILD = r"""
import json, logging, os, sys, threading, time
CALLS = int(sys.argv[1])
from cds_service import metrics
cards = [{"indicator": "warning", "suggestions": [{}, {}]}, {"indicator": "info"}]
for _ in range(1000):  # warm the label caches
    metrics.observe_request("/cds-services/<service_id>", "svc", 200, 0.01)
    metrics.observe_cards("svc", cards)
start = time.perf_counter()
for _ in range(CALLS):
    metrics.observe_request("/cds-services/<service_id>", "svc", 200, 0.01)
    metrics.observe_cards("svc", cards)
per_request = (time.perf_counter() - start) / CALLS * 1e6

FIELDS = {"event": "request", "status": 200, "duration_ms": 1.0}

def burst(log, n):
    def work():
        for _ in range(n):
            log.info("handled", extra=FIELDS)
    threads = [threading.Thread(target=work) for _ in range(8)]
    start = time.perf_counter()
    for t in threads: t.start()
    for t in threads: t.join()
    return (time.perf_counter() - start) / (8 * n) * 1e6

from cds_service.logs import JsonFormatter, configure_logging, stop_logging
direct = logging.getLogger("direct")
direct.propagate = False
direct.setLevel("INFO")
handler = logging.FileHandler(os.devnull)
handler.setFormatter(JsonFormatter())
direct.addHandler(handler)
direct_us = burst(direct, CALLS // 8)
configure_logging("INFO")
sys.stderr = open(os.devnull, "w")
queued_us = burst(logging.getLogger("cds_service.bench"), CALLS // 8)
stop_logging()
figures = {"metrics_us": per_request, "log_direct_us": direct_us, "log_queued_us": queued_us}
print(json.dumps(figures))
"""


def _run(multiprocess: bool) -> dict[str, float]:
    import json

    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    with tempfile.TemporaryDirectory() as directory:
        if multiprocess:
            env["PROMETHEUS_MULTIPROC_DIR"] = directory
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(CALLS)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    load = os.getloadavg()[0]
    for mode in (True, False):
        figures = _run(mode)
        name = "multiprocess" if mode else "in-process"
        print(
            f"metrics ({name}): {figures['metrics_us']:.1f} µs per hook call "
            f"(one request histogram + 2 cards + suggestions); log line, 8 threads: "
            f"queued {figures['log_queued_us']:.1f} µs, direct {figures['log_direct_us']:.1f} µs "
            f"(load average {load:.1f})"
        )


if __name__ == "__main__":
    main()

"""``python -m benchmarks.soak``: a bounded soak of the service at its maximum throughput.

The service runs as in ``make bench`` (production settings, JWT auth, one replay-guard row per
call). A short run with 16 clients measures the maximum throughput of the typical patient-view
call; then 16 clients keep the service at that maximum for 60 seconds (wrk is closed-loop: it
sends as fast as the service answers) while the resident memory of the gunicorn workers is
sampled from /proc every second. Passes with zero errors, no worker lost, and worker memory growing
less than 10 % from the start of the soak to its end; the share of the maximum held is reported.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks import bundles, load, scenarios
from benchmarks.auth import ClientIdentity, JwksServer
from benchmarks.run import PUBLIC_URL, TYPICAL, service_env, wait_idle
from benchmarks.servers import SERVICE_APP, Gunicorn

CLIENTS = 16
MAX_GROWTH = 0.10


class MemorySampler:
    """Samples the workers' summed RSS once a second in a thread, until stopped."""

    def __init__(self, server: Gunicorn) -> None:
        self.server = server
        self.samples: list[tuple[float, int, tuple[int, ...]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(1.0):
            pids = tuple(self.server.worker_pids())
            self.samples.append((time.monotonic() - started, self.server.workers_rss_bytes(), pids))

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="soak length (default 60)")
    args = parser.parse_args(argv)
    wrk = load.find_wrk()
    identity = ClientIdentity()
    audience = PUBLIC_URL + scenarios.HOOK_PATH
    with (
        tempfile.TemporaryDirectory(prefix="footdrop-soak-") as tmp,
        JwksServer(identity.jwks) as jwks,
    ):
        workdir = Path(tmp)
        body = workdir / "typical.json"
        body.write_bytes(bundles.encode(bundles.patient_request(TYPICAL)))
        env = service_env(workdir / "soak.sqlite3", jwks.url)

        def spec(seconds: float, tokens: int) -> load.LoadSpec:
            return load.LoadSpec(
                url=server.url + scenarios.HOOK_PATH,
                method="POST",
                body_file=body,
                tokens_file=identity.write_tokens(workdir / "tokens.txt", audience, tokens),
                connections=CLIENTS,
                duration=seconds,
            )

        with Gunicorn(SERVICE_APP, env, workdir / "service.log") as server:
            calibration = load.run(spec(5, 8000), wrk)
            wait_idle(server)
            print(
                f"maximum throughput ({CLIENTS} clients, 5 s): {calibration.rps:.0f} req/s, "
                f"p50 {calibration.p50_ms:.1f} ms, errors {calibration.errors}",
                flush=True,
            )
            tokens = int(calibration.rps * args.seconds * 1.5) + 1000
            start_rss = server.workers_rss_bytes()
            start_pids = tuple(server.worker_pids())
            with MemorySampler(server) as sampler:
                soak = load.run(spec(args.seconds, tokens), wrk)
            end_rss = server.workers_rss_bytes()
            end_pids = tuple(server.worker_pids())
    peak = max([start_rss, end_rss, *(rss for _, rss, _ in sampler.samples)])
    growth = (end_rss - start_rss) / start_rss if start_rss else float("inf")
    held = soak.rps / calibration.rps if calibration.rps else 0.0
    errors = soak.errors + soak.tokens_exhausted
    print(
        f"soak {soak.seconds:.0f} s at {CLIENTS} clients: {soak.requests} requests, "
        f"{soak.rps:.0f} req/s ({held:.0%} of the maximum), p50 {soak.p50_ms:.1f} ms, "
        f"p99 {soak.p99_ms:.1f} ms, errors {errors}"
    )
    print(
        f"worker RSS: start {start_rss / 2**20:.1f} MiB, end {end_rss / 2**20:.1f} MiB, "
        f"peak {peak / 2**20:.1f} MiB, growth {growth:+.1%} (limit +{MAX_GROWTH:.0%}); "
        f"workers {'unchanged' if start_pids == end_pids else 'RESTARTED'}"
    )
    for at, rss, _ in sampler.samples[:: max(1, len(sampler.samples) // 12)]:
        print(f"  t={at:5.1f} s  RSS {rss / 2**20:7.1f} MiB")
    # Pass criteria are the issue's: no errors, bounded memory, no worker lost. The held ratio is
    # printed, not judged: with keep-alive clients the share of connections each gunicorn worker
    # gets changes at every reconnect, and consecutive 10 s runs on one server were measured
    # between 346 and 620 req/s without any trend, so a 5 s calibration is a noisy maximum.
    ok = errors == 0 and growth < MAX_GROWTH and start_pids == end_pids
    print("soak: PASS" if ok else "soak: FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""``python -m benchmarks.run``: the service and a bare Flask baseline under the same gunicorn
settings over patient sizes, driven from a separate process on loopback; results printed and
written to ``var/bench-sizes.md`` (``--out BENCHMARKS.md`` to record them).

The service runs as in production: ``CDS_ENVIRONMENT=production`` with an https public URL, JWT
verification on (ES384, the JWK Set served on loopback, one fresh token per request so the
replay guard writes one row per call into a temporary SQLite file), gthread workers with the
repository's defaults. Each run is bounded in time; the whole benchmark takes about 4 minutes
on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import bundles, inprocess, load, report, scenarios
from benchmarks.auth import ISSUER, ClientIdentity, JwksServer
from benchmarks.baseline_app import SIZE_HEADER
from benchmarks.fhir_stub import FhirStub
from benchmarks.servers import BASELINE_APP, SERVICE_APP, Gunicorn, clean_environment
from benchmarks.servers import children as _children

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_URL = "https://cds.bench.invalid"
TYPICAL = 50
LARGE = (1000, 10000)
CLIENTS = (1, 16)
FHIR_DELAY = 0.05


@dataclass
class Plan:
    """How long each load run lasts (seconds) and the sizes measured."""

    measure: float = 5.0
    warmup: float = 1.0
    slow_measure: float = 12.0  # for requests that take more than 100 ms each
    sizes: tuple[int, ...] = (TYPICAL, *LARGE)


def service_env(db: Path, jwks_url: str) -> dict[str, str]:
    return clean_environment(
        {
            "CDS_ENVIRONMENT": "production",
            "CDS_PUBLIC_URL": PUBLIC_URL,
            "CDS_JWT_ISSUERS": json.dumps({ISSUER: jwks_url}),
            "CDS_DATABASE_URL": f"sqlite:///{db}",
            "CDS_CORS_ORIGINS": "https://ehr.bench.invalid",
        }
    )


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` and its direct children."""
    total = 0
    for each in (pid, *_children(pid)):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def wait_idle(server: Gunicorn, limit: float = 60.0) -> None:
    """Wait until the server has finished what a load run left queued (its CPU time stops)."""
    assert server.process is not None
    deadline = time.monotonic() + limit
    last = cpu_ticks(server.process.pid)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = cpu_ticks(server.process.pid)
        if now - last <= 2:
            return
        last = now


class Runner:
    """Runs one scenario at one concurrency against a server, minting tokens as needed."""

    def __init__(self, workdir: Path, identity: ClientIdentity, wrk: str | None, plan: Plan):
        self.workdir = workdir
        self.identity = identity
        self.wrk = wrk
        self.plan = plan
        self.audience = PUBLIC_URL + scenarios.HOOK_PATH
        self._files = 0

    def tokens(self, count: int) -> Path:
        self._files += 1
        path = self.workdir / f"tokens-{self._files}.txt"
        return self.identity.write_tokens(path, self.audience, count)

    def load(
        self,
        server: Gunicorn,
        scenario: scenarios.Scenario,
        clients: int,
        seconds: float,
        expected_rps: float,
        response_bytes: int,
        fresh_tokens: bool,
    ) -> load.LoadResult:
        tokens = None
        if scenario.needs_token:
            count = int(expected_rps * seconds * 2) + 4 * clients + 50 if fresh_tokens else 1
            tokens = self.tokens(count)
        spec = load.LoadSpec(
            url=server.url + scenario.path,
            method=scenario.method,
            body_file=scenario.body_file,
            tokens_file=tokens,
            cycle_tokens=not fresh_tokens,
            headers=((SIZE_HEADER, str(response_bytes)),),
            connections=clients,
            duration=seconds,
        )
        result = load.run(spec, self.wrk)
        wait_idle(server)
        if tokens is not None:
            tokens.unlink()
        return result

    def measure(
        self,
        server: Gunicorn,
        scenario: scenarios.Scenario,
        clients: int,
        single_seconds: float,
        response_bytes: int,
        fresh_tokens: bool,
    ) -> load.LoadResult:
        """Warm up (fast requests only), then measure; re-run once if tokens ran out."""
        cores = os.cpu_count() or 1
        expected = min(clients, cores) / max(single_seconds, 1e-4)
        slow = single_seconds > 0.1
        seconds = self.plan.measure
        if slow:  # long enough for a few rounds of ``clients`` requests shared by the cores
            seconds = min(30.0, max(self.plan.slow_measure, 3 * clients * single_seconds / cores))
        args = (server, scenario, clients)
        if not slow:
            warm = self.load(*args, self.plan.warmup, expected * 3, response_bytes, fresh_tokens)
            expected = max(expected, warm.rps)
        result = self.load(*args, seconds, expected, response_bytes, fresh_tokens)
        if result.tokens_exhausted:
            result = self.load(*args, seconds, result.rps * 3, response_bytes, fresh_tokens)
        return result


def measure_http(
    runner: Runner,
    service: Gunicorn,
    baseline: Gunicorn,
    cases: list[scenarios.Scenario],
) -> list[report.Row]:
    rows = []
    for scenario in cases:
        token = runner.identity.token(runner.audience) if scenario.needs_token else None
        probe = scenarios.probe(service.url, scenario, token)
        if probe.status != 200:
            raise RuntimeError(f"{scenario.name}: the service answered {probe.status}")
        for clients in CLIENTS:
            single = probe.seconds
            service_result = runner.measure(
                service, scenario, clients, single, probe.response_bytes, True
            )
            baseline_result = runner.measure(
                baseline, scenario, clients, single, probe.response_bytes, False
            )
            row = report.Row(
                scenario,
                clients,
                service_result,
                baseline_result,
                probe.response_bytes,
                probe.cards,
            )
            rows.append(row)
            print(
                f"  {scenario.name:<12} c={clients:<2} service p50 {service_result.p50_ms:8.2f} ms "
                f"p99 {service_result.p99_ms:8.2f} ms {service_result.rps:7.1f} req/s "
                f"errors {service_result.errors} | baseline p50 {baseline_result.p50_ms:7.2f} ms "
                f"{baseline_result.rps:7.1f} req/s | p50 x{row.p50_ratio:.2f}",
                flush=True,
            )
    return rows


def targets(rows: list[report.Row], measured: list[inprocess.InProcess]) -> list[report.Target]:
    found: list[report.Target] = []
    by = {(r.scenario.name, r.clients): r for r in rows}
    for clients in CLIENTS:
        row = by.get(("typical", clients))
        if row:
            found.append(
                report.Target(
                    f"typical patient-view p50, {clients} client(s), vs baseline",
                    f"{row.p50_ratio:.2f}×",
                    "≤ 1.5×",
                    row.service.requests > 0 and row.p50_ratio <= 1.5,
                )
            )
    for clients in CLIENTS:
        seven, one = by.get(("fallback-7", clients)), by.get(("fallback-1", clients))
        if seven and one:
            ratio = report.ratio(seven.service.p50_ms, one.service.p50_ms)
            found.append(
                report.Target(
                    f"7-query fallback p50 vs 1-query p50, {clients} client(s)",
                    f"{ratio:.2f}× ({seven.service.p50_ms:.0f} vs {one.service.p50_ms:.0f} ms)",
                    "≤ 1.5×",
                    seven.service.requests > 0 and one.service.requests > 0 and ratio <= 1.5,
                )
            )
    for m in measured:
        if m.resources == 1000:
            found.append(
                report.Target(
                    "1,000-resource patient, domain call vs json.loads (in process)",
                    f"{m.domain_ratio:.2f}×",
                    "≤ 4×",
                    m.domain_ratio <= 4,
                )
            )
    errors = sum(r.service.errors + r.baseline.errors for r in rows)
    found.append(report.Target("errors over all runs", str(errors), "0", errors == 0))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench-sizes.md")
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    args = parser.parse_args(argv)
    plan = Plan(measure=2.0, warmup=0.5, slow_measure=4.0) if args.quick else Plan()
    started = time.monotonic()
    wrk = load.find_wrk()
    print(f"load generator: {wrk or 'Python (wrk unavailable)'}", flush=True)
    now = datetime.now(UTC)
    requests = {n: bundles.patient_request(n, now) for n in plan.sizes}

    print("in process ...", flush=True)
    with inprocess.Bench() as bench:
        measured = [bench.measure(requests[n], n) for n in plan.sizes]
    for m in measured:
        print(
            f"  {m.resources:>6} resources: json.loads {m.json_loads_ms:.2f} ms, domain "
            f"{m.domain_ms:.2f} ms (x{m.domain_ratio:.2f}), whole call {m.test_client_ms:.2f} ms "
            f"(x{m.test_client_ratio:.2f}), {m.cards} card(s)",
            flush=True,
        )

    identity = ClientIdentity()
    with tempfile.TemporaryDirectory(prefix="footdrop-bench-") as tmp:
        workdir = Path(tmp)
        answers = workdir / "fhir-answers.json"
        answers.write_text(json.dumps(bundles.fhir_answers(requests[TYPICAL])))
        with JwksServer(identity.jwks) as jwks, FhirStub(answers, FHIR_DELAY) as fhir:
            env = service_env(workdir / "bench.sqlite3", jwks.url)
            cases = scenarios.build(workdir, requests, fhir.base_url, TYPICAL)
            service = Gunicorn(SERVICE_APP, env, workdir / "service.log")
            baseline = Gunicorn(BASELINE_APP, env, workdir / "baseline.log")
            print("over HTTP ...", flush=True)
            with service, baseline:
                runner = Runner(workdir, identity, wrk, plan)
                rows = measure_http(runner, service, baseline, cases)
    found = targets(rows, measured)
    settings = [
        f"Service: `gunicorn -c python:cds_service.gunicorn_conf '{SERVICE_APP}'`, "
        f"{service.expected_workers()} gthread workers × "
        f"{os.environ.get('GUNICORN_THREADS', '12')} threads, `CDS_ENVIRONMENT=production`, "
        "JWT auth on (ES384, JWK Set on loopback, a fresh `jti` per request: one replay-guard "
        "row per call in a temporary SQLite file, WAL, synchronous=FULL), JSON request logs "
        "to a file.",
        f"Baseline: `{BASELINE_APP}` (a bare Flask app that reads the body and answers "
        "a JSON body as large as the service's answer) under the same gunicorn config.",
        f"Load: {'wrk, one thread' if wrk else 'the Python load generator'} in its own "
        f"process on loopback, keep-alive, {' and '.join(map(str, CLIENTS))} concurrent "
        f"clients, {plan.measure:g} s per run after {plan.warmup:g} s of warm-up "
        f"({plan.slow_measure:g} s or more, no warm-up, for requests slower than 100 ms); the same "
        "request body for the service and the baseline.",
        "Patients: fixture 01 moved to today, padded to the size with vital signs "
        "(LOINC 8867-4 and others), unrelated Conditions, oral MedicationAdministrations, minor "
        "Procedures and old deltoid vaccinations (fixed seed).",
        f"Fallback: the prefetch lacks 1 or 7 required keys; a loopback FHIR stub (its own "
        f"process) answers each query after {FHIR_DELAY * 1000:.0f} ms.",
    ]
    text = report.render(rows, measured, found, settings, time.monotonic() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print()
    for target in found:
        verdict = "met" if target.met else "NOT MET"
        print(f"{verdict:>8}  {target.name}: {target.measured} (limit {target.limit})")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

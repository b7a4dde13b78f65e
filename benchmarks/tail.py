"""``make bench``: tail latency under concurrency, side by side with a bare Flask floor (issue 14).

Rows: the floor (``benchmarks.baseline_app``: reads the body, answers a JSON body as large as
the service's, under the same gunicorn config, no proxy), the service with auth off, and the
service with auth on for each replay store: the embedded default (SQLite), PostgreSQL
(``FOOTDROP_TEST_POSTGRES_URL``, or one started with scripts/start-postgres.sh when PostgreSQL is
installed) and Redis (when ``redis-server`` is installed). Each at 1, 16 and 64 keep-alive
clients, every hook call with a fresh ES384 token (its own ``jti``). Then the FHIR fallback:
7 queries against 1 at 16 clients. The service runs as ``cds-service serve`` (nginx in front
of gunicorn, production settings) and the busiest worker's share of the responses is counted
from gunicorn's access log.

Nothing is installed and nothing tracked is changed: a missing tool is named with the command
that installs it; the results go to ``var/bench-results.md`` (untracked) unless ``--record``
(``make bench RECORD=1``) also writes them into BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import bundles, load, scenarios
from benchmarks.auth import ISSUER, ClientIdentity, JwksServer
from benchmarks.baseline_app import SIZE_HEADER
from benchmarks.fhir_stub import FhirStub
from benchmarks.servers import BASELINE_APP, Gunicorn, children, clean_environment, free_port
from benchmarks.slow_clients import Served
from cds_service.gunicorn_logging import answered_by_worker
from cds_service.proxy import find_nginx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "var" / "bench-results.md"
RECORD_TO = ROOT / "BENCHMARKS.md"
SECTION = "## Tail latency under concurrency (issue 14)"
PUBLIC_URL = "https://cds.bench.invalid"
CLIENTS = (1, 16, 64)
FHIR_DELAY = 0.05
TYPICAL = 50
APP_SECRET = secrets.token_urlsafe(32)


@dataclass
class Plan:
    measure: float = 5.0
    warmup: float = 1.0


@dataclass
class Run:
    """One row at one concurrency."""

    label: str
    clients: int
    result: load.LoadResult
    busiest_share: float | None = None
    cpu_ms_per_call: float | None = None  # every process of the server, user + system


@dataclass
class Outcome:
    rows: list[Run] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` (from /proc; gone processes count 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def group_pids(pgid: int) -> list[int]:
    """Every process in process group ``pgid`` (the service: supervisor, nginx, gunicorn)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                found.append(int(entry.name))
    return found


class Service:
    """``cds-service serve`` on a free port with its gunicorn access log (worker pid per line)."""

    def __init__(self, settings: Mapping[str, str], workdir: Path, name: str) -> None:
        self.access = workdir / f"{name}-access.log"
        self.served = Served(settings, workdir / f"{name}.log", ROOT)
        self.served.env.pop("WEB_CONCURRENCY", None)  # gunicorn_conf's own default
        self.served.env["GUNICORN_ACCESS_LOG"] = str(self.access)  # JSON lines with the pid
        self.url = f"http://127.0.0.1:{self.served.port}"
        self.process = None

    def __enter__(self) -> Service:
        self.served.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.served.stop()

    def reset_counts(self) -> None:
        self.access.write_text("")

    def pids(self) -> list[int]:
        assert self.served.process is not None
        return group_pids(self.served.process.pid)

    def busiest_share(self, path: str) -> float | None:
        pids = answered_by_worker(self.access.read_text(), path)
        total = sum(pids.values())
        return max(pids.values()) / total if total else None


class Bench:
    def __init__(self, workdir: Path, wrk: str | None, plan: Plan) -> None:
        self.workdir = workdir
        self.wrk = wrk
        self.plan = plan
        self.identity = ClientIdentity()
        self.audience = PUBLIC_URL + scenarios.HOOK_PATH
        self._files = 0

    def _tokens(self, count: int) -> Path:
        self._files += 1
        path = self.workdir / f"tokens-{self._files}.txt"
        return self.identity.write_tokens(path, self.audience, count)

    def _once(
        self, url: str, body: Path, clients: int, seconds: float, tokens: int, size: int
    ) -> load.LoadResult:
        token_file = self._tokens(tokens) if tokens else self._tokens(1)
        spec = load.LoadSpec(
            url=url + scenarios.HOOK_PATH,
            method="POST",
            body_file=body,
            tokens_file=token_file,
            cycle_tokens=tokens == 0,
            headers=((SIZE_HEADER, str(size)),),
            connections=clients,
            duration=seconds,
        )
        try:
            return load.run(spec, self.wrk)
        finally:
            token_file.unlink()

    def measure(
        self,
        url: str,
        body: Path,
        clients: int,
        size: int,
        fresh: bool,
        expected: float,
        pids: Callable[[], list[int]],
    ) -> tuple[load.LoadResult, float | None]:
        """Warm up, then measure; minted tokens cover twice the rate seen (re-run if short).
        Also the server's CPU time per call in the measured run (independent of other load)."""
        plan = self.plan

        def count(rate: float, seconds: float) -> int:
            return int(rate * seconds * 2) + 8 * clients + 100 if fresh else 0

        warm = self._once(url, body, clients, plan.warmup, count(expected, plan.warmup), size)
        rate = max(warm.rps, 1.0)
        for _ in range(2):
            tokens = count(rate, plan.measure)
            watched = pids()
            before = cpu_seconds(watched)
            result = self._once(url, body, clients, plan.measure, tokens, size)
            spent = cpu_seconds(watched) - before
            if not result.tokens_exhausted:
                break
            rate = result.rps * 1.5
        per_call = spent * 1000 / result.requests if result.requests else None
        return result, per_call


def _service_settings(
    db: Path, jwks_url: str, *, auth: bool, replay: str | None = None, database: str | None = None
) -> dict[str, str]:
    settings = {
        "CDS_ENVIRONMENT": "production" if auth else "development",
        "CDS_AUTH": "on" if auth else "off",
        "CDS_PUBLIC_URL": PUBLIC_URL,
        "CDS_JWT_ISSUERS": json.dumps({ISSUER: jwks_url}),
        "CDS_DATABASE_URL": database or f"sqlite:///{db}",
        "CDS_CORS_ORIGINS": "https://ehr.bench.invalid",
        "CDS_PROXY": "nginx" if find_nginx("nginx") else "off",
        "CDS_APP_SECRET": APP_SECRET,  # production refuses to start without the app's cookie key
    }
    if replay:
        settings["CDS_REPLAY_URL"] = replay
    return settings


@contextmanager
def _postgres(outcome: Outcome) -> Iterator[str | None]:
    """FOOTDROP_TEST_POSTGRES_URL, or a throw-away server when PostgreSQL is installed."""
    url = os.environ.get("FOOTDROP_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    installed = list(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not installed or os.geteuid() != 0:
        why = "PostgreSQL is not installed" if not installed else "starting it needs root"
        outcome.skipped.append(
            f"auth on, PostgreSQL: skipped ({why}; apt-get install postgresql, or set "
            "FOOTDROP_TEST_POSTGRES_URL)"
        )
        yield None
        return
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "start-postgres.sh")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    exports = dict(
        line.removeprefix("export ").split("=", 1)
        for line in done.stdout.splitlines()
        if line.startswith("export ")
    )
    try:
        yield exports["FOOTDROP_TEST_POSTGRES_URL"]
    finally:
        stop = f"{exports['FOOTDROP_PGBIN']}/pg_ctl -D {exports['FOOTDROP_PGDATA']} -m fast stop"
        subprocess.run(["su", "postgres", "-s", "/bin/sh", "-c", stop], capture_output=True)
        shutil.rmtree(exports["FOOTDROP_PGDATA"], ignore_errors=True)


@contextmanager
def _redis(workdir: Path, outcome: Outcome) -> Iterator[str | None]:
    binary = shutil.which("redis-server")
    if binary is None:
        outcome.skipped.append("auth on, Redis: skipped (apt-get install redis-server)")
        yield None
        return
    port = free_port()
    process = subprocess.Popen(
        [binary, "--save", "", "--appendonly", "yes", "--port", str(port), *_local(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=30)


def _local(workdir: Path) -> list[str]:
    return ["--bind", "127.0.0.1", "--dir", str(workdir)]


def run(plan: Plan, wrk: str | None) -> Outcome:
    outcome = Outcome()
    now = datetime.now(UTC)
    request = bundles.patient_request(TYPICAL, now)
    # An EHR that prefetches: no fhirServer, so the optional keys it left out are not fetched
    # (fixture 01 names one on loopback; the fallback rows below point at the FHIR stub).
    prefetched = {k: v for k, v in request.items() if k not in ("fhirServer", "fhirAuthorization")}
    with tempfile.TemporaryDirectory(prefix="footdrop-bench-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        body = workdir / "typical.json"
        body.write_bytes(bundles.encode(prefetched))
        bench = Bench(workdir, wrk, plan)
        jwks = stack.enter_context(JwksServer(bench.identity.jwks))
        db = workdir / "feedback.sqlite3"

        # The answer's size, for the floor; and one call by hand, which must be 200.
        with Service(_service_settings(db, jwks.url, auth=True), workdir, "probe") as probe:
            token = bench.identity.token(bench.audience)
            answer = scenarios.probe(probe.url, _scenario(body), token)
            if answer.status != 200:
                raise SystemExit(f"bench: the service answered {answer.status} to a hook call")
        size = answer.response_bytes

        floor_env = clean_environment({"CDS_DATABASE_URL": f"sqlite:///{db}"})
        print("floor (bare Flask, same body) ...", flush=True)
        with Gunicorn(BASELINE_APP, floor_env, workdir / "floor.log") as floor:
            for clients in CLIENTS:
                result, cpu = bench.measure(
                    floor.url, body, clients, size, False, 1000, lambda: _tree(floor)
                )
                outcome.rows.append(
                    Run("floor (bare Flask, same body)", clients, result, None, cpu)
                )
                _print(outcome.rows[-1])

        pg = stack.enter_context(_postgres(outcome))
        redis = stack.enter_context(_redis(workdir, outcome))
        variants: list[tuple[str, dict[str, str]]] = [
            ("service, auth off", _service_settings(db, jwks.url, auth=False)),
            ("auth on, SQLite (default)", _service_settings(db, jwks.url, auth=True)),
        ]
        if pg:
            variants.append(
                ("auth on, PostgreSQL", _service_settings(db, jwks.url, auth=True, database=pg))
            )
        if redis:
            variants.append(
                ("auth on, Redis", _service_settings(db, jwks.url, auth=True, replay=redis))
            )
        for index, (label, settings) in enumerate(variants):
            print(f"{label} ...", flush=True)
            with Service(settings, workdir, f"service-{index}") as service:
                for clients in CLIENTS:
                    service.reset_counts()
                    fresh = settings["CDS_AUTH"] == "on"
                    result, cpu = bench.measure(
                        service.url, body, clients, size, fresh, 200, service.pids
                    )
                    share = service.busiest_share(scenarios.HOOK_PATH)
                    outcome.rows.append(Run(label, clients, result, share, cpu))
                    _print(outcome.rows[-1])

        print("FHIR fallback (1 and 7 queries, +50 ms each) ...", flush=True)
        answers = workdir / "fhir-answers.json"
        answers.write_text(json.dumps(bundles.fhir_answers(request)))
        fhir = stack.enter_context(FhirStub(answers, FHIR_DELAY))
        settings = _service_settings(db, jwks.url, auth=True)
        settings.update(
            CDS_ENVIRONMENT="development",
            CDS_ALLOW_INSECURE_FHIR="on",
            CDS_FHIR_ORIGINS=json.dumps({ISSUER: [fhir.base_url]}),
            # 16 clients x (7 + 3 optional) queries to one origin, 80 per worker: above the
            # default 16 in flight per origin and process (the extra keys fail at once, "origin
            # busy", and the call is 412) and the 64 fetch threads.
            CDS_FHIR_MAX_PER_ORIGIN="128",
            CDS_FHIR_MAX_WORKERS="128",
        )
        with Service(settings, workdir, "fallback") as service:
            for queries, keys in ((1, scenarios.REQUIRED_KEYS[:1]), (7, scenarios.REQUIRED_KEYS)):
                fallback = workdir / f"fallback-{queries}.json"
                document = bundles.fallback_request(request, fhir.base_url, keys)
                fallback.write_bytes(bundles.encode(document))
                result, cpu = bench.measure(
                    service.url, fallback, 16, size, True, 100, service.pids
                )
                label = f"FHIR fallback, {queries} quer{'y' if queries == 1 else 'ies'}"
                outcome.rows.append(Run(label, 16, result, None, cpu))
                _print(outcome.rows[-1])
    return outcome


def _tree(server: Gunicorn) -> list[int]:
    assert server.process is not None
    return [server.process.pid, *children(server.process.pid)]


def _scenario(body: Path) -> scenarios.Scenario:
    return scenarios.Scenario("typical", "patient-view", scenarios.HOOK_PATH, body, TYPICAL)


def _print(run: Run) -> None:
    r = run.result
    share = f"  busiest worker {run.busiest_share:.2f}" if run.busiest_share else ""
    if run.cpu_ms_per_call is not None:
        share += f"  CPU {run.cpu_ms_per_call:.2f} ms/call"
    print(
        f"  c={run.clients:<3} p50 {r.p50_ms:8.2f} ms  p99 {r.p99_ms:8.2f} ms  max "
        f"{r.max_ms:8.1f} ms  {r.rps:7.1f} req/s  errors {r.errors}{share}",
        flush=True,
    )


if __name__ == "__main__":
    from benchmarks.tail_report import main

    sys.exit(main())

"""Capacity figures for the README's "Capacity and scaling": requests per core-second with and
without auth, and memory per gunicorn worker after warm-up.

    python -m benchmarks.capacity                     # SQLite (the embedded default)
    python -m benchmarks.capacity --database-url postgresql+psycopg://...   # PostgreSQL

Each mode starts `cds-service serve` as the image runs it (nginx in front of gunicorn, 2 workers
unless --workers), warms it up, then drives the bundled patient-view example with --connections
keep-alive clients for --seconds (wrk, else the Python generator; a fresh ES384 token with its
own ``jti`` per request when auth is on). The machine may be shared, so throughput per wall
second says little; what the service costs does not depend on the neighbours: the CPU time its
processes used (``/proc/<pid>/stat``, utime + stime) is read before and after, and

    requests per core-second = requests answered / CPU seconds the service used

is the number of requests one fully used core serves. Memory: RSS and PSS (``smaps_rollup``;
PSS splits the pages a worker shares with its master after fork) of each worker after the
warm-up and after the run. The load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.auth import ISSUER, ClientIdentity, JwksServer
from benchmarks.load import LoadResult, LoadSpec, ensure_wrk, run
from benchmarks.slow_clients import Served

ROOT = Path(__file__).resolve().parent.parent
HOOK_PATH = "/cds-services/footdrop-im-injection"
TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, int, float] | None:
    """(parent pid, process group, CPU seconds) of ``pid``; None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # after the command: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    # utime stime ...
    return int(fields[1]), int(fields[2]), (int(fields[11]) + int(fields[12])) / TICKS


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _kib(pid: int, path: str, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


@dataclass(frozen=True)
class Process:
    pid: int
    parent: int
    role: str  # gunicorn-master, gunicorn-worker, nginx, supervisor
    cpu_seconds: float


def group(pgid: int) -> list[Process]:
    """Every process of the service's process group, with its role and CPU time so far."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is None or stat[1] != pgid:
            continue
        command = _cmdline(int(entry.name))
        role = "nginx" if "nginx" in command else "gunicorn" if "gunicorn" in command else "serve"
        found.append(Process(int(entry.name), stat[0], role, stat[2]))
    roles = {p.pid: p.role for p in found}
    return [
        Process(
            p.pid,
            p.parent,
            ("gunicorn-worker" if roles.get(p.parent) == "gunicorn" else "gunicorn-master")
            if p.role == "gunicorn"
            else p.role,
            p.cpu_seconds,
        )
        for p in found
    ]


@dataclass(frozen=True)
class Memory:
    worker_rss_mib: list[float]
    worker_pss_mib: list[float]
    master_rss_mib: float
    nginx_rss_mib: float
    supervisor_rss_mib: float
    #: Every process of the instance together, shared pages counted once: what a container's
    #: memory limit has to hold (plus page cache).
    instance_pss_mib: float


def memory(pgid: int) -> Memory:
    processes = group(pgid)

    def mib(kib: int) -> float:
        return round(kib / 1024, 1)

    workers = [p.pid for p in processes if p.role == "gunicorn-worker"]
    return Memory(
        worker_rss_mib=[mib(_kib(pid, "status", "VmRSS:")) for pid in workers],
        worker_pss_mib=[mib(_kib(pid, "smaps_rollup", "Pss:")) for pid in workers],
        master_rss_mib=sum(
            mib(_kib(p.pid, "status", "VmRSS:")) for p in processes if p.role == "gunicorn-master"
        ),
        nginx_rss_mib=round(
            sum(_kib(p.pid, "status", "VmRSS:") for p in processes if p.role == "nginx") / 1024, 1
        ),
        supervisor_rss_mib=sum(
            mib(_kib(p.pid, "status", "VmRSS:")) for p in processes if p.role == "serve"
        ),
        instance_pss_mib=mib(sum(_kib(p.pid, "smaps_rollup", "Pss:") for p in processes)),
    )


@dataclass(frozen=True)
class ModeResult:
    auth: bool
    requests: int
    errors: int
    tokens_exhausted: int
    wall_seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    app_cpu_seconds: float  # gunicorn master and workers
    nginx_cpu_seconds: float
    app_requests_per_core_second: float
    instance_requests_per_core_second: float  # nginx included
    memory_after_warmup: Memory
    memory_after_run: Memory
    #: CPU seconds PostgreSQL's processes used in the run (with --postgres-pid), else None.
    postgres_cpu_seconds: float | None
    loadavg_before: tuple[float, float, float]
    loadavg_after: tuple[float, float, float]
    tool: str


def _cpu_by_role(pgid: int) -> dict[int, tuple[str, float]]:
    return {p.pid: (p.role, p.cpu_seconds) for p in group(pgid)}


def _tree_cpu(root: int | None) -> dict[int, float]:
    """CPU seconds of ``root`` and its children (PostgreSQL: the postmaster and its backends)."""
    if root is None:
        return {}
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and (int(entry.name) == root or stat[0] == root):
                found[int(entry.name)] = stat[2]
    return found


def measure(
    auth: bool, args: argparse.Namespace, workdir: Path, wrk: str | None, identity: ClientIdentity
) -> ModeResult:
    body = workdir / "hook.json"
    example = json.loads((ROOT / "cds_service/examples/patient-view-foot-drop.json").read_text())
    request = example["request"]
    request.pop("fhirServer", None)
    body.write_text(json.dumps(request))
    database = args.database_url or f"sqlite:///{workdir / f'auth-{auth}' / 'feedback.sqlite3'}"
    with JwksServer(identity.jwks) as jwks:
        served = Served({}, workdir / f"serve-auth-{auth}.log", ROOT)
        public_url = f"http://127.0.0.1:{served.port}"
        served.env.update(
            {
                "CDS_ENVIRONMENT": "test",
                "CDS_PROXY": "nginx",
                "CDS_DATABASE_URL": database,
                "CDS_AUTH": "on" if auth else "off",
                "CDS_JWT_ISSUERS": json.dumps({ISSUER: jwks.url}),
                "CDS_PUBLIC_URL": public_url,
                "WEB_CONCURRENCY": str(args.workers),
            }
        )
        with served:
            assert served.process is not None
            pgid = served.process.pid
            url = public_url + HOOK_PATH

            def load(connections: int, seconds: float, tokens: int) -> LoadResult:
                tokens_file = None
                if auth:
                    tokens_file = identity.write_tokens(workdir / "tokens.txt", url, tokens)
                spec = LoadSpec(
                    url=url,
                    method="POST",
                    body_file=body,
                    tokens_file=tokens_file,
                    connections=connections,
                    duration=seconds,
                )
                return run(spec, wrk)

            load(4, args.warmup, int(args.warmup * 1500) + 100)
            after_warmup = memory(pgid)
            tokens = int(args.seconds * args.max_rps) + 500
            loadavg_before = os.getloadavg()
            before, postgres_before = _cpu_by_role(pgid), _tree_cpu(args.postgres_pid)
            result = load(args.connections, args.seconds, tokens)
            after, postgres_after = _cpu_by_role(pgid), _tree_cpu(args.postgres_pid)
            loadavg_after = os.getloadavg()
            after_run = memory(pgid)
    spent = {"app": 0.0, "nginx": 0.0}
    for pid, (role, cpu) in after.items():
        start = before.get(pid, (role, 0.0))[1]
        spent["nginx" if role == "nginx" else "app"] += cpu - start if role != "serve" else 0.0
    answered = result.requests - result.errors
    return ModeResult(
        auth=auth,
        requests=result.requests,
        errors=result.errors,
        tokens_exhausted=result.tokens_exhausted,
        wall_seconds=round(result.seconds, 2),
        rps=round(result.rps, 1),
        p50_ms=round(result.p50_ms, 1),
        p99_ms=round(result.p99_ms, 1),
        app_cpu_seconds=round(spent["app"], 2),
        nginx_cpu_seconds=round(spent["nginx"], 2),
        app_requests_per_core_second=round(answered / spent["app"], 1) if spent["app"] else 0.0,
        instance_requests_per_core_second=round(answered / (spent["app"] + spent["nginx"]), 1)
        if spent["app"] + spent["nginx"]
        else 0.0,
        postgres_cpu_seconds=round(
            sum(cpu - postgres_before.get(pid, 0.0) for pid, cpu in postgres_after.items()), 2
        )
        if args.postgres_pid
        else None,
        memory_after_warmup=after_warmup,
        memory_after_run=after_run,
        loadavg_before=tuple(round(x, 2) for x in loadavg_before),  # type: ignore[arg-type]
        loadavg_after=tuple(round(x, 2) for x in loadavg_after),  # type: ignore[arg-type]
        tool=result.tool,
    )


def report(results: list[ModeResult], args: argparse.Namespace) -> str:
    cores = len(os.sched_getaffinity(0))
    store = "PostgreSQL" if args.database_url else "SQLite (default)"
    lines = [
        f"capacity: {args.workers} workers, {args.connections} clients, {args.seconds:g} s, "
        f"store {store}, {cores} cores",
        "",
        "| auth | req/s (wall) | p50 / p99 ms | errors | app req per core-s | "
        "with nginx | worker RSS / PSS MiB | load avg |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        mem = r.memory_after_run
        rss = "/".join(f"{x:g}" for x in mem.worker_rss_mib)
        pss = "/".join(f"{x:g}" for x in mem.worker_pss_mib)
        lines.append(
            f"| {'on' if r.auth else 'off'} | {r.rps:g} | {r.p50_ms:g} / {r.p99_ms:g} | "
            f"{r.errors} | {r.app_requests_per_core_second:g} | "
            f"{r.instance_requests_per_core_second:g} | {rss} / {pss} | "
            f"{r.loadavg_before[0]:g} -> {r.loadavg_after[0]:g} |"
        )
    for r in results:
        mem = r.memory_after_run
        lines.append("")
        lines.append(
            f"auth {'on' if r.auth else 'off'}: instance PSS {mem.instance_pss_mib:g} MiB "
            f"(after warm-up {r.memory_after_warmup.instance_pss_mib:g}); RSS of the gunicorn "
            f"master {mem.master_rss_mib:g}, nginx {mem.nginx_rss_mib:g}, the `serve` supervisor "
            f"{mem.supervisor_rss_mib:g} MiB; CPU s app {r.app_cpu_seconds:g}, "
            f"nginx {r.nginx_cpu_seconds:g}; {r.tool}"
        )
        if r.postgres_cpu_seconds is not None:
            per_request = 1000 * r.postgres_cpu_seconds / max(1, r.requests - r.errors)
            lines.append(
                f"  PostgreSQL: {r.postgres_cpu_seconds:g} CPU s, {per_request:.2f} ms per request"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.capacity", description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--max-rps", type=float, default=1200.0, help="tokens minted per second")
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    parser.add_argument(
        "--postgres-pid",
        type=int,
        default=None,
        help="the postmaster's PID (first line of $PGDATA/postmaster.pid): its CPU is reported",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    wrk = ensure_wrk()
    identity = ClientIdentity()
    with tempfile.TemporaryDirectory(prefix="footdrop-capacity-") as directory:
        workdir = Path(directory)
        results = [measure(auth, args, workdir, wrk, identity) for auth in (False, True)]
    print(report(results, args))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

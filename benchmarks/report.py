"""The machine, the figures and the targets, as Markdown for BENCHMARKS.md and the terminal."""

from __future__ import annotations

import contextlib
import os
import platform
import sqlite3
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from benchmarks.inprocess import InProcess
from benchmarks.load import LoadResult
from benchmarks.scenarios import Scenario

PACKAGES = (
    "footdrop-cds",
    "flask",
    "werkzeug",
    "gunicorn",
    "jsonschema",
    "sqlalchemy",
    "pyjwt",
    "cryptography",
    "requests",
)


@dataclass(frozen=True)
class Row:
    """One scenario at one concurrency: the service and the baseline, same run, same machine."""

    scenario: Scenario
    clients: int
    service: LoadResult
    baseline: LoadResult
    response_bytes: int
    cards: int | None

    @property
    def p50_ratio(self) -> float:
        return ratio(self.service.p50_ms, self.baseline.p50_ms)

    @property
    def p99_ratio(self) -> float:
        return ratio(self.service.p99_ms, self.baseline.p99_ms)

    @property
    def rps_ratio(self) -> float:
        return ratio(self.service.rps, self.baseline.rps)


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    limit: str
    met: bool


def ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


def machine() -> list[tuple[str, str]]:
    """What the figures were measured on."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "?"
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    versions = []
    for name in PACKAGES:
        with contextlib.suppress(PackageNotFoundError):
            versions.append(f"{name} {version(name)}")
    return [
        ("cores", f"{os.cpu_count()} ({cpu})"),
        ("memory", memory),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("SQLite", sqlite3.sqlite_version),
        ("packages", ", ".join(versions)),
        ("load generator", _wrk_version()),
        ("commit", _commit()),
    ]


def _wrk_version() -> str:
    try:
        done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "Python load generator (benchmarks/load.py)"
    return (done.stdout or done.stderr).splitlines()[0].strip()


def _commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return done.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def _ms(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def render(
    rows: list[Row],
    inprocess: list[InProcess],
    targets: list[Target],
    settings: list[str],
    seconds: float,
) -> str:
    out = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`python -m benchmarks`) on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC in {seconds:.0f} s. Every ratio compares two "
        "figures measured in the same run on the same machine; absolute figures only hold for it.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in machine()),
        "",
        "## How it was measured",
        "",
        *(f"- {line}" for line in settings),
        "",
        "## Targets",
        "",
        "| target | measured | limit | met |",
        "|---|---|---|---|",
        *(
            f"| {t.name} | {t.measured} | {t.limit} | {'yes' if t.met else '**no**'} |"
            for t in targets
        ),
        "",
        "## Over HTTP: service against the bare Flask baseline",
        "",
        "Latency in ms (p50 / p99), throughput in requests per second; ratio = service / baseline "
        "(latency: lower is better; throughput: higher is better).",
        "",
        "| scenario | clients | service p50 / p99 | req/s | errors | baseline p50 / p99 | req/s "
        "| p50 × | p99 × | req/s × | answer bytes | cards |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s, b = r.service, r.baseline
        if not s.requests or not b.requests:
            cells = [r.scenario.title, str(r.clients), "no request completed", *[""] * 9]
            out.append("| " + " | ".join(cells) + " |")
            continue
        out.append(
            f"| {r.scenario.title} | {r.clients} | {_ms(s.p50_ms)} / {_ms(s.p99_ms)} "
            f"| {s.rps:.0f} | {s.errors} | {_ms(b.p50_ms)} / {_ms(b.p99_ms)} | {b.rps:.0f} "
            f"| {r.p50_ratio:.2f} | {r.p99_ratio:.2f} | {r.rps_ratio:.2f} | {r.response_bytes} "
            f"| {'' if r.cards is None else r.cards} |"
        )
    out += [
        "",
        "## In process: one patient-view call, step by step",
        "",
        "Median ms per call; ratios against `json.loads` of the same request body. *domain* is "
        "`evaluate_patient_view` called the way the web layer calls it; *whole call* is "
        "`app.test_client().post(...)` (auth off): parse, schema validation, planning, domain, "
        "serialisation, logging.",
        "",
        "| resources | body bytes | json.loads | schema | planning | domain | domain × "
        "| whole call | whole call × | cards |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in inprocess:
        out.append(
            f"| {m.resources} | {m.body_bytes} | {_ms(m.json_loads_ms)} | {_ms(m.schema_ms)} "
            f"| {_ms(m.plan_ms)} | {_ms(m.domain_ms)} | {m.domain_ratio:.2f} "
            f"| {_ms(m.test_client_ms)} | {m.test_client_ratio:.2f} | {m.cards} |"
        )
    out.append("")
    return "\n".join(out)

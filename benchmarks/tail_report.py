"""``python -m benchmarks`` (``make bench``): run :mod:`benchmarks.tail`, check issue 14's
targets, print the table and write it to ``var/bench-results.md``; ``--record`` also puts it in
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import load, report
from benchmarks.tail import (
    CLIENTS,
    RECORD_TO,
    RESULTS,
    SECTION,
    Outcome,
    Plan,
    Run,
    run,
)

FLOOR = "floor (bare Flask, same body)"
SQLITE = "auth on, SQLite (default)"
POSTGRES = "auth on, PostgreSQL"


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    limit: str
    met: bool | None  # None: not measured (skipped)
    why: str = ""


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


def targets(outcome: Outcome, load_average: float) -> list[Target]:
    by = {(r.label, r.clients): r for r in outcome.rows}
    found: list[Target] = []
    busy = f"load average {load_average:.1f} on {os.cpu_count()} cores"

    def floor_p99(clients: int) -> str:
        floor = by.get((FLOOR, clients))
        return f"the floor's own p99 {floor.result.p99_ms:.0f} ms" if floor else "no floor"

    def cpu(run: Run | None) -> str:
        """What queueing alone costs: calls in flight x CPU per call / cores."""
        if run is None or run.cpu_ms_per_call is None:
            return ""
        cores = os.cpu_count() or 1
        queue = run.clients * run.cpu_ms_per_call / cores
        return (
            f"{run.cpu_ms_per_call:.1f} ms CPU per call: {run.clients} calls in flight on "
            f"{cores} cores queue ~{queue:.0f} ms even on an idle machine; "
        )

    for store in (SQLITE, POSTGRES):
        runs = [by.get((store, c)) for c in CLIENTS]
        if any(r is None for r in runs):
            found.append(Target(f"{store}: p99 and max", "skipped", "", None))
            continue
        for clients, limit in ((16, 100.0), (64, 300.0)):
            r = by[(store, clients)].result
            met = r.p99_ms <= limit
            why = "" if met else f"{cpu(by[(store, clients)])}{floor_p99(clients)}; {busy}"
            found.append(
                Target(
                    f"{store}: p99 at {clients} clients",
                    f"{r.p99_ms:.0f} ms",
                    f"≤ {limit:.0f} ms",
                    met,
                    why,
                )
            )
        worst = max(by[(store, c)].result.max_ms for c in CLIENTS)
        floor_max = max(
            (by[(FLOOR, c)].result.max_ms for c in CLIENTS if (FLOOR, c) in by), default=0
        )
        found.append(
            Target(
                f"{store}: slowest request (1/16/64 clients)",
                f"{worst:.0f} ms",
                "≤ 1000 ms",
                worst <= 1000,
                "" if worst <= 1000 else f"the floor's slowest {floor_max:.0f} ms; {busy}",
            )
        )
    for clients in (16, 64):
        service, floor = by.get((SQLITE, clients)), by.get((FLOOR, clients))
        if service and floor:
            ratio = _ratio(service.result.rps, floor.result.rps)
            found.append(
                Target(
                    f"auth-on throughput vs floor, {clients} clients",
                    f"{ratio:.2f}× ({service.result.rps:.0f} vs {floor.result.rps:.0f} req/s)",
                    "≥ 0.25×",
                    ratio >= 0.25,
                    "" if ratio >= 0.25 else _cpu_bound(service, floor) + busy,
                )
            )
    one, seven = by.get(("FHIR fallback, 1 query", 16)), by.get(("FHIR fallback, 7 queries", 16))
    if one and seven:
        ratio = _ratio(seven.result.p50_ms, one.result.p50_ms)
        found.append(
            Target(
                "7-query fallback p50 vs 1 query, 16 clients",
                f"{ratio:.2f}× ({seven.result.p50_ms:.0f} vs {one.result.p50_ms:.0f} ms)",
                "≤ 1.2×",
                ratio <= 1.2,
                "" if ratio <= 1.2 else _fallback_cpu(one, seven) + busy,
            )
        )
    sqlite16 = by.get((SQLITE, 16))
    if sqlite16 and sqlite16.busiest_share is not None:
        share = sqlite16.busiest_share
        found.append(
            Target(
                "busiest worker's share, auth on, 16 clients",
                f"{share:.2f}",
                "≤ 0.65",
                share <= 0.65,
            )
        )
    errors = sum(r.result.errors for r in outcome.rows)
    where = "; ".join(
        f"{r.label} at {r.clients}: {r.result.errors}" for r in outcome.rows if r.result.errors
    )
    found.append(Target("errors over all runs", str(errors), "0", errors == 0, where))
    return found


def _fallback_cpu(one: Run, seven: Run) -> str:
    if one.cpu_ms_per_call and seven.cpu_ms_per_call:
        each = (seven.cpu_ms_per_call - one.cpu_ms_per_call) / 6
        return (
            f"CPU per call {seven.cpu_ms_per_call:.1f} against {one.cpu_ms_per_call:.1f} ms "
            f"(~{each:.1f} ms per extra FHIR query): at 16 clients the cores, not the FHIR "
            "server's 50 ms, set the pace; "
        )
    return ""


def _cpu_bound(service: Run, floor: Run) -> str:
    if service.cpu_ms_per_call and floor.cpu_ms_per_call:
        bound = floor.cpu_ms_per_call / service.cpu_ms_per_call
        return (
            f"CPU per call {service.cpu_ms_per_call:.2f} ms against the floor's "
            f"{floor.cpu_ms_per_call:.2f} ms: with both saturated the ratio would be about "
            f"{bound:.2f}×; "
        )
    return "CPU per call; "


def render(
    outcome: Outcome, found: list[Target], meta: dict[str, str], plan: Plan, wrk: str | None
) -> str:
    floors = {r.clients: r.result for r in outcome.rows if r.label == FLOOR}
    tool = f"the Python load generator (wrk not installed: {load.WRK_HINT})"
    header = ["row", "clients", "p50 ms", "p99 ms", "max ms", "req/s", "errors"]
    header += ["p50 × floor", "p99 × floor", "req/s × floor", "CPU ms/call", "busiest worker"]
    lines = [
        SECTION,
        "",
        f"`make bench` (`python -m benchmarks`) on {meta['when']}, {meta['seconds']} s; "
        f"load average {meta['load_before']} before and {meta['load_after']} after "
        "(the machine is shared: the ratios to the floor measured in the same run are what count).",
        "",
        f"Load: {'wrk (one thread)' if wrk else tool}, keep-alive, {plan.measure:g} s per run "
        f"after {plan.warmup:g} s of warm-up, a fresh ES384 token (its own `jti`) per hook call; "
        "the typical patient-view (50 resources). The service: `cds-service serve` (nginx, "
        "gunicorn with gunicorn_conf's workers and threads, production settings); the floor: the "
        "bare Flask app under the same gunicorn config, no proxy. The busiest worker's share is "
        "counted from gunicorn's access log. CPU ms/call: user + system time of every process of "
        "the server (nginx included for the service) over the measured run, divided by the calls: "
        "it does not depend on what else runs on the machine. FHIR fallback: auth on, SQLite, a "
        "loopback FHIR stub answering each query after 50 ms, `CDS_FHIR_MAX_PER_ORIGIN=128` and "
        "`CDS_FHIR_MAX_WORKERS=128` (16 clients × 10 queries to one origin: 7 required keys "
        "missing, or 1, plus the 3 optional ones the fixture lacks).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in outcome.rows:
        floor = floors.get(r.clients)
        x = r.result
        ratios = (
            f"{_ratio(x.p50_ms, floor.p50_ms):.2f} | {_ratio(x.p99_ms, floor.p99_ms):.2f} | "
            f"{_ratio(x.rps, floor.rps):.2f}"
            if floor and r.label != FLOOR
            else " | | "
        )
        share = f"{r.busiest_share:.2f}" if r.busiest_share is not None else ""
        cpu = f"{r.cpu_ms_per_call:.2f}" if r.cpu_ms_per_call is not None else ""
        lines.append(
            f"| {r.label} | {r.clients} | {x.p50_ms:.1f} | {x.p99_ms:.1f} | {x.max_ms:.0f} | "
            f"{x.rps:.0f} | {x.errors} | {ratios} | {cpu} | {share} |"
        )
    lines += ["", "| target | measured | limit | met | why not |", "|---|---|---|---|---|"]
    for t in found:
        met = "skipped" if t.met is None else ("yes" if t.met else "**no**")
        lines.append(f"| {t.name} | {t.measured} | {t.limit} | {met} | {t.why} |")
    for note in outcome.skipped + outcome.notes:
        lines.append(f"\n{note}")
    lines += ["", "Machine: " + "; ".join(f"{k} {v}" for k, v in report.machine())]
    return "\n".join(lines) + "\n"


def record(section: str, path: Path = RECORD_TO) -> None:
    """Replace (or insert before the first section) this section of BENCHMARKS.md; the rest is
    kept."""
    text = path.read_text("utf-8") if path.exists() else "# Benchmarks\n"
    head, marker, rest = text.partition(SECTION)
    if marker:
        following = rest.find("\n## ")
        tail = rest[following + 1 :] if following >= 0 else ""
        path.write_text(head + section + ("\n" + tail if tail else ""), "utf-8")
        return
    first = text.find("\n## ")  # before the first section, after the title and introduction
    if first < 0:
        path.write_text(text.rstrip("\n") + "\n\n" + section, "utf-8")
        return
    path.write_text(text[: first + 1] + section + "\n" + text[first + 1 :], "utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    parser.add_argument("--record", action="store_true", help="also write into BENCHMARKS.md")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    plan = Plan(measure=2.0, warmup=0.5) if args.quick else Plan()
    wrk = load.find_wrk()
    if wrk is None:
        print(
            f"bench: wrk not found ({load.WRK_HINT}); using the Python load generator", flush=True
        )
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    outcome = run(plan, wrk)
    load_after = os.getloadavg()[0]
    found = targets(outcome, max(load_before, load_after))
    meta = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": f"{time.monotonic() - started:.0f}",
        "load_before": f"{load_before:.1f}",
        "load_after": f"{load_after:.1f}",
    }
    section = render(outcome, found, meta, plan, wrk)
    print()
    print(section)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("# Benchmarks (not recorded)\n\n" + section, "utf-8")
    print(f"written to {args.out}")
    if args.record:
        record(section)
        print(f"recorded in {RECORD_TO}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

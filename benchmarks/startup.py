"""Start-up cost: worker boot (``create_app``) and ``cds-service call``, in fresh processes.

``python -m benchmarks.startup`` prints a table; ``--record`` also writes it into BENCHMARKS.md
(section "Start-up"). Each figure is the median of several fresh processes, set against the
interpreter's own start (``python -c pass``) measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 7

# Times create_app alone, after the imports a gunicorn master has done before forking workers.
_WORKER_BOOT = """
import json, time
import cds_service.web.api
from cds_service import create_app
from cds_service.config import Settings
settings = Settings.from_env()
t = time.perf_counter()
app = create_app(settings)
boot = time.perf_counter() - t
app.extensions["cds_runtime"].close()
print(json.dumps({"boot": boot}))
"""

# Times the imports and create_app together: a process that imported nothing beforehand.
_COLD_BOOT = """
import json, time
t = time.perf_counter()
from cds_service import create_app
import cds_service.web.api
app = create_app()
boot = time.perf_counter() - t
app.extensions["cds_runtime"].close()
print(json.dumps({"boot": boot}))
"""


def _wall(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=120)
    return time.perf_counter() - start


def _reported(code: str, env: dict[str, str]) -> float:
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, timeout=120
    )
    return float(json.loads(done.stdout.decode().strip().splitlines()[-1])["boot"])


def measure(runs: int = RUNS) -> dict[str, float]:
    """Median seconds of each step over ``runs`` fresh processes."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CDS_")},
            "CDS_DATABASE_URL": f"sqlite:///{tmp}/feedback.sqlite3",
            "CDS_LOG_LEVEL": "ERROR",
        }
        cli = [sys.executable, "-m", "cds_service", "call", "patient-view-foot-drop"]
        samples: dict[str, list[float]] = {
            "interpreter": [],
            "worker_boot": [],
            "cold_boot": [],
            "call": [],
        }
        for _ in range(runs):
            samples["interpreter"].append(_wall([sys.executable, "-c", "pass"], env))
            samples["worker_boot"].append(_reported(_WORKER_BOOT, env))
            samples["cold_boot"].append(_reported(_COLD_BOOT, env))
            samples["call"].append(_wall(cli, env))
    return {name: statistics.median(values) for name, values in samples.items()}


def render(figures: dict[str, float]) -> str:
    load = os.getloadavg()[0]
    base = figures["interpreter"]
    rows = [
        ("worker boot: `create_app()` after the master's imports", "worker_boot", 0.5),
        ("cold boot: imports + `create_app()`", "cold_boot", None),
        ("`cds-service call patient-view-foot-drop` (whole process)", "call", 1.0),
        ("`python -c pass` (the interpreter alone)", "interpreter", None),
    ]
    lines = [
        "## Start-up",
        "",
        f"`python -m benchmarks.startup`: median of {RUNS} fresh processes each; load average "
        f"{load:.2f} at the time. × = against the interpreter's own start in the same run.",
        "",
        "| step | seconds | × interpreter | target | met |",
        "|---|---|---|---|---|",
    ]
    for label, key, limit in rows:
        value = figures[key]
        met = "" if limit is None else ("yes" if value < limit else "**no**")
        target = "" if limit is None else f"< {limit} s"
        lines.append(f"| {label} | {value:.3f} | {value / base:.1f} | {target} | {met} |")
    return "\n".join(lines) + "\n"


def record(section: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    """Replace (or append) the "## Start-up" section of BENCHMARKS.md."""
    text = path.read_text("utf-8") if path.exists() else "# Benchmarks\n"
    head, marker, rest = text.partition("## Start-up")
    tail = ""
    if marker:
        following = rest.find("\n## ")
        tail = rest[following + 1 :] if following >= 0 else ""
    path.write_text(head.rstrip("\n") + "\n\n" + section + ("\n" + tail if tail else ""), "utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__)
    parser.add_argument("--record", action="store_true", help="write the table to BENCHMARKS.md")
    args = parser.parse_args(argv)
    section = render(measure())
    print(section)
    if args.record:
        record(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())

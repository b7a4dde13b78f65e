"""Drive a server from a separate process: wrk when installed (never installed from here) or,
failing that, a small Python load generator (``python -m benchmarks.load``) with the same output.

Both keep ``connections`` requests in flight for ``duration`` seconds over keep-alive loopback
connections, send the body and a fresh token per request, and report latency percentiles,
throughput and every kind of error (a status of 400 or more counts as one).
"""

from __future__ import annotations

import http.client
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
WRK_SCRIPT = HERE / "wrk_script.lua"


@dataclass(frozen=True)
class LoadSpec:
    """One load run: where, what, with how many clients, for how long."""

    url: str  # full URL incl. path
    method: str = "GET"
    body_file: Path | None = None
    tokens_file: Path | None = None
    cycle_tokens: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    connections: int = 1
    duration: float = 5.0
    timeout: float = 30.0


@dataclass(frozen=True)
class LoadResult:
    """Latency in milliseconds, throughput in requests per second, errors counted."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    tokens_exhausted: int
    tool: str
    max_ms: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


#: What to run when wrk is missing (the benchmark never installs anything itself).
WRK_HINT = "apt-get install wrk"


def find_wrk() -> str | None:
    """The path of wrk, or None (then the Python generator is used and the report says so)."""
    return shutil.which("wrk")


def run(spec: LoadSpec, wrk: str | None) -> LoadResult:
    """Run ``spec`` with wrk when given, else with the Python generator (in a child process)."""
    return _run_wrk(spec, wrk) if wrk else _run_python(spec)


def _script_args(spec: LoadSpec) -> list[str]:
    args = [
        spec.method,
        str(spec.body_file) if spec.body_file else "-",
        str(spec.tokens_file) if spec.tokens_file else "-",
        "1" if spec.cycle_tokens else "0",
    ]
    return args + [f"{name}: {value}" for name, value in spec.headers]


def _run_wrk(spec: LoadSpec, wrk: str) -> LoadResult:
    command = [
        wrk,
        "-t1",
        f"-c{spec.connections}",
        f"-d{max(1, round(spec.duration))}s",
        f"--timeout={int(spec.timeout)}s",
        "-s",
        str(WRK_SCRIPT),
        spec.url,
        "--",
        *_script_args(spec),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=spec.duration + spec.timeout + 30
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-800:]}{done.stderr}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    errors = sum(
        data[k]
        for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return LoadResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=errors,
        tokens_exhausted=data["tokens_exhausted"],
        tool="wrk",
        max_ms=data["max_us"] / 1000,
    )


def _run_python(spec: LoadSpec) -> LoadResult:
    payload = json.dumps(
        {
            "url": spec.url,
            "method": spec.method,
            "body_file": str(spec.body_file) if spec.body_file else None,
            "tokens_file": str(spec.tokens_file) if spec.tokens_file else None,
            "cycle": spec.cycle_tokens,
            "headers": list(spec.headers),
            "connections": spec.connections,
            "duration": spec.duration,
            "timeout": spec.timeout,
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.load"],
        input=payload,
        capture_output=True,
        text=True,
        cwd=HERE.parent,
        timeout=spec.duration + spec.timeout + 30,
        check=True,
    )
    return LoadResult(**json.loads(done.stdout), tool="python")


def _generate(job: dict) -> dict:
    """The Python generator: ``connections`` threads, each with its own keep-alive connection."""
    parts = urlsplit(job["url"])
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    body = Path(job["body_file"]).read_bytes() if job["body_file"] else None
    tokens = Path(job["tokens_file"]).read_text().split() if job["tokens_file"] else []
    base_headers = dict(job["headers"])
    if body is not None:
        base_headers["Content-Type"] = "application/json"
    lock = threading.Lock()
    state = {"next": 0, "exhausted": 0, "errors": 0}
    latencies: list[float] = []
    stop_at = time.monotonic() + job["duration"]

    def token() -> str | None:
        if not tokens:
            return None
        with lock:
            index = state["next"]
            state["next"] += 1
            if index >= len(tokens):
                if not job["cycle"]:
                    state["exhausted"] += 1
                index = index % len(tokens) if job["cycle"] else len(tokens) - 1
            return tokens[index]

    def client() -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=job["timeout"])
        mine: list[float] = []
        errors = 0
        while time.monotonic() < stop_at:
            headers = dict(base_headers)
            bearer = token()
            if bearer:
                headers["Authorization"] = f"Bearer {bearer}"
            started = time.perf_counter()
            try:
                connection.request(job["method"], path, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                if response.status >= 400:
                    errors += 1
            except (OSError, http.client.HTTPException):
                errors += 1
                connection.close()
                continue
            mine.append(time.perf_counter() - started)
        connection.close()
        with lock:
            latencies.extend(mine)
            state["errors"] += errors

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(job["connections"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - started
    ordered = sorted(latencies) or [0.0]
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return {
        "requests": len(latencies),
        "seconds": seconds,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": p99 * 1000,
        "max_ms": ordered[-1] * 1000,
        "errors": state["errors"],
        "tokens_exhausted": state["exhausted"],
    }


if __name__ == "__main__":
    print(json.dumps(_generate(json.loads(sys.stdin.read()))))

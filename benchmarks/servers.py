"""Gunicorn as a child process on a free loopback port, with the repository's gunicorn config."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICE_APP = "cds_service:create_app()"
BASELINE_APP = "benchmarks.baseline_app:create_app()"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_environment(settings: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any ``CDS_*`` variable, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update(settings)
    return env


class Gunicorn:
    """``gunicorn -c python:cds_service.gunicorn_conf APP`` on 127.0.0.1; stopped on exit."""

    def __init__(self, app: str, env: Mapping[str, str], log: Path, port: int | None = None):
        self.app = app
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = {**env, "HOST": "127.0.0.1", "PORT": str(self.port)}
        self._log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready_path: str = "/healthz", timeout: float = 30.0) -> Gunicorn:
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:cds_service.gunicorn_conf",
            self.app,
        ]
        with self._log.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self._env, stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}: {self.tail()}")
            if len(self.worker_pids()) >= self.expected_workers() and self._answers(ready_path):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn not ready after {timeout:.0f} s: {self.tail()}")

    def expected_workers(self) -> int:
        return int(self._env.get("WEB_CONCURRENCY", max(2, os.cpu_count() or 1)))

    def _answers(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def worker_pids(self) -> list[int]:
        """PIDs of the master's worker processes (from /proc)."""
        if self.process is None:
            return []
        return children(self.process.pid)

    def workers_rss_bytes(self) -> int:
        """Resident memory of all workers together."""
        return sum(rss_bytes(pid) for pid in self.worker_pids())

    def stop(self, timeout: float = 25.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def tail(self, size: int = 3000) -> str:
        return self._log.read_text(errors="replace")[-size:] if self._log.exists() else ""

    def __enter__(self) -> Gunicorn:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name (field 2) may hold spaces; the parent pid follows the closing paren
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0

"""`cds-service serve` ends its start-up with one line saying where to click next.

Started in its own session (development settings), with and without nginx in front; the whole
process group is stopped in `finally`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from benchmarks.slow_clients import free_port
from cds_service.ready import browsable_base, ready_line
from tests.conftest import ROOT
from tests.integration.serve_support import require_nginx
from tests.processes import stop_group

pytestmark = pytest.mark.integration

READY_SECONDS = 90.0


def _serve_until_ready(env: dict[str, str], log: Path) -> tuple[str, str]:
    """Start serve, wait for its ready line, make a request; (the line, the whole log)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cds_service", "serve", "--port", str(port)],
            cwd=log.parent,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + READY_SECONDS
        while "footdrop-cds ready" not in log.read_text(errors="replace"):
            assert process.poll() is None, log.read_text(errors="replace")[-2000:]
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-2000:]
            time.sleep(0.2)
        (line,) = [
            x for x in log.read_text(errors="replace").splitlines() if "footdrop-cds ready" in x
        ]
        assert requests.get(f"{base}/cds-services", timeout=30).status_code == 200
        assert requests.get(f"{base}/", timeout=30).status_code == 200
        time.sleep(1.0)  # a second worker booting later must not print it again
    finally:
        stop_group(process)
    text = log.read_text(errors="replace")
    assert text.count("footdrop-cds ready") == 1, text[-2000:]
    assert line == ready_line(base, landing_page=True)
    after = text.split(line, 1)[1]
    # It ends the start-up: no worker boots or reports "started" after it.
    assert "Booting worker" not in after and '"msg":"started"' not in after, after[:2000]
    return line, text


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update({"CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'f.sqlite3'}", "WEB_CONCURRENCY": "2"})
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def test_behind_nginx_the_supervisor_prints_where_to_click_once(tmp_path):
    """Behind nginx the supervisor prints the card-preview URL once the service answers."""
    require_nginx()
    line, _ = _serve_until_ready(_env(tmp_path, CDS_PROXY="nginx"), tmp_path / "serve.log")
    assert line.startswith("footdrop-cds ready: open http://127.0.0.1:")
    assert "(card preview)" in line and "/cds-services" in line


def test_gunicorn_alone_prints_the_same_line_once(tmp_path):
    """Without nginx (CDS_PROXY=off) the first worker prints the same line, once."""
    line, _ = _serve_until_ready(_env(tmp_path, CDS_PROXY="off"), tmp_path / "serve.log")
    assert "(card preview)" in line


def test_browsable_base_and_production_wording():
    """A wildcard bind is shown as loopback; production points at discovery, not the preview."""
    assert browsable_base("0.0.0.0", 8080) == "http://127.0.0.1:8080"
    assert browsable_base("::", 8080) == "http://[::1]:8080"
    assert browsable_base("localhost", 9) == "http://localhost:9"
    assert browsable_base("[::1]", 9) == "http://[::1]:9"
    production = ready_line("http://127.0.0.1:8080", landing_page=False)
    assert "card preview" not in production and production.count("\n") == 0
    assert production.endswith("discovery at http://127.0.0.1:8080/cds-services")

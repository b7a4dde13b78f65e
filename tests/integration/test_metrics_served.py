"""/metrics and the JSON logs of a real gunicorn with two workers: counts add up across workers,
and every log line of requests answered just before SIGTERM reaches the output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT
from tests.fixture_support import ORDER_SIGN_FIXTURES, PREVENTION_SERVICES, load_fixture
from tests.processes import free_port, stop_group, wait_until_healthy

HOOKS = 60  # each on a fresh connection (no keep-alive), so both workers take some
BURST = 40  # answered just before SIGTERM: every one of their log lines must be written


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def _worker_pids(log_path: Path, service: str) -> Counter[int]:
    """Hook calls answered per worker, from the JSON request lines (each carries its pid)."""
    lines = [json.loads(x) for x in log_path.read_text().splitlines() if x.startswith("{")]
    return Counter(
        x["pid"]
        for x in lines
        if x.get("event") == "request"
        and x.get("service_id") == service
        and x.get("path") == "/cds-services/<service_id>"
    )


def _total(samples: dict[Any, float], name: str, **labels: str) -> float:
    return sum(
        value
        for (found, pairs), value in samples.items()
        if found == name and all(dict(pairs).get(k) == v for k, v in labels.items())
    )


def test_metrics_add_up_across_two_workers_and_logs_survive_sigterm(tmp_path: Path) -> None:
    """Two workers both serve; /metrics sums them exactly; lines logged just before SIGTERM
    are all written (the queue is drained at worker exit)."""
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_99999.db").write_bytes(b"stale")  # a previous run's file: removed
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDS_", "PROMETHEUS"))}
    env.update(
        HOME=str(tmp_path),
        PORT=str(port),
        WEB_CONCURRENCY="2",
        GUNICORN_THREADS="2",  # a busy worker leaves new connections to the other
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        CDS_DATABASE_URL=f"sqlite:///{tmp_path / 'feedback.sqlite3'}",
    )
    command = [sys.executable, "-m", "gunicorn", "-c", "python:cds_service.gunicorn_conf"]
    log_path = tmp_path / "server.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [*command, "cds_service:create_app()"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    fixture = load_fixture(ORDER_SIGN_FIXTURES[9])  # two prevention cards with suggestions
    service = PREVENTION_SERVICES["order-sign"]

    def call(instance: str) -> dict[str, Any]:
        body = {**fixture["request"], "hookInstance": instance}
        answer = requests.post(
            f"{base}/cds-services/{service}",
            json=body,
            headers={"Connection": "close"},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    try:
        wait_until_healthy(process, f"{base}/healthz")
        bodies: list[dict[str, Any]] = []
        for _ in range(10):  # until both workers have served (each batch on fresh connections)
            with ThreadPoolExecutor(12) as pool:
                bodies += pool.map(call, [str(uuid.uuid4()) for _ in range(HOOKS)])
            if len(_worker_pids(log_path, service)) == 2:
                break
        missing = requests.post(f"{base}/cds-services/no-such-service", json={}, timeout=30)
        assert missing.status_code == 404
        card = bodies[0]["cards"][0]
        item = {
            "card": card["uuid"],
            "outcome": "accepted",
            "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
            "outcomeTimestamp": "2026-01-02T03:04:05Z",
        }
        feedback = [
            requests.post(
                f"{base}/cds-services/{service}/feedback", json={"feedback": [item]}, timeout=30
            )
            for _ in range(3)
        ]
        assert [r.json() for r in feedback] == [
            {"stored": 1, "duplicates": 0},
            {"stored": 0, "duplicates": 1},
            {"stored": 0, "duplicates": 1},
        ]
        scraped = requests.get(f"{base}/metrics", timeout=30)
        assert scraped.status_code == 200
        assert scraped.headers["Content-Type"].startswith("text/plain")
        samples = _samples(scraped.text)

        route = "/cds-services/<service_id>"
        count = "cds_http_request_duration_seconds_count"
        sent = len(bodies)
        assert _total(samples, count, endpoint=route, service=service, status="200") == sent
        assert _total(samples, count, endpoint=route, service="", status="404") == 1
        assert _total(samples, count, endpoint=f"{route}/feedback", status="200") == 3
        indicators = Counter(c["indicator"] for b in bodies for c in b["cards"])
        for indicator, n in indicators.items():
            assert _total(samples, "cds_cards_total", service=service, indicator=indicator) == n
        offered = sum(len(c.get("suggestions", ())) for b in bodies for c in b["cards"])
        assert offered > 0
        assert _total(samples, "cds_suggestions_total", service=service) == offered
        assert _total(samples, "cds_feedback_items_total", result="stored") == 1
        assert _total(samples, "cds_feedback_items_total", result="duplicate") == 2
        assert not (metrics_dir / "counter_99999.db").exists()

        burst = [str(uuid.uuid4()) for _ in range(BURST)]
        with ThreadPoolExecutor(12) as pool:
            list(pool.map(call, burst))
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        stop_group(process)
        log.close()

    by_pid = _worker_pids(log_path, service)
    assert len(by_pid) == 2, f"one worker served everything: {by_pid}"
    lines = [json.loads(x) for x in log_path.read_text().splitlines() if x.startswith("{")]
    handled = [x for x in lines if x.get("event") == "request" and x.get("service_id") == service]
    logged = {x.get("hook_instance") for x in handled}
    assert set(burst) <= logged
    gunicorn_lines = [x for x in lines if x["logger"].startswith("gunicorn")]
    assert any("Booting worker" in x["msg"] for x in gunicorn_lines)  # gunicorn's own, as JSON
    # Every line is JSON but the one plain "where to click next" line a person reads at start-up.
    plain = [x for x in log_path.read_text().splitlines() if x.strip() and not x.startswith("{")]
    assert [x for x in plain if not x.startswith("footdrop-cds ready: ")] == [], plain
    assert len(plain) <= 1, plain

"""Issue 14 item 3: 16 keep-alive clients through `cds-service serve` reach both gunicorn workers.

Each worker has a socket of its own (cds_service/worker_sockets.py) and nginx sends each
request to the one with the fewest in flight (``least_conn``): no client stays pinned to a
worker. Responses are counted per worker pid from gunicorn's own access log (JSON lines)
(``GUNICORN_CMD_ARGS``, format ``%(p)s %(U)s``). The bound is loose (0.8; `make bench`
measures against 0.65): with one shared socket one worker served 80 % of them (193 of 241).
"""

from __future__ import annotations

import collections
import threading
import time
from pathlib import Path

import pytest
import requests

from benchmarks.slow_clients import Served
from cds_service.gunicorn_logging import answered_by_worker
from tests.conftest import patient_view_request
from tests.integration.serve_support import require_nginx

pytestmark = pytest.mark.integration

CLIENTS = 16
CALLS_PER_CLIENT = 15


def test_sixteen_keep_alive_clients_are_spread_over_both_workers(tmp_path: Path) -> None:
    """Each worker serves some requests, and the busiest at most 80 % of them."""
    require_nginx()
    access = tmp_path / "access.log"
    server = Served(
        {
            "CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'feedback.sqlite3'}",
            "CDS_PROXY": "nginx",
        },
        tmp_path / "serve.log",
        tmp_path,
    )
    server.env["GUNICORN_ACCESS_LOG"] = str(access)  # JSON lines, each with the worker's pid
    url = f"http://127.0.0.1:{server.port}/cds-services/footdrop-im-injection"
    body = patient_view_request()
    statuses: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(CLIENTS)

    def client() -> None:
        with requests.Session() as session:  # one keep-alive connection per client
            barrier.wait(timeout=60)
            mine = [
                session.post(url, json=body, timeout=60).status_code
                for _ in range(CALLS_PER_CLIENT)
            ]
        with lock:
            statuses.extend(mine)

    with server:
        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        deadline = time.monotonic() + 30  # a worker logs just after it has answered
        while len(pids := _pids(access)) < len(statuses) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert len(statuses) == CLIENTS * CALLS_PER_CLIENT and set(statuses) == {200}
    per_worker = collections.Counter(pids)
    assert len(per_worker) == 2, per_worker
    assert sum(per_worker.values()) == len(statuses)
    busiest = max(per_worker.values()) / sum(per_worker.values())
    assert busiest <= 0.8, per_worker


def _pids(access: Path) -> list[str]:
    """The pid of each hook call's worker (readiness probes left out)."""
    counts = answered_by_worker(access.read_text(), "/cds-services/footdrop-im-injection")
    return [str(pid) for pid in counts.elements()]

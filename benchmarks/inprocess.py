"""In-process cost of one patient-view call, each step against ``json.loads`` of the same body.

Steps: parse (``json.loads``), request-schema validation, prefetch planning (flattening the
Bundles), the domain call (``evaluate_patient_view`` through the service's handler, exactly as
the web layer calls it), and the whole call through ``app.test_client()`` (auth off, tmp SQLite).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.bundles import SERVICE_ID, encode
from cds_service import create_app, schemas
from cds_service.config import DEFAULT_CONTENT_DIR, Settings
from cds_service.domain.prefetch import plan_prefetch
from cds_service.domain.request import HookRequest
from cds_service.edge.content import load_content
from cds_service.edge.discovery import load_services
from cds_service.web.handlers import build_handlers


@dataclass(frozen=True)
class InProcess:
    """Median milliseconds per step for one request body, and the cards it gave."""

    resources: int
    body_bytes: int
    json_loads_ms: float
    schema_ms: float
    plan_ms: float
    domain_ms: float
    test_client_ms: float
    cards: int

    @property
    def domain_ratio(self) -> float:
        return self.domain_ms / self.json_loads_ms

    @property
    def test_client_ratio(self) -> float:
        return self.test_client_ms / self.json_loads_ms


def median_seconds(call: Callable[[], Any], budget: float = 0.4, runs: int = 5) -> float:
    """Median wall time of ``call``: at least ``runs`` runs and about ``budget`` seconds."""
    times: list[float] = []
    spent = 0.0
    while len(times) < runs or (spent < budget and len(times) < 500):
        started = time.perf_counter()
        call()
        elapsed = time.perf_counter() - started
        times.append(elapsed)
        spent += elapsed
    return statistics.median(times)


class Bench:
    """The service's content, handler and an app, built once for all request sizes."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="footdrop-bench-")
        settings = Settings(
            environment="test",
            database_url=f"sqlite:///{Path(self._tmp.name) / 'inprocess.sqlite3'}",
            content_dir=DEFAULT_CONTENT_DIR,
            auth=False,
            log_level="WARNING",
        )
        content = load_content(settings.content_dir)
        self.spec = next(s for s in load_services(settings.content_dir) if s.id == SERVICE_ID)
        self.handler = build_handlers(content, settings)[SERVICE_ID]
        self.app = create_app(settings)

    def close(self) -> None:
        self.app.extensions["cds_runtime"].close()
        self._tmp.cleanup()

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def measure(self, request: dict[str, Any], count: int, budget: float = 0.4) -> InProcess:
        body = encode(request)
        document = json.loads(body)
        hook_request = HookRequest.from_json(document)
        keys = self.spec.prefetch_keys

        def plan() -> list[dict[str, Any]]:
            gathered = plan_prefetch(hook_request.prefetch, keys).resources
            return [r for key in keys for r in gathered.get(key, ())]

        resources = plan()
        now = datetime.now(UTC)
        evaluation = self.handler(hook_request, resources, now)
        client = self.app.test_client()
        url = f"/cds-services/{SERVICE_ID}"
        headers = {"Content-Type": "application/json"}

        def full() -> None:
            response = client.post(url, data=body, headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"in-process call answered {response.status_code}")

        return InProcess(
            resources=count,
            body_bytes=len(body),
            json_loads_ms=median_seconds(lambda: json.loads(body), budget) * 1000,
            schema_ms=median_seconds(lambda: schemas.hook_request_problems(document), budget)
            * 1000,
            plan_ms=median_seconds(plan, budget) * 1000,
            domain_ms=median_seconds(lambda: self.handler(hook_request, resources, now), budget)
            * 1000,
            test_client_ms=median_seconds(full, budget) * 1000,
            cards=len(evaluation.cards),
        )

"""What is measured over HTTP: one request per scenario, sent many times by the load generator."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.bundles import SERVICE_ID, encode, fallback_request
from cds_service.config import DEFAULT_CONTENT_DIR
from cds_service.edge.discovery import load_services

HOOK_PATH = f"/cds-services/{SERVICE_ID}"
REQUIRED_KEYS = tuple(
    item.key
    for spec in load_services(DEFAULT_CONTENT_DIR)
    if spec.id == SERVICE_ID
    for item in spec.prefetch
    if item.required
)


@dataclass(frozen=True)
class Scenario:
    """One kind of request; ``body_file`` is None for a GET."""

    name: str
    title: str
    path: str
    body_file: Path | None
    resources: int = 0
    compare_to: str | None = None  # another scenario whose service latency this one is held to

    @property
    def method(self) -> str:
        return "GET" if self.body_file is None else "POST"

    @property
    def needs_token(self) -> bool:
        return self.body_file is not None


def build(
    workdir: Path, requests: dict[int, dict[str, Any]], fhir_base: str, typical: int
) -> list[Scenario]:
    """Scenarios for discovery, each patient size and the two fallback fetches."""

    def body(name: str, document: dict[str, Any]) -> Path:
        path = workdir / f"{name}.json"
        path.write_bytes(encode(document))
        return path

    scenarios = [Scenario("discovery", "discovery (GET /cds-services)", "/cds-services", None)]
    for count, request in sorted(requests.items()):
        name = "typical" if count == typical else f"large-{count}"
        title = f"patient-view, {count} resources" + (" (typical)" if count == typical else "")
        scenarios.append(Scenario(name, title, HOOK_PATH, body(name, request), count))
    base = requests[typical]
    one = fallback_request(base, fhir_base, REQUIRED_KEYS[:1])
    seven = fallback_request(base, fhir_base, REQUIRED_KEYS)
    scenarios.append(
        Scenario(
            "fallback-1",
            "patient-view, 1 query to a FHIR server (+50 ms per query)",
            HOOK_PATH,
            body("fallback-1", one),
            typical,
        )
    )
    scenarios.append(
        Scenario(
            "fallback-7",
            "patient-view, 7 queries to a FHIR server (+50 ms per query)",
            HOOK_PATH,
            body("fallback-7", seven),
            typical,
            compare_to="fallback-1",
        )
    )
    return scenarios


@dataclass(frozen=True)
class Probe:
    """One request sent by hand before the load: status, answer size, cards, seconds."""

    status: int
    response_bytes: int
    cards: int | None
    seconds: float


def probe(base_url: str, scenario: Scenario, token: str | None) -> Probe:
    """Send the scenario's request once (the service must answer 200 before it is measured)."""
    data = scenario.body_file.read_bytes() if scenario.body_file else None
    request = urllib.request.Request(base_url + scenario.path, data=data, method=scenario.method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        raw, status = error.read(), error.code
    seconds = time.perf_counter() - started
    cards = None
    if status == 200 and scenario.needs_token:
        cards = len(json.loads(raw).get("cards", []))
    return Probe(status, len(raw), cards, seconds)

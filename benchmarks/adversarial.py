"""The engine's cost on adversarial prefetch shapes next to the normal one (issue 11, item 4).

``python -m benchmarks.adversarial [N ...]`` builds, for each N, patients whose resources multiply
the (trigger, injection) pairs the rules judge, times ``evaluate_patient_view`` (best of 3) and
prints it against ``json.loads`` of the same resources, measured in the same run. Before the time
index and the work budget (benchmarks/adversarial.py on the revision-1 engine): 100 x 100 took
0.43 s, 200 x 200 3.1 s, i.e. roughly cubic; 5,000 x 5,000 would have taken hours.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from cds_service.config import DEFAULT_CONTENT_DIR
from cds_service.domain.engine import evaluate_patient_view
from cds_service.edge.content import load_content

NOW = datetime(2025, 6, 13, 10, tzinfo=UTC)
SNOMED = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
ACTIVE = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
    ]
}


def _patient() -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "p1", "birthDate": "1970-01-01"}


def _injection(i: int) -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": f"i{i}",
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": SNOMED, "code": "76601001"}]},
        "performedDateTime": (NOW - timedelta(days=2, minutes=i)).isoformat(),
        "bodySite": [
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v3-ActSite", "code": "LG"}
                ]
            }
        ],
    }


def _condition(j: int, code: str = "M21.372", days: int = 1) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": f"c{code}-{j}",
        "subject": {"reference": "Patient/p1"},
        "clinicalStatus": ACTIVE,
        "code": {"coding": [{"system": ICD, "code": code}]},
        "onsetDateTime": (NOW - timedelta(days=days, minutes=j)).isoformat(),
    }


def _grade(k: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"g{k}",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "code": {
            "coding": [
                {
                    "system": "http://example.org/fhir/CodeSystem/footdrop-cds-local",
                    "code": "mrc-ankle-dorsiflexion",
                }
            ]
        },
        "bodySite": {"text": "left ankle"},
        "effectiveDateTime": (NOW - timedelta(hours=20, minutes=k)).isoformat(),
        "valueInteger": 2,
    }


def _noise(k: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"n{k}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "effectiveDateTime": (NOW - timedelta(minutes=k)).isoformat(),
        "valueQuantity": {"value": 70, "unit": "/min"},
    }


SHAPES: dict[str, Callable[[int], list[dict[str, Any]]]] = {
    "normal: 1 foot drop, 1 injection, N vital signs": lambda n: [
        _condition(0),
        _injection(0),
        *(_noise(k) for k in range(n)),
    ],
    "N injections x N foot-drop Conditions": lambda n: [
        *(_injection(i) for i in range(n)),
        *(_condition(j) for j in range(n)),
    ],
    "N injections x 1 foot-drop Condition": lambda n: [
        *(_injection(i) for i in range(n)),
        _condition(0),
    ],
    "1 injection x N foot-drop Conditions": lambda n: [
        _injection(0),
        *(_condition(j) for j in range(n)),
    ],
    "N injections x N MRC grades": lambda n: [
        *(_injection(i) for i in range(n)),
        *(_grade(k) for k in range(n)),
    ],
    "N injections, 1 foot drop, N competing disc Conditions": lambda n: [
        *(_injection(i) for i in range(n)),
        _condition(0),
        *(_condition(j, "M51.26", days=30) for j in range(n)),
    ],
}


def _best(fn: Callable[[], object], runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    sizes = [int(a) for a in (argv if argv is not None else sys.argv[1:])] or [100, 1000, 5000]
    content = load_content(DEFAULT_CONTENT_DIR)
    print("| shape | N | resources | engine s | json.loads ms | engine / json.loads | card |")
    print("|---|---|---|---|---|---|---|")
    for name, build in SHAPES.items():
        for n in sizes:
            resources = [_patient(), *build(n)]
            body = json.dumps(resources)
            base = _best(lambda body=body: json.loads(body))
            result: list[Any] = []

            def run(resources: list[dict[str, Any]] = resources, out: list[Any] = result) -> None:
                out[:] = [
                    evaluate_patient_view({"patientId": "p1"}, resources, content, NOW, "bench")
                ]

            cost = _best(run)
            cards = ", ".join(c["indicator"] for c in result[0].cards) or "none"
            print(
                f"| {name} | {n} | {len(resources)} | {cost:.3f} | {base * 1000:.1f} | "
                f"{cost / base:.1f} | {cards} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

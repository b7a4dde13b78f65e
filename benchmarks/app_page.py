"""The evidence and timeline page's server time at 10 and 100 MRC grades (issue 12, item 6).

``python -m benchmarks.app_page [N ...]`` serves fixture 13's patient plus N dorsiflexion grades
(alternating sides, one a week) from a loopback FHIR stub, opens ``GET /app/`` through the Flask
app with a sealed session cookie, and prints the median and best of 15 page loads: the whole
server time (FHIR reads on loopback, the engine's trace, the SVG and HTML) and, separately, the
trace plus rendering without the FHIR reads.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.fhir_stub import FhirStub
from cds_service import create_app
from cds_service.app.recompute import explain
from cds_service.app.session import SessionBox
from cds_service.app.views import _render_page
from cds_service.config import DEFAULT_CONTENT_DIR, Settings

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = (
    ROOT / "fixtures" / "patient-view" / "13-no-recovery-after-4-months-surgical-referral.json"
)
SECRET = "benchmark-secret-" + "x" * 32
RUNS = 15
NOW = datetime(2025, 6, 2, 10, tzinfo=UTC)  # the fixture's evalTime


def _resources(grades: int) -> dict[str, list[dict[str, Any]]]:
    fixture = json.loads(FIXTURE.read_text("utf-8"))
    by_type: dict[str, list[dict[str, Any]]] = {}
    for item in fixture["request"]["prefetch"].values():
        if not isinstance(item, dict):
            continue
        found = [e["resource"] for e in item.get("entry", ())] if "entry" in item else [item]
        if item.get("resourceType") == "Bundle" and not found:
            continue
        for resource in found:
            if resource["resourceType"] != "Observation":
                by_type.setdefault(resource["resourceType"], []).append(resource)
    start = datetime(2025, 1, 23, 9, tzinfo=UTC)
    by_type["Observation"] = [
        {
            "resourceType": "Observation",
            "id": f"g{i}",
            "status": "final",
            "code": {
                "coding": [
                    {
                        "system": "http://example.org/fhir/CodeSystem/site-flowsheet",
                        "code": "MRC-ANKLE-DF-L" if i % 2 else "MRC-ANKLE-DF-R",
                    }
                ]
            },
            "subject": {"reference": "Patient/pv13"},
            "effectiveDateTime": (start + timedelta(hours=i * 30)).isoformat(),
            "valueInteger": 1 + (i * 3) // max(1, grades) % 4,
        }
        for i in range(grades)
    ]
    return by_type


def _answers(by_type: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for rtype in ("Condition", "Procedure", "MedicationAdministration", "Immunization",
                  "Observation", "MedicationRequest", "MedicationStatement", "DeviceRequest",
                  "ServiceRequest", "Appointment"):  # fmt: skip
        entries = [{"resource": r} for r in by_type.get(rtype, [])]
        answers[rtype] = {"resourceType": "Bundle", "type": "searchset", "entry": entries}
    answers["Patient"] = by_type["Patient"][0]
    return answers


def measure(grades: int) -> tuple[float, float, float, float]:
    """(median, best) ms of the whole page, then (median, best) of trace + render only."""
    by_type = _resources(grades)
    with tempfile.TemporaryDirectory() as directory:
        answers = Path(directory) / "answers.json"
        answers.write_text(json.dumps(_answers(by_type)))
        with FhirStub(answers, 0.0) as stub:
            settings = Settings(
                environment="test", database_url=f"sqlite:///{directory}/f.sqlite3",
                content_dir=DEFAULT_CONTENT_DIR, allow_insecure_fhir=True, app_secret=SECRET,
            )  # fmt: skip
            app = create_app(settings, clock=lambda: NOW)
            try:
                session = {
                    "iss": stub.base_url,
                    "access_token": "t",
                    "patient": "pv13",
                    "scope": "patient/Observation.rs patient/Observation.c",
                    "csrf": "c",
                    "app_context": {},
                    "expires": int(time.time()) + 3600,
                }
                cookie = SessionBox(SECRET, "session").seal(session)
                client = app.test_client()
                client.set_cookie("footdrop_app_session", cookie, path="/app")
                whole = []
                for _ in range(RUNS):
                    started = time.perf_counter()
                    response = client.get("/app/")
                    whole.append(time.perf_counter() - started)
                    assert response.status_code == 200, response.status_code
                drawn = response.get_data(as_text=True).count('data-kind="grade"')
                assert drawn == grades, (drawn, grades)
                resources = [r for rs in by_type.values() for r in rs]
                runtime = app.extensions["cds_app"]
                inner = []
                for _ in range(RUNS):
                    with app.test_request_context("/app/"):
                        started = time.perf_counter()
                        trace = explain({"patientId": "pv13"}, resources, runtime.content, NOW,
                                        "bench", runtime.policy)  # fmt: skip
                        _render_page(trace, session)
                        inner.append(time.perf_counter() - started)
            finally:
                app.extensions["cds_runtime"].close()
    ms = 1000.0
    return (statistics.median(whole) * ms, min(whole) * ms,
            statistics.median(inner) * ms, min(inner) * ms)  # fmt: skip


def main(argv: list[str]) -> int:
    sizes = [int(a) for a in argv] or [10, 100]
    print("grades  page median  page best  trace+render median  trace+render best  (ms)")
    for n in sizes:
        page_median, page_best, inner_median, inner_best = measure(n)
        print(f"{n:6d}  {page_median:11.1f}  {page_best:9.1f}  {inner_median:19.1f}  "
              f"{inner_best:17.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

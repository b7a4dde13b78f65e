"""Schemathesis against the service's own ``/openapi.json``, in process (WSGI).

Every operation is called with generated requests, valid (positive) and invalid (negative), with a
fixed number of examples and a derandomized seed so CI sees the same requests every run. Checked
on every answer: no 5xx, the status code is documented for the operation, the content type is the
documented one and the body matches the documented schema; invalid requests must be refused.

The service never reaches the network here: every FHIR request the app makes (``fhirServer`` is
generated too) is answered by requests-mock with an empty searchset Bundle.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from cds_service import create_app
from cds_service.config import DEFAULT_CONTENT_DIR, Settings
from cds_service.edge.fhir_client import FetchResult
from tests.conftest import PREFETCH_KEYS, FrozenClock, dispose

CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE

HOOK = "/cds-services/{service_id}"
# A generated hook request names a random hook most of the time (400 "unknown/wrong hook") and
# lacks most prefetch keys (412); this variant makes it a patient-view call whose absent keys are
# null ("known empty"), so that the generated prefetch data reaches the engine. The body stays
# valid: the patient-view context is met and null is a valid prefetch value.
PATIENT_VIEW = {"hook": "patient-view", "context": {"userId": "Practitioner/f", "patientId": "p1"}}


def as_patient_view(body: dict) -> dict:
    prefetch = body.get("prefetch") if isinstance(body.get("prefetch"), dict) else {}
    return {**body, **PATIENT_VIEW, "prefetch": {**dict.fromkeys(PREFETCH_KEYS), **prefetch}}


# (path, method, mode, patient_view, examples): about 300 requests in all.
PLAN = [
    (HOOK, "POST", POSITIVE, False, 60),
    (HOOK, "POST", POSITIVE, True, 70),
    (HOOK, "POST", NEGATIVE, False, 60),
    ("/cds-services/{service_id}/feedback", "POST", POSITIVE, False, 40),
    ("/cds-services/{service_id}/feedback", "POST", NEGATIVE, False, 40),
    ("/cds-services", "GET", POSITIVE, False, 10),
    ("/healthz", "GET", POSITIVE, False, 10),
    ("/openapi.json", "GET", POSITIVE, False, 10),
]


class _EmptyFhir:
    """Stands in for the FHIR client: every query gets an empty Bundle, nothing leaves."""

    def fetch(
        self, fhir_server, access_token, queries, *, issuer=None, hook_instance=None
    ) -> FetchResult:
        return FetchResult({key: [] for key in queries}, {}, 0)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[schemathesis.BaseSchema]:
    """The OpenAPI document of a fresh app (auth off, its own SQLite file), loaded over WSGI."""
    directory = tmp_path_factory.mktemp("fuzz")
    app = create_app(
        Settings(
            environment="test",
            database_url=f"sqlite:///{directory / 'feedback.sqlite3'}",
            content_dir=DEFAULT_CONTENT_DIR,
            auth=False,
            log_level="ERROR",
        ),
        clock=FrozenClock(),
    )
    runner = app.extensions["cds_runtime"].runner
    runner.close()  # the real FHIR client: generated fhirServer URLs could name any host
    runner._fetcher = _EmptyFhir()
    try:
        yield schemathesis.openapi.from_wsgi("/openapi.json", app)
    finally:
        dispose(app)


@pytest.fixture(scope="module")
def no_network(api) -> Iterator[None]:
    """Generated fhirServer URLs are never contacted (``api`` swaps the FHIR client out)."""
    yield


@pytest.mark.parametrize(
    ("path", "method", "mode", "patient_view", "examples"),
    PLAN,
    ids=[
        f"{method} {path} {mode.value}{' patient-view' if pv else ''}"
        for path, method, mode, pv, _ in PLAN
    ],
)
def test_operation_conforms_to_its_openapi_description(
    api, no_network, path: str, method: str, mode: GenerationMode, patient_view: bool, examples: int
) -> None:
    """Generated requests never get a 5xx and every answer matches the documented responses."""
    checks = CONFORMANCE + ([negative_data_rejection] if mode is NEGATIVE else [])

    @settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(case=api[path][method].as_strategy(generation_mode=mode))
    def check(case: schemathesis.Case) -> None:
        if patient_view and isinstance(case.body, dict):
            case.body = as_patient_view(case.body)
        response = case.call()
        case.validate_response(response, checks=checks)

    check()

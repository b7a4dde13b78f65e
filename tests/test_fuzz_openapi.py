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
import requests_mock
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
from tests.conftest import FrozenClock, dispose

CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE

# (path, method, mode, examples): about 300 requests in all, most of them on the hook call.
PLAN = [
    ("/cds-services/{service_id}", "POST", POSITIVE, 110),
    ("/cds-services/{service_id}", "POST", NEGATIVE, 70),
    ("/cds-services/{service_id}/feedback", "POST", POSITIVE, 45),
    ("/cds-services/{service_id}/feedback", "POST", NEGATIVE, 45),
    ("/cds-services", "GET", POSITIVE, 10),
    ("/healthz", "GET", POSITIVE, 10),
    ("/openapi.json", "GET", POSITIVE, 10),
]


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
    try:
        yield schemathesis.openapi.from_wsgi("/openapi.json", app)
    finally:
        dispose(app)


@pytest.fixture(scope="module")
def no_network() -> Iterator[requests_mock.Mocker]:
    """Every FHIR request the app makes gets an empty Bundle; nothing leaves the process."""
    with requests_mock.Mocker() as mock:
        mock.get(
            requests_mock.ANY,
            json={"resourceType": "Bundle", "type": "searchset", "entry": []},
            headers={"Content-Type": "application/fhir+json"},
        )
        yield mock


@pytest.mark.parametrize(
    ("path", "method", "mode", "examples"),
    PLAN,
    ids=[f"{method} {path} {mode.value}" for path, method, mode, _ in PLAN],
)
def test_operation_conforms_to_its_openapi_description(
    api, no_network, path: str, method: str, mode: GenerationMode, examples: int
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
        response = case.call()
        case.validate_response(response, checks=checks)

    check()

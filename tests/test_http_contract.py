"""CDS Hooks 2.0 over HTTP: discovery, the hook path, and a defined answer for every bad input."""

from __future__ import annotations

import copy
import json
import re
import socket
from collections.abc import Iterator

import pytest
import requests
from pytest_httpserver import HTTPServer

from cds_service import create_app
from tests.conftest import (
    FOOTDROP,
    PREFETCH_KEYS,
    SPEC_EXAMPLE_REQUEST,
    assert_valid_response,
    dispose,
    empty_bundle,
    patient_view_request,
    with_settings,
)


@pytest.fixture
def empty_fhir_server_log() -> Iterator[tuple[str, list]]:
    """A loopback FHIR server answering empty Bundles: its base URL and its request log."""
    server = HTTPServer(host="127.0.0.1")
    server.expect_request(re.compile(".*"), method="GET").respond_with_json(
        empty_bundle(), content_type="application/fhir+json"
    )
    server.start()
    try:
        yield server.url_for("/fhir"), server.log
    finally:
        server.clear()
        server.stop()


def test_discovery_lists_the_patient_view_service_with_its_prefetch(client):
    """Discovery publishes the foot-drop service with id, hook, title, description and templates."""
    response = client.get("/cds-services")
    assert response.status_code == 200
    services = response.get_json()["services"]
    footdrop = next(s for s in services if s["id"] == FOOTDROP)
    assert footdrop["hook"] == "patient-view"
    assert footdrop["title"] and footdrop["description"]
    assert set(footdrop["prefetch"]) == set(PREFETCH_KEYS)
    assert footdrop["prefetch"]["conditions"] == "Condition?patient={{context.patientId}}"
    for service in services:
        assert all(value not in (None, "", [], {}) for value in service.values())


def test_discovery_answers_over_real_http(live_server):
    """A real HTTP client on loopback gets discovery as JSON."""
    response = requests.get(f"{live_server.url}/cds-services", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert any(s["id"] == FOOTDROP for s in response.json()["services"])


def test_spec_example_request_gets_no_cards(client, empty_fhir_server_log):
    """The spec's patient-view example answers 200 {"cards": []} once its FHIR server answers."""
    url, log = empty_fhir_server_log
    request = {**SPEC_EXAMPLE_REQUEST, "fhirServer": url}
    response = client.post(f"/cds-services/{FOOTDROP}", json=request)
    assert response.status_code == 200
    assert response.get_json() == {"cards": []}
    assert log, "the missing prefetch keys are fetched from the FHIR server"
    assert all(r.headers["Authorization"] == "Bearer some-opaque-fhir-access-token" for r, _ in log)
    assert all(r.path.startswith("/fhir/") for r, _ in log)


def test_spec_example_without_reachable_fhir_server_is_412(client, fetch_causes):
    """Without the required prefetch and with an unreachable FHIR server the answer is 412."""
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    request = {**SPEC_EXAMPLE_REQUEST, "fhirServer": f"http://127.0.0.1:{port}/fhir"}
    response = client.post(f"/cds-services/{FOOTDROP}", json=request)
    assert response.status_code == 412
    body = response.get_json()
    assert body["error"] == "required FHIR data unavailable"
    assert "conditions: unavailable" in body["details"]
    assert fetch_causes[-1]["conditions"] == "connection error"


def test_full_prefetch_goes_through_the_whole_path_over_http(live_server):
    """A complete prefetch with no relevant data travels request → domain → response over HTTP."""
    response = requests.post(
        f"{live_server.url}/cds-services/{FOOTDROP}", json=patient_view_request(), timeout=5
    )
    assert response.status_code == 200
    assert response.json() == {"cards": []}
    assert_valid_response(response.json())


def test_null_prefetch_means_known_empty_and_is_not_fetched(client):
    """A prefetch value of null is 'no data', so no fetch is attempted and no 412 follows."""
    request = patient_view_request()
    request["prefetch"] = {key: None for key in PREFETCH_KEYS}
    response = client.post(f"/cds-services/{FOOTDROP}", json=request)
    assert response.status_code == 200
    assert response.get_json() == {"cards": []}


def test_missing_required_prefetch_without_fhir_server_is_412_naming_the_keys(client, fetch_causes):
    """Prefetch lacking required keys and no fhirServer gives 412 listing what is missing."""
    request = patient_view_request()
    del request["prefetch"]["conditions"]
    del request["prefetch"]["deviceRequests"]
    response = client.post(f"/cds-services/{FOOTDROP}", json=request)
    assert response.status_code == 412
    details = response.get_json()["details"]
    assert details == ["conditions: unavailable", "deviceRequests: unavailable"]
    assert fetch_causes[-1] == {
        "conditions": "not prefetched and no fhirServer given",
        "deviceRequests": "not prefetched and no fhirServer given",
    }


def test_missing_optional_prefetch_still_answers(client):
    """Optional keys (patient, appointments) only refine the card, so their absence is not 412."""
    request = patient_view_request()
    del request["prefetch"]["patient"]
    del request["prefetch"]["appointments"]
    response = client.post(f"/cds-services/{FOOTDROP}", json=request)
    assert response.status_code == 200


def test_operation_outcome_prefetch_without_server_is_412(client, fetch_causes):
    """An OperationOutcome for a required key means the client failed: 412 if unfetchable."""
    request = patient_view_request()
    request["prefetch"]["conditions"] = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout"}],
    }
    response = client.post(f"/cds-services/{FOOTDROP}", json=request)
    assert response.status_code == 412
    assert response.get_json()["details"] == ["conditions: unavailable"]
    assert fetch_causes[-1] == {
        "conditions": "client sent an OperationOutcome and no fhirServer given"
    }


def _post(client, body, content_type="application/json", path=f"/cds-services/{FOOTDROP}"):
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(path, data=data, content_type=content_type)


def _bad(mutate):
    request = patient_view_request()
    mutate(request)
    return request


BAD_REQUESTS = {
    "malformed JSON": (b'{"hook": "patient-view",', 400, "malformed JSON"),
    "trailing garbage": (b'{"hook": "patient-view"} x', 400, "malformed JSON"),
    "NaN constant": (b'{"hook": NaN}', 400, "malformed JSON"),
    "not UTF-8": (b'{"hook": "\xff\xfe"}', 400, "malformed JSON"),
    "deeply nested": (b"[" * 100_000 + b"]" * 100_000, 400, "malformed JSON"),
    "deeply nested object": (
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        400,
        "malformed JSON",
    ),
    "array body": (b"[]", 400, "invalid request"),
    "string body": (b'"patient-view"', 400, "invalid request"),
    "empty body": (b"", 400, "empty body"),
    "missing hookInstance": (_bad(lambda r: r.pop("hookInstance")), 400, "invalid request"),
    "hookInstance not a uuid": (
        _bad(lambda r: r.update(hookInstance="123")),
        400,
        "invalid request",
    ),
    "missing context": (_bad(lambda r: r.pop("context")), 400, "invalid request"),
    "context not an object": (_bad(lambda r: r.update(context=[])), 400, "invalid request"),
    "missing patientId": (_bad(lambda r: r["context"].pop("patientId")), 400, "invalid request"),
    "patientId wrong type": (
        _bad(lambda r: r["context"].update(patientId=42)),
        400,
        "invalid request",
    ),
    "userId not a reference": (
        _bad(lambda r: r["context"].update(userId="bob")),
        400,
        "invalid request",
    ),
    "hook wrong type": (_bad(lambda r: r.update(hook=7)), 400, "invalid request"),
    "unknown hook": (_bad(lambda r: r.update(hook="patient-peek")), 400, "unknown hook"),
    "wrong hook for service": (
        _bad(lambda r: r.update(hook="order-sign")),
        400,
        "invalid request",
    ),
    "prefetch value a number": (
        _bad(lambda r: r["prefetch"].update(conditions=5)),
        400,
        "invalid request",
    ),
    "prefetch resource without resourceType": (
        _bad(lambda r: r["prefetch"].update(conditions={"entry": []})),
        400,
        "invalid request",
    ),
    "bundle entry not an object": (
        _bad(lambda r: r["prefetch"].update(conditions={"resourceType": "Bundle", "entry": [1]})),
        400,
        "invalid request",
    ),
    "fhirAuthorization without fhirServer": (
        _bad(
            lambda r: r.update(
                fhirAuthorization={
                    "access_token": "t",
                    "token_type": "Bearer",
                    "expires_in": 300,
                    "scope": "user/*.read",
                    "subject": "x",
                }
            )
        ),
        400,
        "invalid request",
    ),
    "fhirAuthorization incomplete": (
        _bad(lambda r: r.update(fhirServer="https://ehr.example/fhir", fhirAuthorization={})),
        400,
        "invalid request",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_input_gets_a_json_4xx(client, case):
    """Each malformed request gets its documented 4xx with a JSON body naming the problem."""
    body, status, error = BAD_REQUESTS[case]
    response = _post(client, body)
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    document = response.get_json()
    assert document["error"] == error
    assert "Traceback" not in response.get_data(as_text=True)


def test_schema_errors_name_the_field(client):
    """The details of a 400 point at the offending field with a JSON path."""
    response = _post(client, _bad(lambda r: r["context"].pop("patientId")))
    assert response.get_json()["details"] == ["$.context: 'patientId' is a required property"]


def test_wrong_hook_for_an_existing_service_names_the_expected_hook(client):
    """A valid hook the service does not handle is a 400 that says which hook it handles."""
    request = patient_view_request()
    request["hook"] = "encounter-start"
    request["context"] = {"userId": "Practitioner/1", "patientId": "p1", "encounterId": "e1"}
    response = _post(client, request)
    assert response.status_code == 400
    assert response.get_json()["error"] == "wrong hook"
    assert "patient-view" in response.get_json()["details"][0]


def test_unknown_service_is_404(client):
    """Calling a service id that discovery does not list is a 404 with a JSON body."""
    response = _post(client, patient_view_request(), path="/cds-services/nope")
    assert response.status_code == 404
    assert response.get_json()["error"] == "unknown service"


def test_unknown_path_is_json_404(client):
    """Any unknown URL answers a JSON 404, not an HTML page."""
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert response.get_json() == {"error": "not found"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", f"/cds-services/{FOOTDROP}"),
        ("put", f"/cds-services/{FOOTDROP}"),
        ("delete", "/cds-services"),
        ("get", f"/cds-services/{FOOTDROP}/feedback"),
    ],
)
def test_wrong_method_is_405(client, method, path):
    """A wrong HTTP method is a 405 with an Allow header and a JSON body."""
    response = getattr(client, method)(path)
    assert response.status_code == 405
    assert response.get_json()["error"] == "method not allowed"
    assert "Allow" in response.headers


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_wrong_content_type_is_415(client, content_type):
    """A body that is not declared as JSON is refused with 415."""
    response = _post(client, patient_view_request(), content_type=content_type)
    assert response.status_code == 415
    assert response.get_json()["error"] == "unsupported media type"


def test_fhir_json_content_type_is_accepted(client):
    """application/fhir+json is JSON too."""
    response = _post(client, patient_view_request(), content_type="application/fhir+json")
    assert response.status_code == 200


def test_body_over_the_limit_is_413(settings, clock):
    """A body larger than CDS_MAX_BODY_BYTES is refused with 413 before it is parsed."""
    app = create_app(with_settings(settings, max_body_bytes=2048), clock=clock)
    request = patient_view_request()
    request["prefetch"]["conditions"]["entry"] = [
        {"resource": {"resourceType": "Condition", "id": f"c{i}"}} for i in range(200)
    ]
    try:
        response = _post(app.test_client(), request)
    finally:
        dispose(app)
    assert response.status_code == 413
    assert response.get_json()["error"] == "request body too large"


def test_default_body_limit_takes_real_prefetch(client):
    """The default limit (10 MB) takes a realistic large prefetch (several MB)."""
    request = patient_view_request()
    filler = "x" * 2000
    request["prefetch"]["observations"]["entry"] = [
        {"resource": {"resourceType": "Observation", "id": f"o{i}", "note": [{"text": filler}]}}
        for i in range(2500)
    ]
    response = _post(client, request)
    assert response.status_code == 200


def test_request_is_not_mutated_by_validation(client):
    """The service reads the request without changing it (same body twice, same answer)."""
    request = patient_view_request()
    before = copy.deepcopy(request)
    first = _post(client, request).get_json()
    second = _post(client, request).get_json()
    assert request == before and first == second


def test_prefetch_page_size_is_added_only_to_searches():
    """Our own fetches ask for large pages; reads and explicit _count are left alone."""
    from cds_service.domain.prefetch import with_page_size

    assert with_page_size("Condition?patient=1", 200) == "Condition?patient=1&_count=200"
    assert with_page_size("Condition?patient=1&_count=5", 200) == "Condition?patient=1&_count=5"
    assert with_page_size("Patient/1", 200) == "Patient/1"

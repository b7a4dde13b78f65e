"""A prefetched searchset with a ``next`` link is incomplete: never evaluated as if it were whole.

The attack (issue 11, item 1): the client prefetches page 1 of the Conditions; the haematoma that
makes the card critical is on page 2. Evaluating page 1 alone turned a critical card into a routine
warning with an orthosis.
"""

from __future__ import annotations

import copy
import json
import socket
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from tests.conftest import FIXTURES, FOOTDROP

FIXTURE = json.loads(
    (FIXTURES / "patient-view" / "35-compressive-haematoma-m79-81-anticoagulated.json").read_text()
)
HAEMATOMA = "pv35-cond-haematoma"


def _conditions() -> list[dict[str, Any]]:
    return [e["resource"] for e in FIXTURE["request"]["prefetch"]["conditions"]["entry"]]


def _first_page_only(fhir_server: str | None) -> dict[str, Any]:
    """The fixture's request with page 1 of the Conditions (no haematoma) and a next link."""
    request = copy.deepcopy(FIXTURE["request"])
    page_one = [c for c in _conditions() if c["id"] != HAEMATOMA]
    request["prefetch"]["conditions"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(page_one) + 1,
        "link": [
            {"relation": "self", "url": "https://ehr.example/fhir/Condition?patient=pv35"},
            {"relation": "next", "url": "https://ehr.example/fhir/Condition?patient=pv35&page=2"},
        ],
        "entry": [{"resource": c} for c in page_one],
    }
    request.pop("fhirServer", None)
    request.pop("fhirAuthorization", None)
    if fhir_server:
        request["fhirServer"] = fhir_server
    return request


@pytest.fixture
def at_fixture_time(clock):
    clock.set(FIXTURE["evalTime"])
    return clock


def test_first_page_without_fhir_server_is_412_not_a_routine_card(
    client, at_fixture_time, fetch_causes
):
    """Without a fhirServer to fetch the rest, an incomplete required key is 412, named."""
    response = client.post(f"/cds-services/{FOOTDROP}", json=_first_page_only(None))
    assert response.status_code == 412
    assert response.get_json()["details"] == ["conditions: unavailable"]
    assert "incomplete" in fetch_causes[-1]["conditions"]  # the precise cause is in the log


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_first_page_with_an_unreachable_fhir_server_is_412(client, at_fixture_time):
    """When the rest cannot be fetched (server down), the key is unavailable: 412, never 200."""
    request = _first_page_only(f"http://127.0.0.1:{_closed_port()}/fhir")
    response = client.post(f"/cds-services/{FOOTDROP}", json=request)
    assert response.status_code == 412
    assert response.get_json()["details"][0].startswith("conditions: ")


def test_first_page_is_completed_from_the_fhir_server_and_the_flag_is_kept(
    client, at_fixture_time, httpserver: HTTPServer
):
    """With a reachable fhirServer the whole key is fetched and the haematoma card is critical."""
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 3,
        "entry": [{"resource": c} for c in _conditions()],
    }
    httpserver.expect_request("/fhir/Condition").respond_with_json(
        bundle, content_type="application/fhir+json"
    )
    response = client.post(
        f"/cds-services/{FOOTDROP}", json=_first_page_only(httpserver.url_for("/fhir"))
    )
    assert response.status_code == 200
    (card,) = response.get_json()["cards"]
    assert card["indicator"] == "critical"
    asked = [request.path for request, _ in httpserver.log]
    assert asked.count("/fhir/Condition") == 1  # the incomplete key was fetched whole, once


def test_the_whole_fixture_prefetched_is_critical(client, at_fixture_time):
    """Control: the same patient prefetched whole gets the critical card."""
    response = client.post(f"/cds-services/{FOOTDROP}", json=FIXTURE["request"])
    assert response.status_code == 200
    assert response.get_json()["cards"][0]["indicator"] == "critical"

"""Every clinical fixture, posted over real HTTP on loopback, gives exactly its expected outcome."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import FOOTDROP, assert_valid_response
from tests.fixture_support import (
    PATIENT_VIEW_FIXTURES,
    check_outcome,
    check_trace,
    fixture_trace,
    load_fixture,
)


def test_there_are_at_least_25_fixtures_covering_the_twenty_scenarios():
    """The fixture set holds the twenty situations of clinical.md §3 plus variants (≥ 25 in all)."""
    fixtures = [load_fixture(path) for path in PATIENT_VIEW_FIXTURES]
    assert len(fixtures) >= 25
    assert {f["scenario"] for f in fixtures if "scenario" in f} == set(range(1, 21))


@pytest.mark.parametrize("path", PATIENT_VIEW_FIXTURES, ids=lambda path: path.stem)
def test_fixture_over_http(path, module_live_server, module_clock, empty_fhir_server):
    """The service answers the fixture's request with its expected card, indicator and orders.

    Keys a fixture leaves out are fetched from a loopback FHIR server that has no more data.
    """
    fixture = load_fixture(path)
    module_clock.set(fixture["evalTime"])
    request = {**fixture["request"], "fhirServer": empty_fhir_server}
    response = requests.post(
        f"{module_live_server.url}/cds-services/{FOOTDROP}", json=request, timeout=10
    )
    assert response.status_code == 200, response.text[:500]
    body = response.json()
    assert_valid_response(body)
    check_outcome(fixture, body)
    check_trace(fixture, fixture_trace(fixture))

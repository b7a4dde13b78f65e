"""Every clinical fixture gives the same cards whether its data is prefetched or fetched.

The fixture's resources are seeded into a real FHIR R4 server (SEKMET) on loopback; the same request
is then sent without any prefetch, so the service must fetch all nine queries itself, with the
bearer token from ``fhirAuthorization``.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from cds_service.domain.prefetch import flatten
from tests.conftest import FOOTDROP, assert_valid_response
from tests.fixture_support import PATIENT_VIEW_FIXTURES, check_outcome, load_fixture


def seedable_resources(fixture: dict[str, Any]) -> list[dict[str, Any]]:
    """Every resource the fixture prefetches, except the ones it marks as deliberately malformed."""
    malformed = set(fixture.get("malformedResourceIds", []))
    found = []
    for value in fixture["request"]["prefetch"].values():
        for resource in flatten(value):
            if resource.get("id") not in malformed:
                found.append(resource)
    return found


@pytest.mark.parametrize("path", PATIENT_VIEW_FIXTURES, ids=lambda path: path.stem)
def test_fixture_gives_the_same_cards_by_fetch_as_by_prefetch(
    path, clean_fhir_server, module_live_server, module_clock
):
    """Prefetch and fetch from a real FHIR server give identical cards for the fixture."""
    fixture = load_fixture(path)
    module_clock.set(fixture["evalTime"])
    url = f"{module_live_server.url}/cds-services/{FOOTDROP}"
    clean_fhir_server.seed(seedable_resources(fixture))
    prefetched = {
        **fixture["request"],
        "fhirServer": clean_fhir_server.base_url,
        "fhirAuthorization": {
            "access_token": clean_fhir_server.token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "user/*.read",
            "subject": "footdrop-cds",
        },
    }
    by_prefetch = requests.post(url, json=prefetched, timeout=60)
    assert by_prefetch.status_code == 200, by_prefetch.text[:300]

    request = {key: value for key, value in prefetched.items() if key != "prefetch"}
    by_fetch = requests.post(url, json=request, timeout=60)
    assert by_fetch.status_code == 200, by_fetch.text[:300]
    assert_valid_response(by_fetch.json())
    check_outcome(fixture, by_fetch.json())
    assert by_fetch.json()["cards"] == by_prefetch.json()["cards"]


def test_wrong_fhir_token_is_412(clean_fhir_server, module_live_server, fetch_causes):
    """A FHIR server that refuses the access token (401) leaves required data missing: 412."""
    fixture = load_fixture(PATIENT_VIEW_FIXTURES[0])
    request = {key: value for key, value in fixture["request"].items() if key != "prefetch"}
    request["fhirServer"] = clean_fhir_server.base_url
    request["fhirAuthorization"] = {
        "access_token": "not-the-token",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "user/*.read",
        "subject": "footdrop-cds",
    }
    response = requests.post(
        f"{module_live_server.url}/cds-services/{FOOTDROP}", json=request, timeout=60
    )
    assert response.status_code == 412
    assert all(detail.endswith(": unavailable") for detail in response.json()["details"])
    assert "http 401" in fetch_causes[-1].values()

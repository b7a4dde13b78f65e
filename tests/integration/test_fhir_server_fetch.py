"""FhirClient against a real FHIR R4 server (SEKMET) on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cds_service.domain.prefetch_templates import fill_template
from cds_service.edge.fhir_client import FetchPolicy, FhirClient

from .fhir_server import SekmetServer

LOOPBACK = ("127.0.0.0/8", "::1/128")

PATIENT = {"resourceType": "Patient", "id": "fd-1", "birthDate": "1980-04-02", "gender": "female"}
FOOT_DROP = {
    "resourceType": "Condition",
    "id": "fd-1-footdrop",
    "clinicalStatus": {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": "active",
            }
        ]
    },
    "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "M21.371"}]},
    "subject": {"reference": "Patient/fd-1"},
    "onsetDateTime": "2026-09-01",
}
NEUROPATHY = {
    "resourceType": "Condition",
    "id": "fd-1-peroneal",
    "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "G57.31"}]},
    "subject": {"reference": "Patient/fd-1"},
}
INJECTION = {
    "resourceType": "Procedure",
    "id": "fd-1-injection",
    "status": "completed",
    "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "96372"}]},
    "subject": {"reference": "Patient/fd-1"},
    "performedDateTime": "2026-08-28",
}
OTHER_PATIENT_CONDITION = {**NEUROPATHY, "id": "other-c", "subject": {"reference": "Patient/x"}}
TEMPLATES = {
    "patient": "Patient/{{context.patientId}}",
    "conditions": "Condition?patient={{context.patientId}}",
    "procedures": "Procedure?patient={{context.patientId}}",
    "appointments": "Appointment?patient={{context.patientId}}&status=proposed,pending,booked",
}


@pytest.fixture
def seeded(clean_fhir_server: SekmetServer) -> SekmetServer:
    clean_fhir_server.seed([PATIENT, FOOT_DROP, NEUROPATHY, INJECTION, OTHER_PATIENT_CONDITION])
    return clean_fhir_server


@pytest.fixture
def fhir_client() -> Iterator[FhirClient]:
    with FhirClient(
        FetchPolicy(timeout_seconds=2.0, deadline_seconds=5.0, allowed_networks=LOOPBACK)
    ) as client:
        yield client


def ids(resources: list[dict]) -> set[str]:
    return {r["id"] for r in resources}


def test_fetches_filled_templates(seeded, fhir_client):
    """Filled prefetch templates fetch the patient's resources, and only theirs."""
    queries = {k: fill_template(t, {"patientId": "fd-1"}) for k, t in TEMPLATES.items()}
    result = fhir_client.fetch(seeded.base_url, seeded.token, queries)
    assert result.failures == {}
    assert result.resources["patient"] == [seeded.get("Patient/fd-1")]
    assert ids(result.resources["conditions"]) == {"fd-1-footdrop", "fd-1-peroneal"}
    assert ids(result.resources["procedures"]) == {"fd-1-injection"}
    assert result.resources["appointments"] == []
    assert result.requests_made == 4


def test_follows_the_servers_next_links(seeded, fhir_client):
    """With _count=1 the server pages the search and every page is read."""
    result = fhir_client.fetch(
        seeded.base_url, seeded.token, {"c": "Condition?patient=fd-1&_count=1"}
    )
    assert ids(result.resources["c"]) == {"fd-1-footdrop", "fd-1-peroneal"}
    assert result.requests_made == 2


def test_page_cap_against_the_server(seeded):
    """More pages than allowed fails the key rather than returning part of it."""
    with FhirClient(
        FetchPolicy(
            timeout_seconds=2.0, deadline_seconds=5.0, max_pages=1, allowed_networks=LOOPBACK
        )
    ) as one:
        result = one.fetch(seeded.base_url, seeded.token, {"c": "Condition?patient=fd-1&_count=1"})
    assert result.failures == {"c": "page cap"}


def test_wrong_token_is_refused(seeded, fhir_client):
    """The server's 401 for a wrong token comes back as a failure, not an exception."""
    result = fhir_client.fetch(seeded.base_url, "wrong-token", {"p": "Patient/fd-1"})
    assert result.failures == {"p": "http 401"}


def test_missing_resource_is_a_404_failure(seeded, fhir_client):
    """A read of an absent patient is 'http 404'."""
    result = fhir_client.fetch(seeded.base_url, seeded.token, {"p": "Patient/nobody"})
    assert result.failures == {"p": "http 404"}


def test_reset_removes_seeded_resources(fhir_server, fhir_client):
    """After reset() the seeded resources are no longer found."""
    fhir_server.seed([PATIENT, FOOT_DROP])
    fhir_server.reset()
    result = fhir_client.fetch(
        fhir_server.base_url, fhir_server.token, {"c": "Condition?patient=fd-1"}
    )
    assert result.resources == {"c": []}

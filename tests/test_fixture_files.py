"""Structural checks of the patient-view fixtures: shape, expected outcome keys, valid FHIR R4.

The fixtures under ``fixtures/patient-view/`` are CDS Hooks requests with the outcome clinical.md
prescribes; these tests pin only that the files are well formed, not what the engine answers.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
import warnings
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from cds_service.domain.code_checks import sctid_ok

FIXTURE_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "patient-view"
FIXTURE_PATHS = sorted(FIXTURE_DIR.glob("*.json"))

TOP_LEVEL_REQUIRED = {"id", "description", "evalTime", "expected", "request"}
TOP_LEVEL_ALLOWED = TOP_LEVEL_REQUIRED | {
    "scenario",
    "malformedResourceIds",
    "revision2",
    "issue12",
}
EXPECTED_ALLOWED = {
    "card",
    "indicator",
    "suggestions",
    "emgNotBefore",
    "detailIncludes",
    "traceIncludes",
}
SUGGESTION_KEYS = {
    "AFO",
    "PT_REFERRAL",
    "EMG_NCS",
    "FOLLOW_UP",
    "SURGICAL_REFERRAL",
    "URGENT_EVAL",
}
INDICATORS = {"info", "warning", "critical"}
PREFETCH_TYPES = {
    "patient": "Patient",
    "conditions": "Condition",
    "procedures": "Procedure",
    "medicationAdministrations": "MedicationAdministration",
    "immunizations": "Immunization",
    "observations": "Observation",
    "deviceRequests": "DeviceRequest",
    "serviceRequests": "ServiceRequest",
    "appointments": "Appointment",
    # revision 2 (clinical.md §4.5)
    "medicationRequests": "MedicationRequest",
    "medicationStatements": "MedicationStatement",
    "inr": "Observation",
}
KNOWN_SYSTEMS = {
    "http://snomed.info/sct",
    "http://hl7.org/fhir/sid/icd-10-cm",
    "http://www.ama-assn.org/go/cpt",
    "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
    "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
    "http://loinc.org",
    "http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration",
    "http://terminology.hl7.org/CodeSystem/v3-ActSite",
    "http://terminology.hl7.org/CodeSystem/condition-clinical",
    "http://terminology.hl7.org/CodeSystem/condition-ver-status",
    "http://terminology.hl7.org/CodeSystem/condition-category",
    "http://terminology.hl7.org/CodeSystem/observation-category",
    "http://terminology.hl7.org/CodeSystem/v2-0276",
    "http://example.org/fhir/CodeSystem/footdrop-cds-local",
    "http://unitsofmeasure.org",
    "http://example.org/fhir/sid/mrn",
    "http://www.nlm.nih.gov/research/umls/rxnorm",
    "http://terminology.hl7.org/CodeSystem/v3-ActCode",
    # revision 2: a site's MRC flowsheet rows (cards/mrc_codes.yaml examples), ICD-10-PCS
    "http://example.org/fhir/CodeSystem/site-flowsheet",
    "http://www.cms.gov/Medicare/Coding/ICD10",
}
# Elements that record when something already happened; they must not lie after evalTime.
PAST_DATE_FIELDS = {
    "Condition": ("onsetDateTime", "recordedDate", "abatementDateTime"),
    "Procedure": ("performedDateTime",),
    "MedicationAdministration": ("effectiveDateTime",),
    "Immunization": ("occurrenceDateTime",),
    "Observation": ("effectiveDateTime",),
    "DeviceRequest": ("authoredOn",),
    "ServiceRequest": ("authoredOn",),
    "MedicationRequest": ("authoredOn",),
}
# Required (closed) R4 value sets that fhir.resources does not enforce.
_REQUEST_STATUS = {
    "draft",
    "active",
    "on-hold",
    "revoked",
    "completed",
    "entered-in-error",
    "unknown",
}
_REQUEST_INTENT = {
    "proposal",
    "plan",
    "directive",
    "order",
    "original-order",
    "reflex-order",
    "filler-order",
    "instance-order",
    "option",
}
REQUIRED_CODES: dict[str, dict[str, set[str]]] = {
    "Patient": {"gender": {"male", "female", "other", "unknown"}},
    "Procedure": {
        "status": {
            "preparation",
            "in-progress",
            "not-done",
            "on-hold",
            "stopped",
            "completed",
            "entered-in-error",
            "unknown",
        }
    },
    "MedicationAdministration": {
        "status": {
            "in-progress",
            "not-done",
            "on-hold",
            "completed",
            "entered-in-error",
            "stopped",
            "unknown",
        }
    },
    "Immunization": {"status": {"completed", "entered-in-error", "not-done"}},
    "Observation": {
        "status": {
            "registered",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "cancelled",
            "entered-in-error",
            "unknown",
        }
    },
    "DeviceRequest": {
        "status": _REQUEST_STATUS,
        "intent": _REQUEST_INTENT,
        "priority": {"routine", "urgent", "asap", "stat"},
    },
    "ServiceRequest": {
        "status": _REQUEST_STATUS,
        "intent": _REQUEST_INTENT,
        "priority": {"routine", "urgent", "asap", "stat"},
    },
    "Appointment": {
        "status": {
            "proposed",
            "pending",
            "booked",
            "arrived",
            "fulfilled",
            "cancelled",
            "noshow",
            "entered-in-error",
            "checked-in",
            "waitlist",
        }
    },
}
REQUIRED_CODES["MedicationRequest"] = {
    "status": {
        "active",
        "on-hold",
        "cancelled",
        "completed",
        "entered-in-error",
        "stopped",
        "draft",
        "unknown",
    },
    "intent": _REQUEST_INTENT,
}
REQUIRED_CODES["MedicationStatement"] = {
    "status": {
        "active",
        "completed",
        "entered-in-error",
        "intended",
        "stopped",
        "on-hold",
        "unknown",
        "not-taken",
    }
}
CLINICAL_STATUS = {"active", "recurrence", "relapse", "inactive", "remission", "resolved"}
VERIFICATION_STATUS = {
    "unconfirmed",
    "provisional",
    "differential",
    "confirmed",
    "refuted",
    "entered-in-error",
}
ID_PATTERN = re.compile(r"^(\d{2,3})-[a-z0-9]+(?:-[a-z0-9]+)*$")


def load(path: Path) -> dict[str, Any]:
    """Parse one fixture file."""
    return json.loads(path.read_text(encoding="utf-8"))


def fixture_params() -> list[Any]:
    """One pytest param per fixture file, named by its file stem."""
    return [pytest.param(p, id=p.stem) for p in FIXTURE_PATHS]


def prefetch_resources(fixture: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every resource of the prefetch as (prefetch key, resource), bare or inside Bundle entries."""
    out: list[tuple[str, dict[str, Any]]] = []
    for key, value in fixture["request"].get("prefetch", {}).items():
        if not isinstance(value, dict):
            continue
        if value.get("resourceType") == "Bundle":
            out.extend((key, entry["resource"]) for entry in value.get("entry", []))
        else:
            out.append((key, value))
    return out


def parse_instant(text: str) -> datetime:
    """Parse a FHIR dateTime/date to an aware datetime (a date is its day's start, UTC)."""
    if len(text) == 10:
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def codings(node: Any) -> list[dict[str, Any]]:
    """All Coding-like objects (dicts with system and code) anywhere inside ``node``."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if isinstance(node.get("system"), str) and isinstance(node.get("code"), str):
            found.append(node)
        for value in node.values():
            found.extend(codings(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(codings(item))
    return found


@functools.cache
def icd10cm_module() -> Any:
    """Import simple_icd_10_cm (CMS tabular April 2026), muting its own DeprecationWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import simple_icd_10_cm

    return simple_icd_10_cm


@pytest.fixture(scope="module")
def all_fixtures() -> list[dict[str, Any]]:
    """All fixtures, parsed once per module."""
    return [load(p) for p in FIXTURE_PATHS]


def test_enough_fixtures_present() -> None:
    """The directory holds the twenty scenarios plus at least fifteen variants."""
    assert len(FIXTURE_PATHS) >= 35


@pytest.mark.parametrize("path", fixture_params())
def test_fixture_shape(path: Path) -> None:
    """Each file parses and carries the required top-level fields, named after its id."""
    fixture = load(path)
    assert TOP_LEVEL_REQUIRED <= fixture.keys() <= TOP_LEVEL_ALLOWED
    assert fixture["id"] == path.stem
    assert ID_PATTERN.match(fixture["id"])
    assert isinstance(fixture["description"], str) and len(fixture["description"]) > 20
    assert parse_instant(fixture["evalTime"]).tzinfo is not None
    if "scenario" in fixture:
        assert fixture["scenario"] == int(fixture["id"][:2])
        assert 1 <= fixture["scenario"] <= 20
    request = fixture["request"]
    assert request["hook"] == "patient-view"
    assert uuid.UUID(request["hookInstance"]).version == 4
    assert request["fhirServer"].startswith("http")
    assert request["context"]["userId"].startswith("Practitioner/")
    assert request["context"]["patientId"]
    assert set(request.get("prefetch", {})) <= set(PREFETCH_TYPES)


@pytest.mark.parametrize("path", fixture_params())
def test_expected_outcome_is_well_formed(path: Path) -> None:
    """Expected keys and suggestions come from the allowed sets, with an indicator iff a card."""
    fixture = load(path)
    expected = fixture["expected"]
    assert set(expected) <= EXPECTED_ALLOWED
    assert isinstance(expected["card"], bool)
    suggestions = expected.get("suggestions", [])
    assert set(suggestions) <= SUGGESTION_KEYS
    routine = [s for s in suggestions if s != "URGENT_EVAL"]
    assert len(routine) == len(set(routine))  # URGENT_EVAL repeats: one per code (R7a: two)
    if expected["card"]:
        assert expected["indicator"] in INDICATORS
    else:
        assert "indicator" not in expected
        assert not suggestions
        assert "detailIncludes" not in expected
        assert "traceIncludes" not in expected
    if "URGENT_EVAL" in suggestions:
        assert expected["indicator"] == "critical" and set(suggestions) == {"URGENT_EVAL"}
    if expected.get("indicator") == "critical":
        assert suggestions and set(suggestions) == {"URGENT_EVAL"}
    if "emgNotBefore" in expected:
        assert "EMG_NCS" in suggestions
        not_before = date.fromisoformat(expected["emgNotBefore"])
        assert not_before >= parse_instant(fixture["evalTime"]).date()
    for phrase in expected.get("detailIncludes", []) + expected.get("traceIncludes", []):
        assert isinstance(phrase, str) and phrase.strip()
    if "traceIncludes" in expected:  # a sentence moved to the app page says why (issue 12)
        assert str(fixture.get("issue12", "")).startswith("R9a")


def test_ids_and_hook_instances_unique(all_fixtures: list[dict[str, Any]]) -> None:
    """Fixture ids, their number prefixes and hookInstances are unique across the directory."""
    for values in (
        [f["id"] for f in all_fixtures],
        [f["id"].split("-", 1)[0] for f in all_fixtures],
        [f["request"]["hookInstance"] for f in all_fixtures],
    ):
        assert [v for v, n in Counter(values).items() if n > 1] == []


def test_all_twenty_scenarios_present(all_fixtures: list[dict[str, Any]]) -> None:
    """Each clinical.md scenario 1-20 has exactly one fixture."""
    scenarios = [f["scenario"] for f in all_fixtures if "scenario" in f]
    assert sorted(scenarios) == list(range(1, 21))


@pytest.mark.parametrize("path", fixture_params())
def test_prefetch_values_have_the_right_shape(path: Path) -> None:
    """Prefetch values are null, the bare Patient, or searchset Bundles of the key's type."""
    fixture = load(path)
    patient_id = fixture["request"]["context"]["patientId"]
    for key, value in fixture["request"].get("prefetch", {}).items():
        if value is None:
            continue
        if key == "patient":
            assert value["resourceType"] == "Patient"
            assert value["id"] == patient_id
            continue
        if value["resourceType"] == "OperationOutcome":
            continue
        assert value["resourceType"] == "Bundle"
        assert value["type"] == "searchset"
        entries = value.get("entry", [])
        assert value.get("total", len(entries)) == len(entries)
        for entry in entries:
            resource = entry["resource"]
            assert resource["resourceType"] == PREFETCH_TYPES[key]
            assert entry["fullUrl"].endswith(f"/{resource['resourceType']}/{resource['id']}")


@pytest.mark.parametrize("path", fixture_params())
def test_resources_are_valid_fhir_r4(path: Path) -> None:
    """Every prefetched resource validates with fhir.resources R4B unless declared malformed."""
    fixture = load(path)
    malformed = set(fixture.get("malformedResourceIds", []))
    resources = prefetch_resources(fixture)
    ids = [r["id"] for _, r in resources]
    assert len(ids) == len(set(ids)), "resource ids repeat inside one fixture"
    assert malformed <= set(ids), "malformedResourceIds names a resource that is not there"
    for _, resource in resources:
        model = get_fhir_model_class(resource["resourceType"])
        if resource["id"] in malformed:
            with pytest.raises(ValidationError):
                model.model_validate(resource)
        else:
            model.model_validate(resource)
    for value in fixture["request"].get("prefetch", {}).values():
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            # the entries' resources were validated above, one by one
            shell = {**value, "entry": [{"fullUrl": e["fullUrl"]} for e in value.get("entry", [])]}
            get_fhir_model_class("Bundle").model_validate(shell)


def status_code(resource: dict[str, Any], element: str) -> str | None:
    """The code of a Condition status CodeableConcept, or None when the element is absent."""
    if element not in resource:
        return None
    return resource[element]["coding"][0]["code"]


@pytest.mark.parametrize("path", fixture_params())
def test_required_codes_and_condition_invariants(path: Path) -> None:
    """Closed R4 value sets are respected and Conditions keep invariants con-3, con-4 and con-5."""
    fixture = load(path)
    malformed = set(fixture.get("malformedResourceIds", []))
    for _, resource in prefetch_resources(fixture):
        if resource["id"] in malformed:
            continue
        for element, allowed in REQUIRED_CODES.get(resource["resourceType"], {}).items():
            if element in resource:
                assert resource[element] in allowed, (resource["id"], element)
        if resource["resourceType"] != "Condition":
            continue
        clinical = status_code(resource, "clinicalStatus")
        verification = status_code(resource, "verificationStatus")
        assert clinical is None or clinical in CLINICAL_STATUS
        assert verification is None or verification in VERIFICATION_STATUS
        categories = {c["code"] for cat in resource.get("category", []) for c in cat["coding"]}
        if "problem-list-item" in categories and verification != "entered-in-error":
            assert clinical is not None, f"con-3 {resource['id']}"
        if any(k.startswith("abatement") for k in resource):
            assert clinical in {"inactive", "resolved", "remission"}, f"con-4 {resource['id']}"
        if verification == "entered-in-error":
            assert clinical is None, f"con-5 {resource['id']}"


@pytest.mark.parametrize("path", fixture_params())
def test_resources_belong_to_the_context_patient(path: Path) -> None:
    """Every resource's subject, patient or participant reference names the context patient."""
    fixture = load(path)
    expected_ref = f"Patient/{fixture['request']['context']['patientId']}"
    for _, resource in prefetch_resources(fixture):
        rtype = resource["resourceType"]
        if rtype == "Patient":
            continue
        if rtype == "Immunization":
            refs = [resource["patient"]["reference"]]
        elif rtype == "Appointment":
            refs = [
                p["actor"]["reference"]
                for p in resource["participant"]
                if p.get("actor", {}).get("reference", "").startswith("Patient/")
            ]
        else:
            refs = [resource["subject"]["reference"]]
        assert refs == [expected_ref], f"{resource['id']} points to {refs}"


@pytest.mark.parametrize("path", fixture_params())
def test_recorded_events_precede_eval_time(path: Path) -> None:
    """Onsets, administrations, observations and order dates never lie after evalTime."""
    fixture = load(path)
    eval_time = parse_instant(fixture["evalTime"])
    malformed = set(fixture.get("malformedResourceIds", []))
    for _, resource in prefetch_resources(fixture):
        if resource["id"] in malformed:
            continue
        for field in PAST_DATE_FIELDS.get(resource["resourceType"], ()):
            if field in resource:
                assert parse_instant(resource[field]) <= eval_time, (resource["id"], field)


@pytest.mark.parametrize("path", fixture_params())
def test_codes_are_from_known_systems_and_structurally_valid(path: Path) -> None:
    """Codings use the project's code systems; SNOMED ids pass Verhoeff, ICD-10-CM codes exist."""
    icd10cm = icd10cm_module()
    fixture = load(path)
    for coding in codings(fixture["request"].get("prefetch", {})):
        system, code = coding["system"], coding["code"]
        assert system in KNOWN_SYSTEMS, system
        if system == "http://snomed.info/sct":
            assert sctid_ok(code), code
        elif system == "http://hl7.org/fhir/sid/icd-10-cm":
            assert icd10cm.is_valid_item(code), code


def test_sctid_check_rejects_known_bad_ids() -> None:
    """The Verhoeff helper rejects the SNOMED ids clinical.md rejects and accepts 306170007."""
    assert not sctid_ok("306184000")
    assert not sctid_ok("46968001")
    assert sctid_ok("306170007")

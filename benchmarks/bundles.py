"""Realistic patient-view requests of any size, grown from fixture 01 with unrelated noise.

The fixture is moved in time so that its evaluation moment is now (the served app runs on the real
clock), then padded with resources a real chart carries and the rules must read past: vital signs
(LOINC), unrelated Conditions, oral MedicationAdministrations, minor Procedures and deltoid
influenza vaccinations older than the look-back. A fixed seed makes every run send the same data.
"""

from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SEED_FIXTURE = ROOT / "fixtures" / "patient-view" / "01-classic-left-dorsogluteal.json"
SERVICE_ID = "footdrop-im-injection"
HOOK_INSTANCE = "5f0c1a52-7b8e-4d53-9a51-0c3f2d6e9b47"

_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"

VITALS = (
    ("8867-4", "Heart rate", "/min", "beats/minute", 55, 110),
    ("8480-6", "Systolic blood pressure", "mm[Hg]", "mmHg", 100, 170),
    ("8462-4", "Diastolic blood pressure", "mm[Hg]", "mmHg", 55, 100),
    ("8310-5", "Body temperature", "Cel", "C", 36, 39),
    ("9279-1", "Respiratory rate", "/min", "breaths/minute", 10, 24),
    ("59408-5", "Oxygen saturation by pulse oximetry", "%", "%", 90, 100),
)
UNRELATED_CONDITIONS = (
    ("I10", "Essential (primary) hypertension"),
    ("E78.5", "Hyperlipidemia, unspecified"),
    ("J06.9", "Acute upper respiratory infection, unspecified"),
    ("K21.9", "Gastro-esophageal reflux disease without esophagitis"),
    ("N39.0", "Urinary tract infection, site not specified"),
    ("H52.4", "Presbyopia"),
    ("E11.9", "Type 2 diabetes mellitus without complications"),
)
ORAL_DRUGS = ("Paracetamol 1 g tablet", "Ibuprofen 400 mg tablet", "Omeprazole 20 mg capsule")
MINOR_PROCEDURES = (("82078001", "Collection of blood specimen for laboratory"),)

# Where each resource type goes in the prefetch (keys of cards/services.yaml).
PREFETCH_KEY = {
    "Condition": "conditions",
    "Procedure": "procedures",
    "MedicationAdministration": "medicationAdministrations",
    "Immunization": "immunizations",
    "Observation": "observations",
    "DeviceRequest": "deviceRequests",
    "ServiceRequest": "serviceRequests",
    "Appointment": "appointments",
}
QUERY_TYPE = {key: rtype for rtype, key in PREFETCH_KEY.items()}


def _shift(value: Any, delta: timedelta) -> Any:
    if isinstance(value, dict):
        return {k: _shift(v, delta) for k, v in value.items()}
    if isinstance(value, list):
        return [_shift(v, delta) for v in value]
    if isinstance(value, str):
        if _DATETIME.match(value):
            moment = datetime.fromisoformat(value.replace("Z", "+00:00")) + delta
            return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
        if _DATE.match(value):
            return (date.fromisoformat(value) + timedelta(days=delta.days)).isoformat()
    return value


def seed_request(now: datetime | None = None) -> dict[str, Any]:
    """Fixture 01's request moved in time so that its evaluation moment is ``now``."""
    fixture = json.loads(SEED_FIXTURE.read_text("utf-8"))
    eval_time = datetime.fromisoformat(fixture["evalTime"].replace("Z", "+00:00"))
    request = _shift(fixture["request"], (now or datetime.now(UTC)) - eval_time)
    request["hookInstance"] = HOOK_INSTANCE
    return request


def _noise(count: int, patient: str, now: datetime, rng: random.Random) -> Iterator[dict]:
    subject = {"reference": f"Patient/{patient}"}
    for n in range(count):
        when = now - timedelta(minutes=rng.randrange(60, 3 * 365 * 24 * 60))
        stamp = when.isoformat().replace("+00:00", "Z")
        rid = f"{patient}-noise-{n}"
        kind = n % 10
        if kind < 5:
            code, text, unit, shown, low, high = VITALS[rng.randrange(len(VITALS))]
            yield {
                "resourceType": "Observation",
                "id": rid,
                "status": "final",
                "category": [{"coding": [{"code": "vital-signs", "system": _OBS_CATEGORY}]}],
                "code": {"coding": [{"system": LOINC, "code": code, "display": text}]},
                "subject": subject,
                "effectiveDateTime": stamp,
                "valueQuantity": {
                    "value": rng.randint(low, high),
                    "unit": shown,
                    "system": UCUM,
                    "code": unit,
                },
            }
        elif kind < 7:
            code, text = UNRELATED_CONDITIONS[rng.randrange(len(UNRELATED_CONDITIONS))]
            yield {
                "resourceType": "Condition",
                "id": rid,
                "clinicalStatus": {"coding": [{"system": _CLINICAL, "code": "active"}]},
                "verificationStatus": {"coding": [{"system": _VERIFICATION, "code": "confirmed"}]},
                "code": {"coding": [{"system": ICD10, "code": code, "display": text}]},
                "subject": subject,
                "onsetDateTime": stamp,
                "recordedDate": stamp,
            }
        elif kind < 9:
            yield {
                "resourceType": "MedicationAdministration",
                "id": rid,
                "status": "completed",
                "medicationCodeableConcept": {"text": rng.choice(ORAL_DRUGS)},
                "subject": subject,
                "effectiveDateTime": stamp,
                "dosage": {
                    "route": {"coding": [{"system": SNOMED, "code": "26643006", "display": "Oral"}]}
                },
            }
        elif n % 20 == 9:
            code, text = MINOR_PROCEDURES[0]
            yield {
                "resourceType": "Procedure",
                "id": rid,
                "status": "completed",
                "code": {"coding": [{"system": SNOMED, "code": code, "display": text}]},
                "subject": subject,
                "performedDateTime": stamp,
            }
        else:
            old = (now - timedelta(days=rng.randrange(800, 3000))).date().isoformat()
            yield {
                "resourceType": "Immunization",
                "id": rid,
                "status": "completed",
                "vaccineCode": {"text": "Influenza vaccine"},
                "patient": subject,
                "occurrenceDateTime": old,
                "route": {"coding": [{"system": _V3_ROUTE, "code": "IM"}]},
                "site": {"coding": [{"system": _V3_SITE, "code": "LD", "display": "left deltoid"}]},
            }


_OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
_V3_ROUTE = "http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration"
_V3_SITE = "http://terminology.hl7.org/CodeSystem/v3-ActSite"


def _bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }


def count_resources(prefetch: dict[str, Any]) -> int:
    """Resources in a prefetch (a Bundle's entries, or one resource per key)."""
    total = 0
    for value in prefetch.values():
        if isinstance(value, dict):
            total += len(value.get("entry") or ()) if value["resourceType"] == "Bundle" else 1
    return total


def patient_request(total: int, now: datetime | None = None, seed: int = 6) -> dict[str, Any]:
    """A patient-view request whose prefetch holds ``total`` resources (fixture 01 + noise)."""
    now = now or datetime.now(UTC)
    request = seed_request(now)
    prefetch = request["prefetch"]
    patient = request["context"]["patientId"]
    missing = max(0, total - count_resources(prefetch))
    by_key: dict[str, list[dict[str, Any]]] = {}
    for resource in _noise(missing, patient, now, random.Random(seed)):
        by_key.setdefault(PREFETCH_KEY[resource["resourceType"]], []).append(resource)
    for key, extra in by_key.items():
        prefetch[key]["entry"].extend({"resource": r, "search": {"mode": "match"}} for r in extra)
        prefetch[key]["total"] = len(prefetch[key]["entry"])
    return request


def fallback_request(
    request: dict[str, Any], fhir_server: str, fetched: tuple[str, ...]
) -> dict[str, Any]:
    """``request`` without the prefetch ``fetched`` keys, so the service asks ``fhir_server``."""
    changed = copy.deepcopy(request)
    for key in fetched:
        changed["prefetch"].pop(key, None)
    changed["fhirServer"] = fhir_server
    changed["fhirAuthorization"] = {
        "access_token": "bench-fhir-token",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "user/*.read",
        "subject": "footdrop-cds",
    }
    return changed


def fhir_answers(request: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What a FHIR server holding ``request``'s patient answers, by resource type."""
    answers: dict[str, dict[str, Any]] = {}
    for key, value in request["prefetch"].items():
        if key == "patient":
            answers["Patient"] = value
        elif key in QUERY_TYPE:
            resources = [e["resource"] for e in value.get("entry") or ()]
            answers[QUERY_TYPE[key]] = _bundle(resources)
    return answers


def encode(document: Any) -> bytes:
    """Compact JSON, as an EHR sends it."""
    return json.dumps(document, separators=(",", ":")).encode("utf-8")

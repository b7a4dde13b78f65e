"""Small factories of FHIR R4 resources (plain dicts) for the engine's unit tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from cds_service.domain.content import Content
from cds_service.domain.engine import Evaluation, Policy, evaluate_patient_view
from cds_service.domain.trace import Explanation, explain_patient_view
from cds_service.edge.content import load_content

ROOT = Path(__file__).resolve().parents[2]
CARDS = ROOT / "cards"
SNOMED = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
HCPCS_HTTP = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
ACTSITE = "http://terminology.hl7.org/CodeSystem/v3-ActSite"
ROUTE = "http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration"
LOCAL = "http://example.org/fhir/CodeSystem/footdrop-cds-local"
V2_0276 = "http://terminology.hl7.org/CodeSystem/v2-0276"
PID = "p1"
NOW = datetime(2025, 6, 13, 10, 0, tzinfo=UTC)
INJECTED = "2025-06-11T08:30:00Z"
ONSET = "2025-06-11T14:00:00Z"

SIDE_FOOT = {"left": "22335008", "right": "7769000"}
_counter = iter(range(10**9))


@cache
def content() -> Content:
    return load_content(CARDS)


def _id(prefix: str) -> str:
    return f"{prefix}{next(_counter)}"


def concept(system: str, code: str, display: str | None = None, text: str | None = None) -> dict:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    out: dict[str, Any] = {"coding": [coding]}
    if text:
        out["text"] = text
    return out


def condition(
    code: str = "M21.372",
    system: str = ICD,
    *,
    onset: str | None = ONSET,
    recorded: str | None = None,
    clinical: str | None = "active",
    verification: str | None = "confirmed",
    body_side: str | None = None,
    display: str | None = None,
    text: str | None = None,
    rid: str | None = None,
    **extra: Any,
) -> dict:
    r: dict[str, Any] = {
        "resourceType": "Condition",
        "id": rid or _id("cond"),
        "code": concept(system, code, display, text),
        "subject": {"reference": f"Patient/{PID}"},
    }
    if clinical:
        r["clinicalStatus"] = concept(
            "http://terminology.hl7.org/CodeSystem/condition-clinical", clinical
        )
    if verification:
        r["verificationStatus"] = concept(
            "http://terminology.hl7.org/CodeSystem/condition-ver-status", verification
        )
    if onset:
        r["onsetDateTime"] = onset
    if recorded:
        r["recordedDate"] = recorded
    if body_side:
        r["bodySite"] = [concept(SNOMED, SIDE_FOOT[body_side])]
    r.update(extra)
    return r


def im_procedure(
    site: str | None = "LG",
    when: str = INJECTED,
    *,
    code: str = "76601001",
    system: str = SNOMED,
    site_system: str = ACTSITE,
    status: str = "completed",
    rid: str | None = None,
) -> dict:
    r: dict[str, Any] = {
        "resourceType": "Procedure",
        "id": rid or _id("proc"),
        "status": status,
        "code": concept(system, code),
        "subject": {"reference": f"Patient/{PID}"},
        "performedDateTime": when,
    }
    if site:
        r["bodySite"] = [concept(site_system, site)]
    return r


def med_admin(
    route: tuple[str, str] | None = (ROUTE, "IM"),
    site: str | None = "LG",
    when: str = INJECTED,
    *,
    drug: str = "Diclofenac 75 mg injection",
    status: str = "completed",
    route_text: str | None = None,
    rid: str | None = None,
    **extra: Any,
) -> dict:
    dosage: dict[str, Any] = {}
    if route:
        dosage["route"] = concept(*route)
    elif route_text:
        dosage["route"] = {"text": route_text}
    if site:
        dosage["site"] = concept(ACTSITE, site)
    r: dict[str, Any] = {
        "resourceType": "MedicationAdministration",
        "id": rid or _id("ma"),
        "status": status,
        "medicationCodeableConcept": {"text": drug},
        "subject": {"reference": f"Patient/{PID}"},
        "effectiveDateTime": when,
        "dosage": dosage,
    }
    r.update(extra)
    return r


def immunization(site: str | None = "LG", when: str = INJECTED, route: str = "IM") -> dict:
    r: dict[str, Any] = {
        "resourceType": "Immunization",
        "id": _id("imm"),
        "status": "completed",
        "vaccineCode": {"text": "Tetanus toxoid"},
        "patient": {"reference": f"Patient/{PID}"},
        "occurrenceDateTime": when,
        "route": concept(ROUTE, route),
    }
    if site:
        r["site"] = concept(ACTSITE, site)
    return r


def mrc(grade: int, when: str, side: str | None = "left", status: str = "final") -> dict:
    r: dict[str, Any] = {
        "resourceType": "Observation",
        "id": _id("mrc"),
        "status": status,
        "code": concept(LOCAL, "mrc-ankle-dorsiflexion"),
        "subject": {"reference": f"Patient/{PID}"},
        "effectiveDateTime": when,
        "valueInteger": grade,
    }
    if side:
        r["bodySite"] = concept(SNOMED, SIDE_FOOT[side])
    return r


def finding(when: str = "2025-06-12T09:00:00Z", side: str | None = "left", **value: Any) -> dict:
    r: dict[str, Any] = {
        "resourceType": "Observation",
        "id": _id("obs"),
        "status": "final",
        "code": concept(SNOMED, "6077001", "Foot drop"),
        "subject": {"reference": f"Patient/{PID}"},
        "effectiveDateTime": when,
    }
    if side:
        r["bodySite"] = concept(SNOMED, SIDE_FOOT[side])
    r.update(value)
    return r


def device_request(
    code: str = "L1930",
    system: str = HCPCS,
    status: str = "active",
    authored: str = "2025-06-12T09:00:00Z",
    text: str | None = None,
) -> dict:
    return {
        "resourceType": "DeviceRequest",
        "id": _id("dr"),
        "status": status,
        "intent": "order",
        "codeCodeableConcept": concept(system, code, text=text),
        "subject": {"reference": f"Patient/{PID}"},
        "authoredOn": authored,
    }


def service_request(
    code: str,
    system: str = SNOMED,
    status: str = "active",
    *,
    authored: str = "2025-06-12T09:00:00Z",
    occurrence: str | None = None,
    priority: str = "routine",
) -> dict:
    r: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": _id("sr"),
        "status": status,
        "intent": "order",
        "priority": priority,
        "code": concept(system, code),
        "subject": {"reference": f"Patient/{PID}"},
        "authoredOn": authored,
    }
    if occurrence:
        r["occurrenceDateTime"] = occurrence
    return r


def patient(birth: str = "1979-04-18") -> dict:
    return {"resourceType": "Patient", "id": PID, "birthDate": birth}


def run(
    *resources: Any,
    now: datetime = NOW,
    context: dict[str, Any] | None = None,
    policy: Policy | None = None,
    cards: Content | None = None,
) -> Evaluation:
    ctx = context or {"patientId": PID, "userId": "Practitioner/doc1"}
    return evaluate_patient_view(
        ctx, list(resources), cards or content(), now, "hook-1", policy or Policy()
    )


def explain(
    *resources: Any,
    now: datetime = NOW,
    context: dict[str, Any] | None = None,
    policy: Policy | None = None,
    cards: Content | None = None,
) -> Explanation:
    ctx = context or {"patientId": PID, "userId": "Practitioner/doc1"}
    return explain_patient_view(
        ctx, list(resources), cards or content(), now, "hook-1", policy or Policy()
    )


def page_text(*resources: Any, **kwargs: Any) -> str:
    """The rule trace as JSON text: where R9a moved a card's sentence (the app page)."""
    return json.dumps(explain(*resources, **kwargs).trace, ensure_ascii=False)


def card_of(*resources: Any, **kwargs: Any) -> dict | None:
    evaluation = run(*resources, **kwargs)
    assert len(evaluation.cards) <= 1
    return evaluation.cards[0] if evaluation.cards else None


def suggestion_keys(card: dict | None) -> list[str]:
    """Suggestion keys (clinical.md §3) read from the emitted resources alone."""
    keys = []
    for suggestion in (card or {}).get("suggestions", []):
        resource = suggestion["actions"][0]["resource"]
        if resource["resourceType"] == "DeviceRequest":
            keys.append("AFO")
            continue
        codes = {c["code"] for c in resource["code"]["coding"]}
        if resource.get("priority") == "stat":
            keys.append("URGENT_EVAL")
        elif "306170007" in codes:
            keys.append("PT_REFERRAL")
        elif "306276006" in codes:
            keys.append("EMG_NCS")
        elif "390906007" in codes:
            keys.append("FOLLOW_UP")
        elif codes & {"308482002", "308481009"}:
            keys.append("SURGICAL_REFERRAL")
        else:
            keys.append("OTHER")
    return keys


def resource_of(card: dict, key: str) -> dict:
    for suggestion in card["suggestions"]:
        resource = suggestion["actions"][0]["resource"]
        if suggestion_keys({"suggestions": [suggestion]}) == [key]:
            return resource
    raise AssertionError(f"no {key} suggestion")


FULL = ["AFO", "PT_REFERRAL", "EMG_NCS", "FOLLOW_UP"]

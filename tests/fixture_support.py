"""Reading fixtures and classifying what a card suggests, from the emitted FHIR resources alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

ROOT = Path(__file__).resolve().parent.parent
PATIENT_VIEW_FIXTURES = sorted((ROOT / "fixtures" / "patient-view").glob("*.json"))

SNOMED = "http://snomed.info/sct"
HCPCS = (
    "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
    "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
)
SERVICE_KEYS = {
    "306170007": "PT_REFERRAL",
    "306276006": "EMG_NCS",
    "390906007": "FOLLOW_UP",
    "308482002": "SURGICAL_REFERRAL",
    "308481009": "SURGICAL_REFERRAL",
}


def load_fixture(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text("utf-8"))


def codings(resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
    concept = resource.get("code") or resource.get("codeCodeableConcept") or {}
    yield from concept.get("coding", [])


def suggestion_key(resource: dict[str, Any]) -> str:
    """The scenario key of a suggested resource (clinical.md §3), read from its type and codes."""
    if resource.get("resourceType") == "DeviceRequest":
        if any(
            c.get("system") in HCPCS and str(c.get("code", "")).startswith("L19")
            for c in codings(resource)
        ):
            return "AFO"
        return "OTHER_DEVICE"
    if resource.get("resourceType") == "ServiceRequest":
        if resource.get("priority") == "stat":
            return "URGENT_EVAL"
        for coding in codings(resource):
            if coding.get("system") == SNOMED and coding.get("code") in SERVICE_KEYS:
                return SERVICE_KEYS[coding["code"]]
    return "OTHER"


def suggested_resources(card: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        action["resource"]
        for suggestion in card.get("suggestions", [])
        for action in suggestion.get("actions", [])
        if "resource" in action
    ]


def fhir_problems(resource: dict[str, Any]) -> str | None:
    """None when ``resource`` validates against its fhir.resources R4B model, else the error."""
    try:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    except Exception as error:  # pydantic's ValidationError and unknown resource types
        return str(error)[:500]
    return None


def occurrence_date(resource: dict[str, Any]) -> str | None:
    """The first date the order may be carried out (occurrenceDateTime or period start)."""
    when = resource.get("occurrenceDateTime") or (resource.get("occurrencePeriod") or {}).get(
        "start"
    )
    return when[:10] if when else None


def explain_fixture(fixture: dict[str, Any], policy: Any = None) -> Any:
    """The engine's cards and rule trace for a patient-view fixture, at its evalTime."""
    from datetime import datetime

    from cds_service.domain.policy import Policy
    from cds_service.domain.trace import explain_patient_view
    from tests.domain.factories import content
    from tests.domain.test_fixture_scenarios import flatten

    request = fixture["request"]
    now = datetime.fromisoformat(fixture["evalTime"].replace("Z", "+00:00"))
    return explain_patient_view(
        request["context"],
        flatten(request.get("prefetch")),
        content(),
        now,
        request["hookInstance"],
        policy if policy is not None else Policy(),
    )


def fixture_trace(fixture: dict[str, Any]) -> dict[str, Any]:
    """The engine's rule trace for a patient-view fixture (what the app page renders)."""
    trace: dict[str, Any] = explain_fixture(fixture).trace
    return trace


def check_trace(fixture: dict[str, Any], trace: dict[str, Any]) -> None:
    """Sentences R9a moved from the card (``traceIncludes``) are in the trace's JSON."""
    text = json.dumps(trace, ensure_ascii=False).lower()
    for phrase in fixture["expected"].get("traceIncludes", []):
        assert phrase.lower() in text, phrase


def check_outcome(fixture: dict[str, Any], body: dict[str, Any]) -> None:
    """Assert the response body is the fixture's expected outcome, exactly."""
    expected = fixture["expected"]
    cards = body["cards"]
    if not expected["card"]:
        assert cards == [], f"expected no card, got {[c['summary'] for c in cards]}"
        return
    assert len(cards) == 1, f"expected one card, got {len(cards)}"
    card = cards[0]
    assert card["indicator"] == expected["indicator"], card["summary"]
    resources = suggested_resources(card)
    keys = sorted(suggestion_key(resource) for resource in resources)
    assert keys == sorted(expected["suggestions"]), card["summary"]
    for resource in resources:
        problem = fhir_problems(resource)
        assert problem is None, problem
    if "emgNotBefore" in expected:
        emg = [r for r in resources if suggestion_key(r) == "EMG_NCS"]
        assert emg and occurrence_date(emg[0]) is not None
        assert occurrence_date(emg[0]) >= expected["emgNotBefore"]
    for phrase in expected.get("detailIncludes", []):
        assert phrase.lower() in card.get("detail", "").lower(), phrase


# --- prevention services (order-select / order-sign) -----------------------------------------

PREVENTION_SERVICES = {
    "order-select": "im-injection-site-select",
    "order-sign": "im-injection-site-sign",
}
ORDER_SELECT_FIXTURES = sorted((ROOT / "fixtures" / "order-select").glob("*.json"))
ORDER_SIGN_FIXTURES = sorted((ROOT / "fixtures" / "order-sign").glob("*.json"))
PREVENTION_FIXTURES = ORDER_SELECT_FIXTURES + ORDER_SIGN_FIXTURES
ACTSITE = "http://terminology.hl7.org/CodeSystem/v3-ActSite"
#: Risk-factor key -> the bold label its line starts with on the card.
RISK_MARKERS = {
    "child": "**Child**",
    "older": "**Older patient**",
    "underweight": "**Underweight**",
    "anticoagulated": "**Anticoagulated**",
}


def draft_orders(fixture: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The fixture's draft orders by reference ("MedicationRequest/<id>")."""
    bundle = fixture["request"]["context"]["draftOrders"]
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}": e["resource"]
        for e in bundle.get("entry", [])
    }


def _without_sites(resource: dict[str, Any]) -> dict[str, Any]:
    copy = json.loads(json.dumps(resource))
    copy.pop("site", None)
    for dosage in copy.get("dosageInstruction", []):
        dosage.pop("site", None)
    return copy


def update_site_codes(resource: dict[str, Any]) -> list[str]:
    """The v3-ActSite codes an updated draft carries (its Immunization site or dosage sites)."""
    concepts = [resource["site"]] if "site" in resource else []
    concepts += [d["site"] for d in resource.get("dosageInstruction", []) if "site" in d]
    return sorted(
        {c["code"] for concept in concepts for c in concept["coding"] if c["system"] == ACTSITE}
    )


def check_prevention_outcome(fixture: dict[str, Any], body: dict[str, Any]) -> None:
    """One card per expected order, in draft order, each exactly as the fixture expects.

    Every card names its order (reference in the detail, medication in the summary); every
    suggestion is an ``update`` of that very draft that validates with fhir.resources R4B, keeps
    its id and status and differs from it only in the injection site.
    """
    expected = fixture["expected"]["cards"]
    cards = body["cards"]
    assert len(cards) == len(expected), [c["summary"] for c in cards]
    drafts = draft_orders(fixture)
    for want, card in zip(expected, cards, strict=True):
        draft = drafts[want["order"]]
        summary, detail = card["summary"], card["detail"]
        assert card["indicator"] == want["indicator"], summary
        assert want["order"] in detail, "the card names the order it is about"
        assert len(summary) < 140 and not summary.endswith("…"), summary
        medication = (draft.get("medicationCodeableConcept") or draft.get("vaccineCode") or {}).get(
            "text", ""
        )
        assert medication.split()[0] in summary, summary
        targets: list[str] = []
        for suggestion in card.get("suggestions", []):
            (action,) = suggestion["actions"]
            assert action["type"] == "update"
            resource = action["resource"]
            problem = fhir_problems(resource)
            assert problem is None, problem
            assert resource["resourceType"] == draft["resourceType"]
            assert resource["id"] == draft["id"]
            assert resource.get("status") == draft.get("status")
            assert _without_sites(resource) == _without_sites(draft)
            assert want["order"] in action["description"]
            targets += update_site_codes(resource)
        assert targets == want["updateSites"], summary
        if targets:
            assert card["selectionBehavior"] == "at-most-one"
            assert sum(bool(s.get("isRecommended")) for s in card["suggestions"]) <= 1
        else:
            assert "suggestions" not in card
        for key, marker in RISK_MARKERS.items():
            assert (marker in detail) == (key in want.get("riskFactors", [])), (key, summary)
        for phrase in want.get("detailIncludes", []):
            assert phrase.lower() in detail.lower(), phrase
        for phrase in want.get("summaryIncludes", []):
            assert phrase.lower() in summary.lower(), phrase

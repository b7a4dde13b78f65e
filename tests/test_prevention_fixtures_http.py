"""The prevention fixtures (order-select, order-sign), posted over real HTTP on loopback.

Each fixture is a CDS Hooks request with the cards it must get (one per judged IM draft with a
risky site, in draft order); :func:`check_prevention_outcome` pins indicator, order reference,
update sites, risk factors and the validity of every updated draft.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
from fhir.resources.R4B import get_fhir_model_class

from tests.conftest import assert_valid_response
from tests.fixture_support import (
    ORDER_SELECT_FIXTURES,
    ORDER_SIGN_FIXTURES,
    PREVENTION_FIXTURES,
    PREVENTION_SERVICES,
    check_prevention_outcome,
    draft_orders,
    load_fixture,
)

ID_PATTERN = re.compile(r"^(\d{2})-[a-z0-9]+(?:-[a-z0-9]+)*$")
EXPECTED_CARD_KEYS = {
    "order",
    "indicator",
    "updateSites",
    "riskFactors",
    "detailIncludes",
    "summaryIncludes",
}


def _hook(path: Path) -> str:
    return path.parent.name


def _post(base_url: str, fixture: dict[str, Any], fhir_server: str | None) -> requests.Response:
    request = dict(fixture["request"])
    if fhir_server is not None:
        request["fhirServer"] = fhir_server
    service = PREVENTION_SERVICES[request["hook"]]
    return requests.post(f"{base_url}/cds-services/{service}", json=request, timeout=10)


@pytest.mark.parametrize("path", PREVENTION_FIXTURES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_fixture_over_http(path, module_live_server, module_clock, empty_fhir_server):
    """The service answers the fixture's request with exactly its expected cards.

    Keys a fixture leaves out are fetched from a loopback FHIR server that has no more data.
    """
    fixture = load_fixture(path)
    module_clock.set(fixture["evalTime"])
    response = _post(module_live_server.url, fixture, empty_fhir_server)
    assert response.status_code == 200, response.text[:500]
    body = response.json()
    assert_valid_response(body)
    check_prevention_outcome(fixture, body)


@pytest.mark.parametrize("path", PREVENTION_FIXTURES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_fixture_is_well_formed(path):
    """Shape, hook, ids, expected keys and valid FHIR R4 (prefetch and draft orders)."""
    fixture = load_fixture(path)
    assert fixture["id"] == path.stem and ID_PATTERN.match(fixture["id"])
    required = {"id", "description", "evalTime", "expected", "request"}
    assert required <= set(fixture) <= required | {"revision2", "issue12"}
    if "revision2" in fixture:  # why the expected outcome changed under clinical.md §4
        assert isinstance(fixture["revision2"], str) and fixture["revision2"].strip()
    if "issue12" in fixture:  # why an expected sentence changed when the card got short (R9a)
        assert str(fixture["issue12"]).startswith("R9a")
    request = fixture["request"]
    assert request["hook"] == _hook(path)
    assert uuid.UUID(request["hookInstance"]).version == 4
    for want in fixture["expected"]["cards"]:
        assert set(want) <= EXPECTED_CARD_KEYS and want["indicator"] in ("info", "warning")
        assert want["order"] in draft_orders(fixture)
    if request["hook"] == "order-select":
        assert set(request["context"]["selections"]) <= set(draft_orders(fixture))
    resources = list(draft_orders(fixture).values())
    for value in request["prefetch"].values():
        if value.get("resourceType") == "Bundle":
            resources += [entry["resource"] for entry in value.get("entry", [])]
        else:
            resources.append(value)
    for resource in resources:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def test_every_case_of_the_issue_has_a_fixture():
    """Both hooks have fixtures; together they cover cards, no-cards, warnings and risks."""
    assert len(ORDER_SIGN_FIXTURES) >= 20 and len(ORDER_SELECT_FIXTURES) >= 5
    fixtures = [load_fixture(p) for p in PREVENTION_FIXTURES]
    expected = [card for f in fixtures for card in f["expected"]["cards"]]
    indicators = Counter(card["indicator"] for card in expected)
    assert indicators["info"] >= 10 and indicators["warning"] >= 4
    assert sum(not f["expected"]["cards"] for f in fixtures) >= 8  # no-card cases
    assert any(len(f["expected"]["cards"]) >= 2 for f in fixtures)
    risks = {risk for card in expected for risk in card.get("riskFactors", [])}
    assert risks == {"child", "older", "underweight", "anticoagulated"}
    targets = {tuple(card["updateSites"]) for card in expected}
    assert {("LVG",), ("RVG",), ("LVG", "RVG"), ()} <= targets


def test_ids_and_hook_instances_are_unique():
    """Fixture ids are unique within a hook and hookInstances across all prevention fixtures."""
    for paths in (ORDER_SELECT_FIXTURES, ORDER_SIGN_FIXTURES):
        assert len({p.stem[:2] for p in paths}) == len(paths)
    instances = [load_fixture(p)["request"]["hookInstance"] for p in PREVENTION_FIXTURES]
    assert len(set(instances)) == len(instances)


def test_same_request_gives_the_same_cards(module_live_server, module_clock, empty_fhir_server):
    """Card and suggestion uuids are uuid5 of the hook instance and the order: stable."""
    fixture = load_fixture(ORDER_SIGN_FIXTURES[9])  # two cards
    module_clock.set(fixture["evalTime"])
    first = _post(module_live_server.url, fixture, empty_fhir_server).json()
    second = _post(module_live_server.url, fixture, empty_fhir_server).json()
    assert first == second
    uuids = [c["uuid"] for c in first["cards"]]
    uuids += [s["uuid"] for c in first["cards"] for s in c.get("suggestions", [])]
    assert len(set(uuids)) == len(uuids) >= 5


def test_required_data_missing_without_fhir_server_is_412(module_live_server, module_clock):
    """Without Conditions and no fhirServer to fetch them from, the answer is 412, naming them."""
    fixture = json.loads(json.dumps(load_fixture(ORDER_SIGN_FIXTURES[0])))
    module_clock.set(fixture["evalTime"])
    del fixture["request"]["prefetch"]["conditions"]
    del fixture["request"]["fhirServer"]
    service = PREVENTION_SERVICES["order-sign"]
    response = requests.post(
        f"{module_live_server.url}/cds-services/{service}", json=fixture["request"], timeout=10
    )
    assert response.status_code == 412
    assert any(detail.startswith("conditions:") for detail in response.json()["details"])


def test_optional_data_missing_without_fhir_server_still_gives_the_card(
    module_live_server, module_clock
):
    """Patient, observations and medicationRequests are optional: the card comes without them."""
    fixture = json.loads(json.dumps(load_fixture(ORDER_SIGN_FIXTURES[0])))
    module_clock.set(fixture["evalTime"])
    for key in ("patient", "observations", "medicationRequests"):
        del fixture["request"]["prefetch"][key]
    del fixture["request"]["fhirServer"]
    response = _post(module_live_server.url, {**fixture, "request": fixture["request"]}, None)
    assert response.status_code == 200
    (card,) = response.json()["cards"]
    assert card["indicator"] == "info" and "Could not be checked: age" in card["detail"]


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda c: c.pop("draftOrders"), "draftOrders"),
        (lambda c: c.update(draftOrders={"entry": []}), "draftOrders"),
        (lambda c: c.update(draftOrders={"resourceType": "Patient"}), "draftOrders"),
        (lambda c: c["draftOrders"].update(entry=[{"fullUrl": "x"}]), "draftOrders"),
        (lambda c: c["draftOrders"].update(entry=[{"resource": {"id": "x"}}]), "draftOrders"),
        (lambda c: c.pop("selections"), "selections"),
        (lambda c: c.update(selections=[]), "selections"),
        (lambda c: c.update(selections=["not a reference"]), "selections"),
    ],
    ids=[
        "no draftOrders",
        "draftOrders without resourceType",
        "draftOrders not a Bundle",
        "entry without resource",
        "entry resource without resourceType",
        "no selections",
        "empty selections",
        "selection not a reference",
    ],
)
def test_malformed_order_context_is_400(module_live_server, change, where):
    """The draftOrders Bundle and the selections are validated like the rest of the request."""
    fixture = json.loads(json.dumps(load_fixture(ORDER_SELECT_FIXTURES[0])))
    change(fixture["request"]["context"])
    response = _post(module_live_server.url, fixture, None)
    assert response.status_code == 400, response.text[:300]
    assert response.json()["error"] == "invalid request"
    assert any(where in detail for detail in response.json()["details"])


def test_discovery_lists_the_three_services(module_live_server):
    """Discovery: the patient-view service and one prevention service per ordering hook."""
    response = requests.get(f"{module_live_server.url}/cds-services", timeout=5)
    services = {s["id"]: s for s in response.json()["services"]}
    assert len(services) == 3
    for hook, service_id in PREVENTION_SERVICES.items():
        service = services[service_id]
        assert service["hook"] == hook and service["title"] and service["description"]
        assert service["prefetch"]["conditions"] == "Condition?patient={{context.patientId}}"
        assert "39156-5" in service["prefetch"]["observations"]
        assert service["prefetch"]["medicationRequests"].startswith("MedicationRequest?")
        assert "{{context.draftOrders" not in json.dumps(service)  # not a prefetch token


@pytest.mark.parametrize("hook", ["patient-view", "order-sign"])
def test_order_select_service_refuses_other_hooks(module_live_server, hook):
    """A prevention service answers only its own hook (400 wrong hook, or invalid context)."""
    fixture = json.loads(json.dumps(load_fixture(ORDER_SELECT_FIXTURES[0])))
    fixture["request"]["hook"] = hook
    response = requests.post(
        f"{module_live_server.url}/cds-services/{PREVENTION_SERVICES['order-select']}",
        json=fixture["request"],
        timeout=10,
    )
    assert response.status_code == 400


def test_readme_order_sign_example_is_what_the_service_answers(module_live_server, module_clock):
    """The README's order-sign example request gets exactly the card the README shows."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text("utf-8")
    section = readme.split("## Prevention at the point of ordering", 1)[1]
    request_text, card_text = re.findall(r"```json\n(.*?)\n```", section, re.S)[:2]
    request, shown = json.loads(request_text), json.loads(card_text)
    module_clock.set("2025-06-13T10:00:00Z")
    response = requests.post(
        f"{module_live_server.url}/cds-services/{PREVENTION_SERVICES['order-sign']}",
        json=request,
        timeout=10,
    )
    assert response.status_code == 200
    assert response.json() == shown

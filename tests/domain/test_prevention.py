"""Prevention at the point of ordering: reading drafts, the site rules, neuropathy, risk factors."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service import schemas
from cds_service.domain.content import ContentError
from cds_service.domain.facts import extract_facts
from cds_service.domain.prevention import (
    evaluate_prevention,
    judge,
    judged_orders,
    read_draft,
    risk_factors,
)
from cds_service.domain.prevention_card import updated_draft
from cds_service.domain.rules import injection_neuropathies

from .factories import (
    ACTSITE,
    NOW,
    PID,
    ROUTE,
    SNOMED,
    concept,
    condition,
    content,
    im_procedure,
    med_admin,
    patient,
    run,
)

CVX = "http://hl7.org/fhir/sid/cvx"
LOINC = "http://loinc.org"


def draft(
    rid: str = "mr1",
    *,
    route: tuple[str, str] | None = (ROUTE, "IM"),
    site: tuple[str, str] | None = (ACTSITE, "LG"),
    drug: str = "Diclofenac 75 mg/3 mL solution for injection",
    status: str = "draft",
    route_text: str | None = None,
    text: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A draft MedicationRequest with one dosage instruction."""
    dosage: dict[str, Any] = {}
    if text:
        dosage["text"] = text
    if route:
        dosage["route"] = concept(*route)
    elif route_text:
        dosage["route"] = {"text": route_text}
    if site:
        dosage["site"] = concept(*site)
    r: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": {"text": drug},
        "subject": {"reference": f"Patient/{PID}"},
        "dosageInstruction": [dosage],
    }
    r.update(extra)
    return r


def immunization_draft(status: str = "not-done", site: str | None = "RG") -> dict[str, Any]:
    r: dict[str, Any] = {
        "resourceType": "Immunization",
        "id": "imm1",
        "status": status,
        "vaccineCode": {"coding": [{"system": CVX, "code": "115"}], "text": "Tdap"},
        "patient": {"reference": f"Patient/{PID}"},
        "occurrenceDateTime": "2025-06-13T10:00:00Z",
        "route": concept(ROUTE, "IM"),
    }
    if site:
        r["site"] = concept(ACTSITE, site)
    return r


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources],
    }


def context(*drafts: dict[str, Any], selections: list[str] | None = None) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "patientId": PID,
        "userId": "Practitioner/doc1",
        "draftOrders": bundle(*drafts),
    }
    if selections is not None:
        ctx["selections"] = selections
    return ctx


def sign(*drafts: dict[str, Any], record: tuple[dict[str, Any], ...] = (), now: datetime = NOW):
    return evaluate_prevention("order-sign", context(*drafts), list(record), content(), now, "h-1")


def bmi(value: float, when: str = "2025-05-01T09:00:00Z", unit: str = "kg/m2") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"bmi-{value}-{when[:10]}",
        "status": "final",
        "code": concept(LOINC, "39156-5", "Body mass index (BMI) [Ratio]"),
        "subject": {"reference": f"Patient/{PID}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "code": unit},
    }


def read(resource: dict[str, Any]):
    return read_draft(resource, content(), PID)


def facts_of(*resources: dict[str, Any], now: datetime = NOW):
    return extract_facts(resources, content(), PID, now)


LEFT_NEUROPATHY = (condition("M21.372"), im_procedure("LG"))


def neuropathies(*resources: dict[str, Any]):
    return injection_neuropathies(facts_of(*resources), NOW, content().thresholds)


# --- which drafts are judged ------------------------------------------------------------------


def test_order_select_judges_only_the_selected_drafts():
    """order-select keeps the drafts named in context.selections; order-sign keeps them all."""
    ctx = context(draft("a"), draft("b"), selections=["MedicationRequest/b"])
    assert [r["id"] for r in judged_orders("order-select", ctx)] == ["b"]
    assert [r["id"] for r in judged_orders("order-sign", ctx)] == ["a", "b"]


@pytest.mark.parametrize("selections", [None, "MedicationRequest/a", [], [7], ["Other/a"]])
def test_order_select_without_usable_selections_judges_nothing(selections):
    """Missing, malformed or non-matching selections select nothing (never everything)."""
    ctx = context(draft("a"))
    ctx["selections"] = selections
    assert judged_orders("order-select", ctx) == []


@pytest.mark.parametrize("draft_orders", [None, 5, "x", {"resourceType": "Bundle"}, []])
def test_malformed_draft_orders_give_no_card_and_never_raise(draft_orders):
    """The domain never raises on a draftOrders value it cannot read."""
    ctx = {"patientId": PID, "draftOrders": draft_orders, "selections": ["MedicationRequest/a"]}
    for mode in ("order-select", "order-sign"):
        assert evaluate_prevention(mode, ctx, [], content(), NOW, "h").cards == []


def test_unknown_mode_is_refused():
    """Only the two ordering hooks are prevention modes."""
    with pytest.raises(ValueError):
        evaluate_prevention("patient-view", context(draft()), [], content(), NOW, "h")


# --- reading a draft (R2 routes) --------------------------------------------------------------


@pytest.mark.parametrize(
    "route",
    [(ROUTE, "IM"), (ROUTE, "IMD"), (ROUTE, "IMZ"), (SNOMED, "78421000")],
    ids=["v3 IM", "v3 IMD", "v3 IMZ", "SNOMED 78421000"],
)
def test_coded_intramuscular_routes_are_read(route):
    """Every IM route of the route-im value set makes the draft an IM injection."""
    found = read(draft(route=route))
    assert found is not None and found.route_coded and found.sites[0].site_class == "gluteal"


@pytest.mark.parametrize(
    "route",
    [(ROUTE, "SQ"), (SNOMED, "34206005"), (ROUTE, "PO"), (SNOMED, "26643006"), (ROUTE, "IV")],
    ids=["v3 SQ", "SNOMED SC", "v3 PO", "SNOMED oral", "v3 IV"],
)
def test_coded_non_im_routes_are_not_judged_even_with_a_gluteal_site(route):
    """A coded non-IM route wins over a gluteal site (R2): no card."""
    assert read(draft(route=route)) is None
    assert sign(draft(route=route)).cards == []


def test_route_text_or_gluteal_site_without_a_coded_route_counts_as_im():
    """Uncoded route: 'intramuscular' in the text, or a gluteal site, makes it an IM order."""
    by_text = read(draft(route=None, route_text="Intramuscular", site=None))
    by_site = read(draft(route=None, site=(ACTSITE, "RG")))
    assert by_text is not None and not by_text.route_coded
    assert by_site is not None and by_site.sites[0].side == "right"
    assert read(draft(route=None, site=None, text="1 tablet daily")) is None
    assert read(draft(route=None, site=(ACTSITE, "LD"))) is None


@pytest.mark.parametrize("status", ["entered-in-error", "cancelled", "stopped", "completed"])
def test_closed_medication_requests_are_not_judged(status):
    """A draft that will not be given (cancelled, stopped, completed, in error) gets no card."""
    assert read(draft(status=status)) is None


def test_other_patients_drafts_and_other_resource_types_are_ignored():
    """A draft for another patient, or a ServiceRequest, is not an injection of this patient."""
    assert read(draft(subject={"reference": "Patient/someone-else"})) is None
    assert read({"resourceType": "ServiceRequest", "id": "s", "status": "draft"}) is None


def test_immunization_drafts_are_judged_unless_already_given():
    """An Immunization in draftOrders counts when not-done / draft-like, never when completed."""
    assert read(immunization_draft("not-done")) is not None
    assert read(immunization_draft("completed")) is None
    assert read(immunization_draft("entered-in-error")) is None
    found = read(immunization_draft("not-done"))
    assert found.vaccine and found.medication == "Tdap" and found.sites[0].index == -1


def test_vaccines_ordered_as_medication_requests_are_recognised():
    """CVX coding or 'vaccine' in the name marks an IM vaccination."""
    by_cvx = draft(
        medicationCodeableConcept={"coding": [{"system": CVX, "code": "43"}], "text": "Hep B"}
    )
    assert read(by_cvx).vaccine
    assert read(draft(drug="Influenza vaccine 0.5 mL")).vaccine
    assert not read(draft()).vaccine


def test_medication_reference_is_resolved_in_contained_and_in_the_bundle():
    """The medication's name comes from a contained Medication or one in draftOrders."""
    med = {"resourceType": "Medication", "id": "m1", "code": {"text": "Haloperidol decanoate"}}
    contained = draft(medicationReference={"reference": "#m1"}, contained=[med])
    del contained["medicationCodeableConcept"]
    assert read(contained).medication == "Haloperidol decanoate"
    by_bundle = draft(medicationReference={"reference": "Medication/m1"})
    del by_bundle["medicationCodeableConcept"]
    assert read_draft(by_bundle, content(), PID, [med]).medication == "Haloperidol decanoate"


def test_only_the_im_dosage_instructions_of_a_draft_are_read():
    """A second, oral dosage instruction is not an injection site."""
    resource = draft()
    resource["dosageInstruction"].append({"route": concept(ROUTE, "PO"), "text": "then orally"})
    found = read(resource)
    assert [s.index for s in found.sites] == [0]


# --- the site rule ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("site", "targets"),
    [
        ((ACTSITE, "LG"), ("LVG",)),
        ((ACTSITE, "RG"), ("RVG",)),
        ((SNOMED, "1236872009"), ("LVG",)),
        ((SNOMED, "1236873004"), ("RVG",)),
        ((ACTSITE, "BU"), ("LVG", "RVG")),
        ((SNOMED, "46862004"), ("LVG", "RVG")),
        (None, ("LVG", "RVG")),
        (("http://example.org/sites", "upper-outer"), ("LVG", "RVG")),
    ],
    ids=["LG", "RG", "SNOMED left", "SNOMED right", "BU", "SNOMED buttock", "none", "uncoded"],
)
def test_dorsogluteal_unspecified_or_missing_site_gives_info_with_the_same_side(site, targets):
    """Risky sites give info; the target is the same side's ventrogluteal site, both if unknown."""
    judgement = judge(read(draft(site=site)), [], content())
    assert judgement is not None and judgement.indicator == "info"
    assert tuple(t.code for t in judgement.targets) == targets


@pytest.mark.parametrize(
    "site",
    [
        (ACTSITE, "LVG"),
        (ACTSITE, "RVG"),
        (ACTSITE, "LD"),
        (ACTSITE, "RUA"),
        (ACTSITE, "LVL"),
        (SNOMED, "1217006009"),
        (ACTSITE, "RT"),
    ],
    ids=["LVG", "RVG", "deltoid", "upper arm", "LVL", "SNOMED vastus", "thigh"],
)
def test_safe_sites_give_no_card(site):
    """Ventrogluteal, deltoid/arm and thigh/vastus lateralis: no card."""
    assert judge(read(draft(site=site)), []) is None
    assert sign(draft(site=site)).cards == []


# --- the documented injection neuropathy ------------------------------------------------------


def test_engine_finding_is_the_documented_neuropathy_with_its_side():
    """A foot drop the rules attribute to an injection is a finding; its side is the trigger's."""
    (finding,) = neuropathies(*LEFT_NEUROPATHY)
    assert finding.basis == "assessment" and finding.side == "left"
    assert finding.assessment is not None and finding.assessment.injection.site_side == "left"


def test_link_code_or_evidence_makes_a_finding_without_the_injection_on_file():
    """T80.89X- (current) or evidence.detail to an injection stands in for an old injection."""
    old = {"onset": "2022-02-10", "recorded": "2022-03-01"}
    sciatic = condition("S74.02XS", **old)
    link = condition("T80.89XS", **old)
    (by_link,) = neuropathies(sciatic, link)
    assert by_link.basis == "link-code" and by_link.side == "left" and "T80.89XS" in by_link.link
    linked = condition("G57.31", evidence=[{"detail": [{"reference": "Immunization/x"}]}], **old)
    (by_evidence,) = neuropathies(linked)
    assert by_evidence.basis == "evidence" and by_evidence.side == "right"
    assert neuropathies(condition("S74.02XS", **old)) == []


def test_inactive_or_unattributed_foot_drop_is_not_a_finding():
    """Resolved foot drop, refuted link code, opposite-side injection: no finding."""
    resolved = condition("M21.372", clinical="resolved", abatementDateTime="2025-06-12")
    assert neuropathies(resolved, im_procedure("LG")) == []
    assert neuropathies(condition("M21.372"), im_procedure("RG")) == []
    refuted_link = condition("T80.89XA", verification="refuted", clinical=None)
    assert neuropathies(condition("M21.372", onset="2024-01-01"), refuted_link) == []


def test_red_flags_do_not_hide_the_finding():
    """Bilateral foot drop (a red flag) after a gluteal injection is still a finding: both sides."""
    found = neuropathies(condition("G57.33"), im_procedure("LG"))
    assert [n.side for n in found] == ["bilateral"]


@pytest.mark.parametrize(
    ("site", "case", "targets"),
    [
        ((ACTSITE, "LG"), "affected", ("RVG",)),
        ((ACTSITE, "LVG"), "affected", ("RVG",)),
        ((ACTSITE, "RG"), "other", ("RVG",)),
        ((ACTSITE, "RVG"), "other", ()),
        ((ACTSITE, "BU"), "order-side-unknown", ("RVG",)),
        (None, "order-side-unknown", ("RVG",)),
    ],
)
def test_neuropathy_makes_any_gluteal_site_a_warning(site, case, targets):
    """Left neuropathy: every gluteal site or none warns; the target is always the right VG."""
    judgement = judge(read(draft(site=site)), neuropathies(*LEFT_NEUROPATHY), content())
    assert judgement.indicator == "warning" and judgement.case == case
    assert tuple(t.code for t in judgement.targets) == targets and judgement.affected == "left"


def test_neuropathy_of_both_or_unknown_side_suggests_no_gluteal_site():
    """Bilateral (or side not documented): warning, no ventrogluteal suggestion."""
    both = neuropathies(condition("G57.33"), im_procedure("LG"))
    judgement = judge(read(draft(site=(ACTSITE, "LVG"))), both)
    assert judgement.case == "both" and judgement.targets == ()
    card = sign(
        draft(site=(ACTSITE, "LVG")), record=(condition("G57.33"), im_procedure("LG"))
    ).cards[0]
    assert card["indicator"] == "warning" and "suggestions" not in card
    assert "avoid gluteal injections on either side" in card["detail"]


def test_neuropathy_with_a_deltoid_order_gives_no_card():
    """Non-gluteal sites stay silent even with a documented neuropathy."""
    assert judge(read(draft(site=(ACTSITE, "LD"))), neuropathies(*LEFT_NEUROPATHY)) is None


# --- risk factors -----------------------------------------------------------------------------


def risks(*resources: dict[str, Any], drafts: tuple[dict[str, Any], ...] = ()):
    return risk_factors(facts_of(*resources), content(), NOW, drafts)


@pytest.mark.parametrize(
    ("birth", "child", "older"),
    [
        ("2019-02-11", True, False),
        ("2010-06-14", True, False),  # 14 the day before the 15th birthday
        ("2010-06-13", False, False),  # 15 today
        ("1960-06-14", False, False),  # 64
        ("1960-06-13", False, True),  # 65 today
        ("1947-01-30", False, True),
    ],
)
def test_age_thresholds(birth, child, older):
    """Child below child_age (15), older from older_adult_age (65), at the evaluation date."""
    found = risks(patient(birth))
    assert (found.child, found.older) == (child, older)


def test_latest_recent_bmi_decides_underweight_in_adults_only():
    """The latest BMI within a year counts; < 18.5 is underweight for adults, not for children."""
    assert risks(patient(), bmi(22.0, "2024-12-01"), bmi(17.2, "2025-05-28")).underweight
    assert not risks(patient(), bmi(17.2, "2024-12-01"), bmi(19.0, "2025-05-28")).underweight
    assert not risks(patient(), bmi(17.0, "2024-03-01")).underweight  # older than bmi_recent
    assert risks(patient(), bmi(17.0, "2024-03-01")).bmi is None
    assert not risks(patient("2019-02-11"), bmi(15.4)).underweight  # child: BMI-for-age
    assert risks(bmi(17.0)).underweight  # age unknown: the adult cut-off applies
    assert not risks(patient(), bmi(17.0, unit="%")).underweight  # not kg/m2


def test_bmi_is_ignored_by_patient_view_and_never_counted_as_skipped():
    """A malformed BMI does not change the patient-view counts (it is not a foot-drop fact)."""
    broken = bmi(17.0)
    broken["valueQuantity"] = "seventeen"
    evaluation = run(broken, condition(), im_procedure())
    assert evaluation.resources_skipped == 0 and len(evaluation.cards) == 1


def test_anticoagulation_from_conditions_orders_administrations_and_drafts():
    """Z79.01 current, an active apixaban order, heparin given this week, enoxaparin drafted."""
    assert risks(condition("Z79.01", onset="2023-01-01")).anticoagulation
    assert not risks(condition("Z79.02", onset="2023-01-01")).anticoagulation  # antiplatelets
    active = draft(
        "ap", route=(ROUTE, "PO"), site=None, drug="Apixaban 5 mg tablet", status="active"
    )
    assert risks(active).anticoagulation == ("Apixaban 5 mg tablet (active order)",)
    stopped = {**active, "status": "stopped"}
    assert not risks(stopped).anticoagulation
    recent = med_admin(drug="Heparin 5000 units", when="2025-06-10T08:00:00Z", site=None)
    stale = med_admin(drug="Heparin 5000 units", when="2025-05-01T08:00:00Z", site=None)
    assert risks(recent).anticoagulation and not risks(stale).anticoagulation
    drafted = draft("enox", route=(ROUTE, "SQ"), site=None, drug="Enoxaparin 40 mg")
    assert risks(drafts=(drafted,)).anticoagulation == ("Enoxaparin 40 mg (ordered now)",)


def test_risk_factors_are_named_on_the_card_and_do_not_change_the_indicator():
    """An older anticoagulated patient: still info, both risk factors in the detail."""
    (card,) = sign(
        draft(), record=(patient("1940-01-01"), condition("Z79.01", onset="2020-01-01"))
    ).cards
    assert card["indicator"] == "info"
    assert "**Older patient**" in card["detail"] and "**Anticoagulated**" in card["detail"]
    assert "**Child**" not in card["detail"] and "**Underweight**" not in card["detail"]
    found = risks(patient("1940-01-01"), condition("Z79.01", onset="2020-01-01"))
    assert found.named == ("older", "anticoagulated")


# --- the card and its update ------------------------------------------------------------------


def test_update_replaces_only_the_site_and_validates_as_fhir():
    """The update is the whole draft (same id and status) with only the site set to LVG."""
    original = draft(text="75 mg IM once", note=[{"text": "for renal colic"}])
    (card,) = sign(original).cards
    (suggestion,) = card["suggestions"]
    (action,) = suggestion["actions"]
    resource = action["resource"]
    assert action["type"] == "update" and suggestion["isRecommended"] is True
    get_fhir_model_class("MedicationRequest").model_validate(resource)
    assert resource["dosageInstruction"][0]["site"]["coding"][0] == {
        "system": ACTSITE,
        "code": "LVG",
        "display": "left ventragluteal",
    }
    expected = copy.deepcopy(original)
    expected["dosageInstruction"][0]["site"] = resource["dosageInstruction"][0]["site"]
    assert resource == expected
    assert original["dosageInstruction"][0]["site"]["coding"][0]["code"] == "LG"  # not mutated


def test_update_of_several_im_dosage_instructions_and_of_an_immunization():
    """Every risky IM dosage gets the target site; an Immunization's own site is replaced."""
    two = draft()
    two["dosageInstruction"].append({"route": concept(ROUTE, "IM"), "text": "repeat in 8 h"})
    judgement = judge(read(two), [], content())
    resource = updated_draft(content(), judgement, judgement.targets[0])
    assert [d["site"]["coding"][0]["code"] for d in resource["dosageInstruction"]] == ["LVG", "LVG"]
    imm = judge(read(immunization_draft(site="RG")), [], content(), 40 * 12)
    (target,) = imm.targets
    updated = updated_draft(content(), imm, target)
    assert [c["code"] for c in updated["site"]["coding"]] == ["RD", "16217661000119109"]
    assert updated["status"] == "not-done"
    get_fhir_model_class("Immunization").model_validate(updated)


def test_side_unknown_offers_both_sides_as_alternatives():
    """BU or no site: LVG and RVG, at-most-one, neither marked recommended."""
    (card,) = sign(draft(site=(ACTSITE, "BU"))).cards
    assert card["selectionBehavior"] == "at-most-one"
    codes = [
        s["actions"][0]["resource"]["dosageInstruction"][0]["site"]["coding"][0]["code"]
        for s in card["suggestions"]
    ]
    assert codes == ["LVG", "RVG"]
    assert not any("isRecommended" in s for s in card["suggestions"])


def test_card_names_the_order_and_is_deterministic():
    """Summary names medication and site; the detail names the reference; uuids are stable."""
    first = sign(draft("mr-7"), draft("mr-8", site=None)).cards
    second = sign(draft("mr-7"), draft("mr-8", site=None)).cards
    assert first == second and len(first) == 2
    assert first[0]["summary"].startswith("Diclofenac 75 mg/3 mL, IM left dorsogluteal")
    assert "MedicationRequest/mr-7" in first[0]["detail"]
    assert "MedicationRequest/mr-8" in first[1]["detail"]
    assert first[0]["uuid"] != first[1]["uuid"]
    assert first[0]["source"]["url"] == "https://doi.org/10.1177/0300060514531924"
    assert all(r["display"] for r in first[0]["overrideReasons"])


def test_draft_without_id_gets_a_card_but_no_update():
    """An update needs the draft's id: without one the card stays, the suggestion goes."""
    anonymous = draft()
    del anonymous["id"]
    (card,) = sign(anonymous).cards
    assert "suggestions" not in card and "selectionBehavior" not in card


def test_naive_evaluation_time_is_read_as_utc():
    """A naive ``now`` is UTC, as in the patient-view engine."""
    naive = NOW.replace(tzinfo=None)
    record = (patient("1960-06-13"),)
    assert sign(draft(), record=record, now=naive) == sign(draft(), record=record)


def test_summary_stays_under_140_characters_with_long_names():
    """A very long medication name is shortened, never the advice."""
    long = draft(drug="Extraordinarily long proprietary medication name with many words " * 3)
    (card,) = sign(long).cards
    assert len(card["summary"]) < 140 and "ventrogluteal" in card["summary"]


# --- content checks ---------------------------------------------------------------------------


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text("utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new), "utf-8")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: _edit(
                d / "valuesets.yaml",
                "display: right ventragluteal, status: V-HL7, laterality: right, tag: ventro",
                "display: right ventragluteal, status: V-HL7, laterality: left, tag: ventro",
            ),
            "prevention-target-site needs exactly one left and one right site",
        ),
        (
            lambda d: _edit(
                d / "thresholds.yaml", "value: 18.5\n  unit: kg/m2", "value: 18.5\n  unit: days"
            ),
            "underweight_bmi: unit 'days' is not a bmi unit",
        ),
        (
            lambda d: _edit(
                d / "thresholds.yaml", "value: 18.5\n  unit: kg/m2", "value: 185\n  unit: kg/m2"
            ),
            "underweight_bmi must be a BMI between 10 and 30",
        ),
        (
            lambda d: _edit(d / "templates" / "prevention-summary-info.md", "${target}", "${goal}"),
            "unknown placeholder ${goal}",
        ),
        (
            lambda d: (d / "templates" / "prevention-risk-child.md").unlink(),
            "templates/prevention-risk-child.md: missing",
        ),
        (
            lambda d: _edit(d / "card.yaml", "prevention:\n  source:", "preventing:\n  source:"),
            "card.yaml",
        ),
    ],
    ids=["target sides", "bmi unit", "bmi range", "placeholder", "template", "framing"],
)
def test_prevention_content_problems_are_reported(tmp_cards, edit, message):
    """check-content covers the prevention value sets, thresholds, templates and framing."""
    with pytest.raises(ContentError) as error:
        tmp_cards(edit)
    assert any(message in problem for problem in error.value.problems), error.value.problems


def test_evaluation_time_moves_the_age_and_bmi_windows():
    """The same record 400 days later: a year older, and the BMI is no longer recent."""
    record = (patient("2010-06-13"), bmi(17.0, "2025-05-01"))
    later = NOW + timedelta(days=400)
    now_risks = risk_factors(facts_of(*record), content(), NOW)
    later_risks = risk_factors(facts_of(*record, now=later), content(), later)
    assert now_risks.bmi is not None and later_risks.bmi is None
    assert now_risks.age == 15 and later_risks.age == 16


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                ["coding", "system", "code", "text", "value", "unit", "reference", "id"]
            ),
            children,
            max_size=3,
        )
    ),
    max_leaves=12,
)
FIELDS = [
    "status",
    "id",
    "subject",
    "medicationCodeableConcept",
    "medicationReference",
    "contained",
    "dosageInstruction",
]
DOSAGE_FIELDS = ["route", "site", "text", "doseAndRate"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=4),
    st.dictionaries(st.sampled_from(DOSAGE_FIELDS), JSON, max_size=4),
    st.sampled_from(["MedicationRequest", "Immunization"]),
)
def test_any_draft_shape_is_survived(fields, dosage_fields, rtype):
    """Malformed drafts never raise: a card, or none, and any card is schema-valid JSON."""
    resource = draft()
    resource["resourceType"] = rtype
    resource["dosageInstruction"][0].update(dosage_fields)
    resource.update(fields)
    if rtype == "Immunization":
        resource.update({k: v for k, v in dosage_fields.items() if k in ("route", "site")})
    ctx = context(resource, selections=[f"{rtype}/{resource.get('id')}"])
    for mode in ("order-select", "order-sign"):
        evaluation = evaluate_prevention(mode, ctx, [], content(), NOW, "h")
        for card in evaluation.cards:
            assert schemas.problems("hook-response", {"cards": [card]}) == []


@settings(max_examples=60, deadline=None)
@given(st.permutations(range(7)))
def test_cards_do_not_depend_on_the_order_of_the_record(order):
    """The same record in any order gives the same cards (sorted labels, tie-broken choices)."""
    record = [
        patient("1950-01-01"),
        condition("M21.372"),
        im_procedure("LG"),
        condition("Z79.01", onset="2020-01-01"),
        condition("D68.32", onset="2025-06-01"),
        bmi(17.0, "2025-05-01"),
        bmi(16.0, "2025-05-01"),
    ]
    shuffled = tuple(record[i] for i in order)
    drafts = (draft("a"), draft("b", site=None))
    assert sign(*drafts, record=shuffled) == sign(*drafts, record=tuple(record))

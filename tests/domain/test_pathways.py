"""Unit tests of the red-flag pathways R7a-R7f and the R7c floor (clinical.md §4.1, §4.6)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from cds_service.domain.facts import GradeFact, extract_facts
from cds_service.domain.pathways import run_pathways
from cds_service.domain.pathways.progression import progressive_weakness

from .factories import (
    ACTSITE,
    FULL,
    NOW,
    PID,
    SNOMED,
    card_of,
    concept,
    condition,
    content,
    im_procedure,
    med_admin,
    mrc,
    page_text,
    patient,
    suggestion_keys,
)

RX = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"


def flags(*resources: Any, now: datetime = NOW) -> set[str]:
    facts = extract_facts(list(resources), content(), PID, now)
    return {f.kind for f in run_pathways(facts, now, content()).flags}


def floor_of(*resources: Any, now: datetime = NOW):
    facts = extract_facts(list(resources), content(), PID, now)
    return run_pathways(facts, now, content()).floor


def statement(status: str = "active", **extra: Any) -> dict:
    r = {
        "resourceType": "MedicationStatement",
        "id": f"ms-{status}",
        "status": status,
        "medicationCodeableConcept": {"text": "Warfarin 5 mg tablet"},
        "subject": {"reference": f"Patient/{PID}"},
    }
    r.update(extra)
    return r


def request(status: str = "active", rx: str | None = None, text: str = "Apixaban 5 mg", **extra):
    med: dict[str, Any] = {"text": text}
    if rx:
        med["coding"] = [{"system": RX, "code": rx}]
    r = {
        "resourceType": "MedicationRequest",
        "id": f"mr-{status}-{rx}",
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": med,
        "subject": {"reference": f"Patient/{PID}"},
        "authoredOn": "2025-01-10",
    }
    r.update(extra)
    return r


def inr(value: float, when: str = "2025-06-11T07:00:00Z", status: str = "final") -> dict:
    return {
        "resourceType": "Observation",
        "id": f"inr-{value}-{status}",
        "status": status,
        "code": concept(LOINC, "6301-6"),
        "subject": {"reference": f"Patient/{PID}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": "{INR}"},
    }


DELAYED_NOW = datetime(2025, 6, 20, 10, tzinfo=UTC)


def delayed(*extra: Any) -> dict | None:
    """A left foot drop 8 days after a left gluteal injection (info without anticoagulation)."""
    return card_of(condition(onset="2025-06-19"), im_procedure(), *extra, now=DELAYED_NOW)


# --- R7a --------------------------------------------------------------------------------------


def test_afp_stool_sentence_only_within_fourteen_days():
    """R7a: two stools while <= 14 d since onset; later 'ask the surveillance officer'."""
    early = card_of(patient("2018-01-01"), condition(onset="2025-06-01"))
    late = card_of(patient("2018-01-01"), condition(onset="2025-05-29"))
    assert "Two stool specimens" in early["detail"]
    assert "ask the surveillance officer" in late["detail"]


def test_afp_needs_onset_within_sixty_days():
    """R7a: weakness first seen more than 60 d before the evaluation is not acute."""
    assert "afp" in flags(patient("2018-01-01"), condition(onset="2025-04-15"))
    assert "afp" not in flags(patient("2018-01-01"), condition(onset="2025-04-13"))


def test_afp_from_another_lower_limb_muscle_grade():
    """R7a: an MRC <= 3 of any lower-limb muscle (R1b movement) is weakness evidence."""
    quad = mrc(2, "2025-06-12T09:00:00Z")
    quad["code"] = concept("http://example.org/fhir/CodeSystem/footdrop-cds-local", "x")
    facts = extract_facts([patient("2018-01-01")], content(), PID, NOW)
    facts.muscle_grades.append(
        GradeFact("Observation/q", NOW, 2, "left", movement="knee-extension")
    )
    assert {f.kind for f in run_pathways(facts, NOW, content()).flags} == {"afp"}


def test_paralysis_needs_a_lower_limb_site():
    """R7a: 44695005 Paralysis counts only with a lower-limb bodySite or leg/foot in its text."""
    bare = condition("44695005", SNOMED, onset="2025-06-11")
    leg = condition("44695005", SNOMED, onset="2025-06-11", text="Paralysis of left leg")
    assert flags(patient("2018-01-01"), bare) == set()
    assert flags(patient("2018-01-01"), leg) == {"afp"}


def test_afp_any_age_for_coded_polio_but_not_nonparalytic():
    """R7a: A80.9 / G04.82 are reportable at any age; A80.4 nonparalytic polio is not weakness."""
    assert flags(patient("1960-01-01"), condition("A80.9", onset="2025-06-10")) == {"afp-any-age"}
    assert flags(patient("1960-01-01"), condition("A80.4", onset="2025-06-10")) == set()


# --- R7b --------------------------------------------------------------------------------------


def test_snomed_haematoma_needs_a_site_and_site_less_m79_81_needs_a_nearby_injection():
    """R7b: SNOMED 385494008 without any site does not flag; M79.81 without a site flags only
    after a gluteal or thigh IM injection in the 14 days before its onset."""
    fd = condition(onset="2025-06-11T14:00:00Z")
    assert flags(fd, condition("385494008", SNOMED, onset="2025-06-11")) == set()
    site_less = condition("M79.81", onset="2025-06-11")
    assert flags(fd, site_less) == set()
    assert flags(fd, site_less, im_procedure(site="RVL")) == {"haematoma"}
    assert flags(fd, site_less, im_procedure(site="LD")) == set()


def test_haematoma_site_from_words_or_postcoordinated_code():
    """R7b: a site word in the text, or a post-coordinated <site>:272741003=<side> code."""
    fd = condition(onset="2025-06-11T14:00:00Z")
    text = condition("385494008", SNOMED, onset="2025-06-11", text="Hematoma of right thigh")
    post = condition(
        "385494008",
        SNOMED,
        onset="2025-06-11",
        bodySite=[{"coding": [{"system": SNOMED, "code": "46862004:272741003=24028007"}]}],
    )
    assert flags(fd, text) == {"haematoma"}
    card = card_of(fd, post)
    assert card["indicator"] == "critical"
    assert "check the side" in page_text(fd, post)  # R9a: on the app page


# --- R7c --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        request(rx="1364430", text="5 mg tablet"),
        request(status="on-hold", text="Eliquis 5 mg"),
        statement(),
        statement("intended"),
        statement("completed", effectivePeriod={"start": "2025-05-01", "end": "2025-06-30"}),
        inr(2.0),
        med_admin(
            route=(SNOMED, "34206005"), site=None, drug="Enoxaparin 40 mg", when="2025-06-05"
        ),
        condition("D68.32", onset="2019-01-01"),
    ],
    ids=[
        "request-rxnorm",
        "request-on-hold-brand",
        "statement-active",
        "statement-intended",
        "statement-completed-overlapping",
        "inr-2.0",
        "administration-7d-before",
        "d68.32-old",
    ],
)
def test_anticoagulation_sources_lift_delayed_onset_to_warning(source):
    """R7c: each source of anticoagulation in the window makes the card at least warning."""
    card = delayed(source)
    assert card["indicator"] == "warning"
    assert card["detail"].startswith("Anticoagulated (")
    assert suggestion_keys(card) == FULL


@pytest.mark.parametrize(
    "source",
    [
        request(status="completed", rx="1364430"),
        request(status="cancelled", rx="1364430"),
        request(rx="1362060", text="Heparin 100 units/mL"),
        request(text="Heparin lock flush 10 units/mL"),
        statement("not-taken"),
        statement("completed", effectivePeriod={"start": "2024-01-01", "end": "2024-03-01"}),
        inr(1.9),
        inr(3.1, status="preliminary"),
        condition("Z79.02", onset="2019-01-01"),
        request(text="Clopidogrel 75 mg"),
    ],
    ids=[
        "request-completed-no-period",
        "request-cancelled",
        "flush-product",
        "flush-text",
        "statement-not-taken",
        "statement-completed-long-ago",
        "inr-1.9",
        "inr-preliminary",
        "z79.02-antiplatelet",
        "clopidogrel",
    ],
)
def test_non_anticoagulation_leaves_delayed_onset_at_info(source):
    """R7c: statuses, flushes, antiplatelets and low INR are not anticoagulation."""
    assert delayed(source)["indicator"] == "info"


def test_anticoagulated_immediate_card_says_avoid_nsaids_and_names_the_nsaid():
    """R7c at any delay, immediate included; an injected NSAID is named."""
    card = card_of(condition(), med_admin(), statement())
    assert card["indicator"] == "warning"
    assert "Avoid NSAIDs. The injected drug was an NSAID." in card["detail"]


def test_anticoagulated_with_competing_cause_stays_warning_and_orders_sentences():
    """R7c floor beats the R6 cap; the R7c sentence comes before the competing-cause lead."""
    radiculopathy = condition("M54.16", onset="2025-05-01")
    plain = card_of(condition(), radiculopathy, im_procedure())
    floored = card_of(condition(), radiculopathy, im_procedure(), statement())
    assert plain["indicator"] == "info"
    assert floored["indicator"] == "warning"
    detail = floored["detail"]
    assert detail.index("Anticoagulated (") < detail.index("Lead with EMG/NCS")


def test_anticoagulated_opposite_side_injection_fires_with_routine_plan():
    """R7c: any side, any site - the floor creates the card the attribution rules would not."""
    assert card_of(condition(), im_procedure(site="RG")) is None
    card = card_of(condition(), im_procedure(site="RG"), statement())
    assert card["indicator"] == "warning" and suggestion_keys(card) == FULL


def test_red_flag_card_of_anticoagulated_patient_keeps_the_r7c_sentence_after_the_action():
    """§4.6.3: the red-flag action first, then the R7c sentence, on the critical card."""
    card = card_of(condition("G57.33"), im_procedure(), statement())
    detail = card["detail"]
    assert card["indicator"] == "critical"
    assert detail.index("Same-day neurosurgical evaluation") < detail.index("Anticoagulated (")


def test_floor_ignores_injections_beyond_ninety_days():
    """R7c: the injection must lie 0-90 d before the trigger's latest onset."""
    old = im_procedure(when="2025-02-01T08:00:00Z")
    assert floor_of(condition(), old, statement()) is None


def rx_only(code: str) -> dict:
    """A medicationCodeableConcept carrying one RxNorm coding: no display, no text."""
    return {"coding": [{"system": RX, "code": code}]}


@pytest.mark.parametrize(
    ("source", "code"),
    [
        ({**request(rx="1364445"), "medicationCodeableConcept": rx_only("1364445")}, "1364445"),
        (statement(medicationCodeableConcept=rx_only("855332")), "855332"),
        (
            med_admin(
                route=(SNOMED, "34206005"),
                site=None,
                when="2025-06-05",
                medicationCodeableConcept=rx_only("854235"),
            ),
            "854235",
        ),
    ],
    ids=["request-apixaban-5mg-scd", "statement-warfarin-5mg-scd", "administration-enoxaparin-scd"],
)
def test_vsac_scd_code_alone_identifies_the_anticoagulant(source, code):
    """R7c drug identification (2): an SCD of the VSAC anticoagulant expansions, coded alone
    (no display, no text), lifts a delayed onset to warning and is named by its VSAC display."""
    card = delayed(source)
    assert card["indicator"] == "warning"
    assert card["detail"].startswith("Anticoagulated (")
    assert f"(RxNorm {code})" in card["detail"]
    assert suggestion_keys(card) == FULL


def test_outpatient_apixaban_scd_request_gives_the_floor():
    """R7c: an outpatient MedicationRequest coded only as apixaban 5 MG Oral Tablet (1364445)."""
    mr = {**request(rx="1364445"), "medicationCodeableConcept": rx_only("1364445")}
    fd, im = condition(onset="2025-06-19"), im_procedure()
    assert floor_of(fd, im, now=DELAYED_NOW) is None
    assert floor_of(fd, im, mr, now=DELAYED_NOW) is not None
    assert "apixaban 5 MG Oral Tablet (RxNorm 1364445)" in delayed(mr)["detail"]


@pytest.mark.parametrize(
    "code",
    ["309362", "213169", "855812", "313406", "242461", "105899"],
    ids=[
        "clopidogrel-75-scd",
        "plavix-sbd",
        "prasugrel-10-scd",
        "ticlopidine",
        "cilostazol",
        "naprosyn",
    ],
)
def test_vsac_antiplatelet_and_nsaid_members_are_not_anticoagulation(code):
    """R7c: the antiplatelet / NSAID members of the mixed VSAC set are not in the value set."""
    mr = {**request(rx=code), "medicationCodeableConcept": rx_only(code)}
    assert floor_of(condition(onset="2025-06-19"), im_procedure(), mr, now=DELAYED_NOW) is None
    assert delayed(mr)["indicator"] == "info"


# --- R7d --------------------------------------------------------------------------------------


def test_bilateral_from_finding_and_grade_without_conditions():
    """R7d: a left finding and a right MRC grade within 14 days are bilateral."""
    from .factories import finding

    assert flags(finding(side="left"), mrc(2, "2025-06-12T10:00:00Z", side="right")) == {
        "bilateral"
    }


def test_bilateral_boundary_fourteen_days():
    """R7d: first evidence 14 d apart flags; more than 14 d does not."""
    left = condition(onset="2025-05-30T10:00:00Z")
    assert flags(left, condition("M21.371", onset="2025-06-13T10:00:00Z")) == {"bilateral"}
    assert flags(left, condition("M21.371", onset="2025-06-13T10:00:01Z")) == set()


def test_contralateral_mrc_4_is_named_not_a_flag():
    """R7d: a contralateral dorsiflexion 4/5 is named ('examine for cauda equina'), no flag."""
    records = (condition(), im_procedure(), mrc(4, "2025-06-12T10:00:00Z", side="right"))
    assert card_of(*records)["indicator"] == "warning"
    assert "examine for cauda equina" in page_text(*records)  # R9a: on the app page


def test_antiplatelet_is_named_but_not_anticoagulation():
    """R7c: Z79.02 is named as a bleeding-risk factor and does not lift a delayed onset."""
    card = delayed(condition("Z79.02", onset="2019-01-01"))
    assert card["indicator"] == "info"
    page = page_text(
        condition(onset="2025-06-19"),
        im_procedure(),
        condition("Z79.02", onset="2019-01-01"),
        now=DELAYED_NOW,
    )
    assert "not anticoagulation" in page  # R9a: on the app page


# --- R7e --------------------------------------------------------------------------------------


def test_cauda_symptom_before_the_episode_is_not_new():
    """R7e: a bladder symptom dated before the earliest back/leg symptom is not new."""
    fd = condition(onset="2025-06-10T10:00:00Z")
    assert flags(fd, condition("R32", onset="2025-06-09")) == set()
    assert flags(fd, condition("R32", onset="2025-06-10")) == {"cauda-equina"}  # same day


def test_cauda_needs_a_motor_deficit_and_saddle_needs_a_saddle_site():
    """R7e: no trigger, no flag; R20.0 counts only with a saddle site."""
    assert flags(condition("R32", onset="2025-06-12")) == set()
    fd = condition(onset="2025-06-10T10:00:00Z")
    assert flags(fd, condition("R20.0", onset="2025-06-12")) == set()
    both_buttocks = [
        concept(SNOMED, "723979003"),
        concept(SNOMED, "723980000"),
    ]
    assert flags(fd, condition("R20.0", onset="2025-06-12", bodySite=both_buttocks)) == {
        "cauda-equina"
    }


def test_retention_with_earlier_bph_is_chronic():
    """R7e: urinary retention with BPH/LUTS charted before the back/leg symptoms: no flag."""
    fd = condition(onset="2025-06-10T10:00:00Z")
    bph = condition("N40.1", onset="2024-01-01")
    assert flags(fd, condition("R33.9", onset="2025-06-12"), bph) == set()


# --- R7f --------------------------------------------------------------------------------------


def test_progression_to_zero_on_anticoagulation():
    """R7f: anticoagulated, a progression to 0/5 flags with surgical review and neurology."""
    card = card_of(
        condition(),
        im_procedure(),
        statement(),
        mrc(1, "2025-06-11T15:00:00Z"),
        mrc(0, "2025-06-12T15:00:00Z"),
    )
    codes = sorted(
        s["actions"][0]["resource"]["code"]["coding"][0]["code"] for s in card["suggestions"]
    )
    assert card["indicator"] == "critical" and codes == ["308474002", "308481009"]
    for suggestion in card["suggestions"]:  # reasonReference targets Condition / Observation only
        refs = [r["reference"] for r in suggestion["actions"][0]["resource"]["reasonReference"]]
        assert refs and all(r.startswith(("Condition/", "Observation/")) for r in refs)


def test_progression_in_a_second_muscle_group_on_anticoagulation():
    """R7f: anticoagulated, a second muscle group newly weak on the same side flags."""
    resources = [condition(), im_procedure(), statement()]
    facts = extract_facts(resources, content(), PID, NOW)
    facts.muscle_grades += [
        GradeFact(
            "Observation/e1", datetime(2025, 6, 11, 15, tzinfo=UTC), 5, "left", "ankle-eversion"
        ),
        GradeFact(
            "Observation/e2", datetime(2025, 6, 12, 15, tzinfo=UTC), 3, "left", "ankle-eversion"
        ),
    ]
    trigger = run_pathways(facts, NOW, content()).triggers
    flag = progressive_weakness(facts, trigger, NOW, content().thresholds)
    assert flag is not None and "anticoagulated" in flag.extra
    assert flag.orders == ("URGENT_ORTHOPAEDIC", "URGENT_NEUROLOGY")


def test_one_grade_fall_over_more_than_seven_days_is_not_progression():
    """R7f: the anticoagulated one-grade fall must happen within 7 days."""
    resources = [
        condition(onset="2025-06-01T10:00:00Z"),
        im_procedure(when="2025-06-01T08:00:00Z"),
        statement(),
        mrc(3, "2025-06-02T10:00:00Z"),
        mrc(2, "2025-06-10T10:00:00Z"),
    ]
    assert "progression" not in flags(*resources)
    assert ACTSITE  # factories' site system, used by im_procedure

"""R8c and §4.6.6 on the prevention services: vaccines, free-text sites, past neuropathies."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_service.domain.content import ContentError
from cds_service.domain.prevention import evaluate_prevention, judge, read_draft
from cds_service.domain.prevention_history import past_injection_neuropathies
from cds_service.domain.prevention_sites import age_months, text_site, vaccine_band, vaccine_kind

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
)

CVX = "http://hl7.org/fhir/sid/cvx"
IMMUNO = "Buttock injection reduces immunogenicity"
GLUTEAL_CODES = ("LG", "RG", "BU", "LVG", "RVG")


def order(
    *,
    drug: str = "Diclofenac 75 mg/3 mL solution for injection",
    cvx: str | None = None,
    site: dict[str, Any] | None = None,
    text: str | None = None,
    note: str | None = None,
    rid: str = "mr1",
) -> dict[str, Any]:
    """A draft IM MedicationRequest; ``site`` is the whole site element (coded or text)."""
    medication: dict[str, Any] = {"text": drug}
    if cvx:
        medication["coding"] = [{"system": CVX, "code": cvx}]
    dosage: dict[str, Any] = {"route": concept(ROUTE, "IM")}
    if site is not None:
        dosage["site"] = site
    if text:
        dosage["text"] = text
    r: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": medication,
        "subject": {"reference": f"Patient/{PID}"},
        "dosageInstruction": [dosage],
    }
    if note:
        r["note"] = [{"text": note}]
    return r


def vaccination(cvx: str = "115", text: str = "Tdap", site: str | None = "LG") -> dict[str, Any]:
    r: dict[str, Any] = {
        "resourceType": "Immunization",
        "id": "imm1",
        "status": "not-done",
        "vaccineCode": {"coding": [{"system": CVX, "code": cvx}], "text": text},
        "patient": {"reference": f"Patient/{PID}"},
        "occurrenceDateTime": "2025-06-13T10:00:00Z",
        "route": concept(ROUTE, "IM"),
    }
    if site:
        r["site"] = concept(ACTSITE, site)
    return r


def sign(*drafts: dict[str, Any], record: tuple[dict[str, Any], ...] = ()) -> list[dict[str, Any]]:
    ctx = {
        "patientId": PID,
        "draftOrders": {"resourceType": "Bundle", "type": "collection",
                        "entry": [{"resource": d} for d in drafts]},
    }  # fmt: skip
    return evaluate_prevention("order-sign", ctx, list(record), content(), NOW, "h-r8c").cards


def update_codes(card: dict[str, Any]) -> list[str]:
    out = []
    for suggestion in card.get("suggestions", []):
        resource = suggestion["actions"][0]["resource"]
        site = resource.get("site") or resource["dosageInstruction"][0]["site"]
        out.append(site["coding"][0]["code"])
    return out


def born(months: int) -> dict[str, Any]:
    """A patient exactly ``months`` old at NOW (born on the same day of the month)."""
    year, month = NOW.year, NOW.month - months
    while month < 1:
        month += 12
        year -= 1
    return patient(f"{year:04d}-{month:02d}-{NOW.day:02d}")


# --- free-text sites --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("R buttock", ("gluteal", "right")),
        ("LUOQ", ("gluteal", "left")),
        ("ruoq", ("gluteal", "right")),
        ("upper outer quadrant", ("gluteal", None)),
        ("dorsogluteal, Lt", ("gluteal", "left")),
        ("rt glute", ("gluteal", "right")),
        ("left VG", ("ventrogluteal", "left")),
        ("RVG", ("ventrogluteal", "right")),
        ("Ventrogluteal right", ("ventrogluteal", "right")),
        ("deltoid", ("upper_limb", None)),
        ("left arm", ("upper_limb", "left")),
        ("R thigh", ("thigh", "right")),
        ("LVL", ("thigh", "left")),
        ("vastus lateralis", ("thigh", None)),
        ("left or right buttock", ("gluteal", None)),
        ("1 g once", (None, None)),
        ("warm pharmacy stock", (None, None)),
    ],
)
def test_free_text_site_class_and_side(text, expected):
    """Site words give the class (buttock words = dorsogluteal), L/LT/left R/RT/right the side."""
    site_class, side, _ = text_site([text])
    assert (site_class, side) == expected


@pytest.mark.parametrize(
    ("draft", "codes"),
    [
        (order(site={"text": "R buttock"}), ["RVG"]),
        (order(site={"text": "Lt UOQ"}), ["LVG"]),
        (order(text="2.4 MU deep IM to LUOQ"), ["LVG"]),
        (order(note="give in the RUOQ"), ["RVG"]),
        (order(site={"text": "buttock"}), ["LVG", "RVG"]),
        (order(site={"coding": [{"system": "http://example.org/s", "code": "x",
                                 "display": "Right gluteal region"}]}), ["RVG"]),
    ],
    ids=["R buttock", "Lt UOQ", "LUOQ in dosage text", "RUOQ in note", "no side", "display"],
)  # fmt: skip
def test_free_text_gluteal_site_keeps_its_side(draft, codes):
    """The update keeps the side written in the text; only a text without side gets two choices."""
    (card,) = sign(draft)
    assert card["indicator"] == "info" and update_codes(card) == codes


@pytest.mark.parametrize("text", ["L ventrogluteal", "right deltoid", "R thigh", "VL"])
def test_free_text_safe_sites_give_no_card(text):
    """A text naming the ventrogluteal site, the deltoid/arm or the thigh is safe (no card)."""
    assert sign(order(site={"text": text})) == []


def test_a_recognised_code_wins_over_the_text():
    """A coded LG site with the text 'deltoid' is still judged by its code."""
    coded = {"coding": [{"system": ACTSITE, "code": "LG"}], "text": "deltoid"}
    (card,) = sign(order(site=coded))
    assert update_codes(card) == ["LVG"]


# --- vaccine recognition ----------------------------------------------------------------------


def kind(drug: str = "", cvx: str | None = None, *, immunization: bool = False):
    concept_: dict[str, Any] = {"text": drug}
    if cvx:
        concept_["coding"] = [{"system": CVX, "code": cvx}]
    return vaccine_kind(content(), [concept_], (), immunization=immunization)


def test_vaccine_recognition_by_cvx_words_and_brands():
    """CVX coding, 'vaccin'/'toxoid' or a brand make a vaccine; an Immunization always is one."""
    assert kind("Hep B", "43").vaccine and kind("Hep B", "43").hepb
    assert kind("Tetanus toxoid adsorbed").vaccine
    assert kind("Influenza VACCINE 0.5 mL").vaccine
    assert kind("RabAvert 1 mL").vaccine and kind("RabAvert 1 mL").rabies
    assert kind("Heplisav-B 20 mcg").hepb
    assert kind("Shingrix 50 mcg/0.5 mL").vaccine and not kind("Shingrix").hepb
    assert kind("Anything", immunization=True).vaccine
    assert not kind("Ceftriaxone 1 g").vaccine


@pytest.mark.parametrize("cvx", ["30", "34", "86"])
def test_immune_globulins_are_not_vaccines(cvx):
    """HBIG, RIG and IG (CVX 30, 34, 86) are never vaccines, even as an Immunization."""
    assert not kind("Immune globulin", cvx).vaccine
    assert not kind("x", cvx, immunization=True).vaccine
    assert kind("x", cvx).immune_globulin


def test_immune_globulin_by_name_and_its_card():
    """'Hepatitis B immune globulin' is no vaccine: the ordinary drug card and LVG."""
    assert not kind("Hepatitis B immune globulin (human)").vaccine
    (card,) = sign(order(drug="HyperRAB 300 IU/mL", site=concept(ACTSITE, "LG")))
    assert card["indicator"] == "info" and update_codes(card) == ["LVG"]
    assert IMMUNO not in card["detail"]


def test_hepb_and_rabies_cvx_lists_leading_zeros_and_unverified_codes():
    """CVX 08 = 8; rabies 18/40/90; UNVERIFIED 189/175 act only through names."""
    assert kind("x", "08").hepb and kind("x", "8").hepb
    assert all(kind("x", c).rabies for c in ("18", "40", "90"))
    assert kind("x", "189").vaccine and not kind("x", "189").hepb
    assert not kind("x", "175").rabies
    assert kind("Hepatitis B vaccine", "189").hepb


# --- vaccine site by age ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("months", "band"),
    [(0, "infant"), (11, "infant"), (12, "toddler"), (24, "toddler"), (35, "toddler"),
     (36, "older"), (500, "older"), (None, "unknown")],
)  # fmt: skip
def test_age_bands(months, band):
    """< 12 months infant, 12-35 months toddler (24-35 too, §4.6.5), >= 3 years deltoid."""
    assert vaccine_band(content(), months) == band


def test_age_in_completed_months():
    """Completed months: the day of the month counts."""
    birth = datetime(2023, 6, 14, tzinfo=NOW.tzinfo)
    assert age_months(birth, NOW) == 23
    assert age_months(birth - timedelta(days=1), NOW) == 24
    assert age_months(None, NOW) is None


@pytest.mark.parametrize(
    ("months", "site", "codes"),
    [
        (2, "LG", ["LVL"]),
        (11, "RVG", ["RVL"]),
        (12, "BU", ["LVL", "RVL"]),
        (30, "RG", ["RVL"]),
        (36, "LG", ["LD"]),
        (480, "RVG", ["RD"]),
        (None, "LG", ["LD", "LVL"]),
        (None, "BU", []),
    ],
)
def test_vaccine_in_the_buttock_is_a_warning_moved_by_age_same_side(months, site, codes):
    """Thigh under 3 years, deltoid from 3; age unknown: deltoid or thigh; same side."""
    record = (born(months),) if months is not None else ()
    (card,) = sign(vaccination(site=site), record=record)
    assert card["indicator"] == "warning" and update_codes(card) == codes
    for suggestion in card.get("suggestions", []):
        get_fhir_model_class("Immunization").model_validate(suggestion["actions"][0]["resource"])


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from((*GLUTEAL_CODES, None)),
    st.one_of(st.none(), st.integers(0, 960)),
    st.sampled_from(["115", "43", "18", "141"]),
    st.booleans(),
)
def test_a_vaccine_is_never_moved_to_the_buttock(site, months, cvx, neuropathy):
    """Whatever the site, age, vaccine or neuropathy, no update writes a gluteal site."""
    record: tuple[dict[str, Any], ...] = (born(months),) if months is not None else ()
    if neuropathy:
        record += (condition("M21.372"), im_procedure("LG"))
    for card in sign(vaccination(cvx=cvx, site=site), record=record):
        assert not set(update_codes(card)) & {"LG", "RG", "BU", "LVG", "RVG"}
        if site is not None:
            assert card["indicator"] == "warning"


def test_immunogenicity_sentence_only_for_hepb_and_rabies_in_the_buttock():
    """HepB/rabies in a gluteal site get the sentence; Tdap, or HepB without a site, do not."""
    (hepb,) = sign(vaccination("43", "Hep B adult"), record=(born(480),))
    (rabies,) = sign(order(drug="Imovax Rabies", site=concept(ACTSITE, "RG")))
    (tdap,) = sign(vaccination("115"), record=(born(480),))
    (no_site,) = sign(vaccination("43", "Hep B adult", site=None), record=(born(480),))
    assert IMMUNO in hepb["detail"] and IMMUNO in rabies["detail"]
    assert IMMUNO not in tdap["detail"] and IMMUNO not in no_site["detail"]
    assert no_site["indicator"] == "info" and update_codes(no_site) == ["LD", "RD"]


@pytest.mark.parametrize("site", [concept(ACTSITE, "RG"), {"text": "R upper outer quadrant x"}])
def test_vaccine_summary_stays_under_140_characters(site):
    """A long vaccine name and a long site text shorten the name, never the advice."""
    long = order(drug="Diphtheria tetanus pertussis hepatitis B polio conjugate vaccine " * 2,
                 site=site)  # fmt: skip
    (card,) = sign(long, record=(born(20),))
    assert len(card["summary"]) < 140 and card["summary"].endswith("never the buttock")


def test_toddler_card_names_the_deltoid_as_the_alternative_without_a_second_suggestion():
    """12-35 months: one thigh update; the deltoid is text only (§4.6.10)."""
    (card,) = sign(vaccination(site="LG"), record=(born(30),))
    assert update_codes(card) == ["LVL"]
    assert "deltoid may be used instead" in card["detail"]


def test_vaccine_thigh_moves_off_a_leg_with_a_documented_neuropathy():
    """Infant, left injection neuropathy: a left-buttock vaccine goes to the right thigh."""
    record = (born(8), condition("M21.372"), im_procedure("LG"))
    (card,) = sign(vaccination(site="LG"), record=record)
    assert card["indicator"] == "warning" and update_codes(card) == ["RVL"]
    (adult,) = sign(vaccination(site="LG"), record=(born(480), *record[1:]))
    assert update_codes(adult) == ["LD"]


def test_judge_needs_the_content_for_a_vaccine():
    """Without the content there are no target sites for a vaccine: refused, never guessed."""
    with pytest.raises(ValueError):
        judge(read_draft(vaccination(), content(), PID), [])


# --- past injection neuropathies (§4.6.6) -----------------------------------------------------


def past(*resources: dict[str, Any]):
    return past_injection_neuropathies(resources, content(), PID, NOW)


def test_sequela_code_years_after_a_left_dorsogluteal_injection_is_a_neuropathy():
    """S74.02XS (onset the day after an LG injection in 2016) counts, nine years later."""
    (found,) = past(
        condition("S74.02XS", onset="2016-03-09", recorded="2017-01-12"),
        med_admin(site="LG", when="2016-03-08T18:30:00-05:00"),
    )
    assert found.side == "left" and found.days == 1 and found.current
    record = (
        condition("S74.02XS", onset="2016-03-09"),
        med_admin(when="2016-03-08T18:30:00-05:00"),
    )
    (card,) = sign(order(site=concept(ACTSITE, "LG")), record=record)
    assert card["indicator"] == "warning" and update_codes(card) == ["RVG"]


@pytest.mark.parametrize(
    ("onset", "counts"),
    [
        ("2016-03-08", True),  # date-only on the injection's local day (R0a)
        ("2016-03-08T20:00:00-05:00", True),
        ("2016-03-08T10:00:00-05:00", False),  # before the injection
        ("2016-03-22", True),  # 14 days
        ("2016-03-23", False),  # 15 days
        ("2016-03", True),  # month precision overlapping the window
        ("2016", False),  # a year cannot be placed after the injection
        ("2016-03-07", False),
    ],
)
def test_onset_window_is_0_to_14_calendar_days_in_local_dates(onset, counts):
    """Onset 0-14 days after the injection, local dates as written (18:30 -05:00 = 23:30 Z)."""
    found = past(condition("M21.372", onset=onset), med_admin(when="2016-03-08T18:30:00-05:00"))
    assert bool(found) is counts


def test_a_datetime_without_offset_is_compared_by_its_local_date():
    """An onset written without an offset (common in exports) never breaks the comparison."""
    inj = med_admin(when="2016-03-08T18:30:00-05:00")
    assert past(condition("M21.372", onset="2016-03-09T07:00:00"), inj)
    assert not past(condition("M21.372", onset="2016-03-30T07:00:00"), inj)


def test_sides_status_site_and_route_of_a_past_event():
    """Other side, refuted, deltoid, subcutaneous: none; resolved or unlateralised: counted."""
    inj = med_admin(site="LG", when="2019-05-05T09:00:00Z")
    assert not past(condition("M21.371", onset="2019-05-06"), inj)
    assert not past(condition("M21.372", onset="2019-05-06", verification="refuted"), inj)
    assert not past(
        condition("M21.372", onset="2019-05-06"), med_admin(site="LD", when="2019-05-05")
    )
    sc = med_admin(route=(ROUTE, "SQ"), site="LG", when="2019-05-05")
    assert not past(condition("M21.372", onset="2019-05-06"), sc)
    resolved = condition("M21.372", onset="2019-05-06", clinical="resolved",
                         abatementDateTime="2019-12-01")  # fmt: skip
    (found,) = past(resolved, inj)
    assert not found.current and found.abated == "2019-12-01"
    (unlateralised,) = past(condition("M21.379", onset="2019-05-06"), inj)
    assert unlateralised.side == "left"


def test_text_site_and_snomed_bodysite_of_a_past_event():
    """A past injection with site text 'L buttock' and a SNOMED foot drop on the left foot."""
    inj = med_admin(site=None, when="2021-04-05T21:15:00+02:00")
    inj["dosage"]["site"] = {"text": "L buttock"}
    foot_drop = condition("6077001", SNOMED, onset="2021-04-06T08:00:00+02:00",
                          clinical="inactive", body_side="left")  # fmt: skip
    (found,) = past(foot_drop, inj)
    assert found.side == "left" and found.days == 1


def test_a_past_foot_drop_finding_observation_counts_when_present():
    """A foot-drop finding (6077001, present, left foot) 3 days after an LG injection in 2020."""
    inj = med_admin(site="LG", when="2020-02-01T10:00:00Z")
    finding = {
        "resourceType": "Observation",
        "id": "obs-fd",
        "status": "final",
        "code": concept(SNOMED, "6077001"),
        "subject": {"reference": f"Patient/{PID}"},
        "effectiveDateTime": "2020-02-04T09:00:00Z",
        "bodySite": concept(SNOMED, "22335008"),
        "valueCodeableConcept": concept(SNOMED, "52101004"),
    }
    (found,) = past(finding, inj)
    assert found.side == "left" and found.days == 3
    absent = {**finding, "valueCodeableConcept": concept(SNOMED, "2667000")}
    assert not past(absent, inj)


def test_recorded_date_only_bounds_the_onset():
    """No onset[x]: the recordedDate counts only when it lies in the 0-14-day window."""
    inj = im_procedure("RG", when="2020-01-10T08:00:00Z")
    assert past(condition("G57.31", onset=None, recorded="2020-01-12"), inj)
    assert not past(condition("G57.31", onset=None, recorded="2020-03-12"), inj)


def test_cpt_96372_needs_a_gluteal_site_to_count():
    """CPT 96372 is SC or IM: only with a gluteal bodySite is it a (probable) IM injection."""
    cpt = "http://www.ama-assn.org/go/cpt"
    gluteal = im_procedure("RG", when="2019-10-28T16:45:00+01:00", code="96372", system=cpt)
    bare = im_procedure(None, when="2019-10-28T16:45:00+01:00", code="96372", system=cpt)
    assert past(condition("G57.31", onset="2019-11-02"), gluteal)
    assert not past(condition("G57.31", onset="2019-11-02"), bare)


def test_past_event_and_current_finding_give_one_finding_per_trigger():
    """A recent foot drop found by both the engine and the history module is named once."""
    cards = sign(order(site=concept(ACTSITE, "LG")), record=(condition("M21.372"), im_procedure()))
    (card,) = cards
    assert card["detail"].count("Foot drop, left foot") == 1


# --- content ----------------------------------------------------------------------------------


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text("utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new), "utf-8")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: _edit(d / "thresholds.yaml", "value: 12\n  unit: months",
                         "value: 40\n  unit: months"),
         "vaccine_thigh_before must be below vaccine_deltoid_from"),
        (lambda d: _edit(d / "thresholds.yaml", "value: 12\n  unit: months",
                         "value: 12\n  unit: days"),
         "vaccine_thigh_before: unit 'days'"),
        (lambda d: _edit(d / "valuesets.yaml", "  rabies: [rabies, Imovax, RabAvert]\n", ""),
         "vaccine_names.rabies must be a list"),
        (lambda d: _edit(d / "valuesets.yaml", "code: LD, display: left deltoid, status: V-HL7, "
                         "laterality: left, tag: deltoid", "code: LD, display: left deltoid, "
                         "status: V-HL7, laterality: right, tag: deltoid"),
         "exactly one left and one right site (tag deltoid)"),
    ],
    ids=["band order", "band unit", "names", "deltoid sides"],
)  # fmt: skip
def test_r8c_content_problems_are_reported(tmp_cards, edit, message):
    """The age bands, name lists and vaccine target sites are validated at start-up."""
    with pytest.raises(ContentError) as error:
        tmp_cards(edit)
    assert any(message in problem for problem in error.value.problems), error.value.problems

"""Rules R0-R9 through the engine entry point: positive, negative, missing data and odd codings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from .factories import (
    CPT,
    FULL,
    HCPCS,
    HCPCS_HTTP,
    ICD,
    LOCAL,
    NOW,
    ROUTE,
    SNOMED,
    V2_0276,
    card_of,
    concept,
    condition,
    device_request,
    finding,
    im_procedure,
    immunization,
    med_admin,
    mrc,
    page_text,
    patient,
    resource_of,
    service_request,
    suggestion_keys,
)

# --- R0 hygiene -------------------------------------------------------------------------------


def test_classic_case_gives_warning_with_full_plan():
    """Ipsilateral gluteal IM injection and foot drop 5.5 h later: warning, AFO/PT/EMG/follow-up."""
    card = card_of(condition(), im_procedure())
    assert card["indicator"] == "warning"
    assert suggestion_keys(card) == FULL
    assert card["summary"].startswith("Left foot drop 6 h after left gluteal IM injection")


@pytest.mark.parametrize(
    ("clinical", "verification"),
    [
        (None, "entered-in-error"),
        ("active", "refuted"),
        ("resolved", "confirmed"),
        ("inactive", "confirmed"),
        ("remission", "confirmed"),
    ],
)
def test_non_current_or_refuted_trigger_gives_no_card(clinical, verification):
    """Entered-in-error, refuted, resolved, inactive or remission foot drop never triggers (R0)."""
    assert card_of(condition(clinical=clinical, verification=verification), im_procedure()) is None


def test_abatement_makes_a_condition_not_current():
    """An abatement[x] means not current even when clinicalStatus is missing (R0, con-4)."""
    trig = condition(clinical=None, abatementDateTime="2025-06-12")
    assert card_of(trig, im_procedure()) is None


def test_absent_clinical_status_without_abatement_is_current():
    """An encounter diagnosis without clinicalStatus and without abatement counts as current."""
    assert card_of(condition(clinical=None), im_procedure())["indicator"] == "warning"


@pytest.mark.parametrize("status", ["unconfirmed", "provisional", "differential"])
def test_uncertain_verification_caps_trigger_at_info(status):
    """An unconfirmed / provisional / differential foot drop is usable but capped at info (R0)."""
    card = card_of(condition(verification=status), im_procedure())
    assert card["indicator"] == "info"
    assert "not confirmed" in card["detail"]


@pytest.mark.parametrize("status", ["in-progress", "not-done", "entered-in-error", "stopped"])
def test_injection_counts_only_when_completed(status):
    """An injection that is not completed is not an injection (R0)."""
    assert card_of(condition(), im_procedure(status=status)) is None


def test_provisional_code_needs_corroboration():
    """PROVISIONAL 34553007 acts only with "peroneal"/"fibular" in its display or text (R0)."""
    bare = condition("34553007", SNOMED, body_side="left")
    named = condition("34553007", SNOMED, body_side="left", display="Peroneal nerve paralysis")
    assert card_of(bare, im_procedure()) is None
    assert card_of(named, im_procedure())["indicator"] == "warning"


@pytest.mark.parametrize("code", ["46968001", "25604001"])
def test_rejected_and_unverified_codes_never_trigger(code):
    """REJECTED / UNVERIFIED peroneal-palsy codes never act, whatever their display."""
    trig = condition(code, SNOMED, body_side="left", display="Common peroneal nerve palsy")
    assert card_of(trig, im_procedure()) is None


# --- R1 triggers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code", ["M21.372", "M21372", "m21.372", "G57.32", "G57.02", "S74.02XA", "S84.12XA"]
)
def test_left_trigger_families_and_spellings(code):
    """Every left-sided trigger family matches, with or without the dot, any case (R1)."""
    assert card_of(condition(code), im_procedure())["indicator"] == "warning"


@pytest.mark.parametrize("code", ["G57.92", "G57.9", "M21.6X2", "M62.81"])
def test_context_only_and_unrelated_codes_do_not_trigger(code):
    """G57.9x (mononeuropathy, unspecified) and unrelated codes are not triggers (R1)."""
    assert card_of(condition(code), im_procedure()) is None


def test_unknown_system_does_not_trigger():
    """A foot-drop code in the wrong code system is not a trigger."""
    trig = condition("M21.372", "http://example.org/other")
    assert card_of(trig, im_procedure()) is None


def test_snomed_foot_drop_with_body_site():
    """SNOMED 6077001 with a left-foot bodySite is a lateralised trigger."""
    trig = condition("6077001", SNOMED, body_side="left")
    assert card_of(trig, im_procedure())["indicator"] == "warning"


@pytest.mark.parametrize(
    ("value", "fires"),
    [
        ({}, True),
        ({"valueBoolean": True}, True),
        ({"valueBoolean": False}, False),
        ({"valueCodeableConcept": concept(SNOMED, "52101004")}, True),
        ({"valueCodeableConcept": concept(SNOMED, "2667000")}, False),
        ({"valueString": "maybe"}, False),
        ({"dataAbsentReason": concept("http://x", "unknown")}, False),
    ],
)
def test_observation_trigger_is_negation_safe(value, fires):
    """A foot-drop finding triggers only when present; absent or unknown values never do (R1)."""
    card = card_of(finding(**value), im_procedure())
    if not fires:
        assert card is None
        return
    assert card["indicator"] == "info"
    assert "Add foot drop to the problem list" in page_text(finding(**value), im_procedure())
    assert resource_of(card, "AFO")["reasonReference"][0]["reference"].startswith("Observation/")


def test_observation_trigger_needs_final_status():
    """A preliminary foot-drop finding is ignored (R0)."""
    obs = finding()
    obs["status"] = "preliminary"
    assert card_of(obs, im_procedure()) is None


def test_observation_blocked_by_refuted_condition_on_same_side():
    """A refuted foot drop on the same side stops an Observation from triggering (R1)."""
    assert card_of(finding(), condition(verification="refuted"), im_procedure()) is None


def test_observation_not_used_when_a_condition_covers_the_side():
    """With a current Condition on that side, the card is driven by the Condition (warning)."""
    card = card_of(finding(), condition(), im_procedure())
    assert card["indicator"] == "warning"
    assert resource_of(card, "AFO")["reasonReference"][0]["reference"].startswith("Condition/")


def test_mrc_grade_after_injection_is_a_trigger():
    """MRC dorsiflexion <= 3 after the injection, with a side, triggers at info (R1)."""
    card = card_of(mrc(2, "2025-06-12T09:00:00Z"), im_procedure())
    assert card["indicator"] == "info"


def test_mrc_grade_weak_before_injection_is_pre_existing():
    """A same-side weak grade before the injection makes the weakness pre-existing (R1)."""
    grades = [mrc(2, "2025-06-01T09:00:00Z"), mrc(2, "2025-06-12T09:00:00Z")]
    assert card_of(*grades, im_procedure()) is None


@pytest.mark.parametrize(("grade", "side"), [(4, "left"), (2, None)])
def test_mrc_grade_needs_weakness_and_a_side(grade, side):
    """Grade 4, or a grade without a side, is not a trigger (R1)."""
    assert card_of(mrc(grade, "2025-06-12T09:00:00Z", side=side), im_procedure()) is None


# --- R2 IM evidence ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "route", [(SNOMED, "78421000"), (ROUTE, "IM"), (ROUTE, "IMD"), (ROUTE, "IMZ")]
)
def test_definite_im_routes(route):
    """SNOMED 78421000 and v3 IM/IMD/IMZ are definite IM evidence (R2)."""
    assert card_of(condition(), med_admin(route=route))["indicator"] == "warning"


@pytest.mark.parametrize("route", [(SNOMED, "34206005"), (ROUTE, "SQ"), (ROUTE, "IV")])
def test_coded_non_im_route_wins_over_gluteal_site(route):
    """A coded non-IM route excludes the injection even with a gluteal site (R2)."""
    assert card_of(condition(), med_admin(route=route, site="LG")) is None


def test_gluteal_site_without_route_is_probable():
    """No coded route but a gluteal site: probable IM, capped at info (R2)."""
    card = card_of(condition(), med_admin(route=None, site="LG"))
    assert card["indicator"] == "info"
    assert "route" in card["detail"]


def test_route_text_im_is_probable():
    """Route text "IM" without a code is probable IM evidence (R2)."""
    card = card_of(condition(), med_admin(route=None, site="LG", route_text="IM"))
    assert card["indicator"] == "info"


def test_no_route_no_site_is_not_im():
    """Neither route nor site: not IM evidence (R2)."""
    assert card_of(condition(), med_admin(route=None, site=None)) is None


def test_cpt_96372_needs_gluteal_site_or_linked_im_administration():
    """CPT 96372 is SC or IM: alone it is not enough; gluteal site gives probable (R2)."""
    assert card_of(condition(), im_procedure(site=None, code="96372", system=CPT)) is None
    card = card_of(condition(), im_procedure(site="LG", code="96372", system=CPT))
    assert card["indicator"] == "info"


def test_cpt_96372_linked_to_im_administration_is_definite():
    """CPT 96372 with a linked IM MedicationAdministration (partOf) is definite IM (R2)."""
    proc = im_procedure(site="LG", code="96372", system=CPT, rid="p96372")
    ma = med_admin(route=(ROUTE, "IM"), site=None, partOf=[{"reference": "Procedure/p96372"}])
    card = card_of(condition(), proc, ma)
    assert card["indicator"] == "warning"


def test_subcutaneous_procedure_is_not_im_when_corroborated():
    """Procedure 1285265006 (subcutaneous, provisional) never counts as IM."""
    proc = im_procedure(code="1285265006")
    assert card_of(condition(), proc) is None


def test_immunization_route_and_site():
    """Immunizations with IM route and gluteal site are injections (R2)."""
    assert card_of(condition(), immunization())["indicator"] == "warning"


# --- R3 site ----------------------------------------------------------------------------------


@pytest.mark.parametrize("site", ["LD", "RD", "LUA", "LA", "LT", "LVL"])
def test_remote_sites_give_no_card(site):
    """Deltoid, arm, thigh and vastus lateralis sites cannot explain the foot drop (R3)."""
    assert card_of(condition(), im_procedure(site=site)) is None


@pytest.mark.parametrize("site", ["LVG", "BU"])
def test_ventrogluteal_and_buttock_are_gluteal(site):
    """Ventrogluteal and buttock sites are gluteal (BU has no side: info, R5)."""
    card = card_of(condition(), im_procedure(site=site))
    assert card["indicator"] == ("warning" if site == "LVG" else "info")


def test_snomed_gluteal_site():
    """SNOMED 1236872009 (left gluteus medius) is a lateralised gluteal site."""
    proc = im_procedure(site="1236872009", site_system=SNOMED)
    assert card_of(condition(), proc)["indicator"] == "warning"


def test_missing_site_is_info_with_document_sentence():
    """No bodySite: plausible, capped at info, and the detail asks to document the site (R3)."""
    card = card_of(condition(), im_procedure(site=None))
    assert card["indicator"] == "info"
    assert "Document the injection site" in card["detail"]
    assert suggestion_keys(card) == FULL


def test_vastus_lateralis_configurable_to_info(tmp_cards):
    """options.vastus_lateralis_site: info turns the thigh site into a capped info card."""
    cards = tmp_cards(
        lambda d: d.joinpath("thresholds.yaml").write_text(
            d.joinpath("thresholds.yaml")
            .read_text()
            .replace("vastus_lateralis_site: none", "vastus_lateralis_site: info")
        )
    )
    card = card_of(condition(), im_procedure(site="LVL"), cards=cards)
    assert card["indicator"] == "info"


# --- R4 window --------------------------------------------------------------------------------


def test_onset_before_injection_gives_no_card():
    """A foot drop that began before the injection is unrelated (R4)."""
    assert card_of(condition(onset="2025-06-10T08:00:00Z"), im_procedure()) is None


def test_onset_equal_to_injection_is_immediate():
    """Delta 0 is inside the immediate window (inclusive lower bound)."""
    assert card_of(condition(onset=INJ), im_procedure())["indicator"] == "warning"


INJ = "2025-06-11T08:30:00Z"


def test_date_only_onset_on_injection_day_is_not_before():
    """A date-only onset on the injection day covers the whole day: immediate (R4)."""
    card = card_of(condition(onset="2025-06-11"), im_procedure())
    assert card["indicator"] == "warning"
    assert "on the day of" in card["summary"]


def test_boundary_48h_is_immediate_and_just_after_is_delayed():
    """Exactly 48 h is immediate (warning); 48 h + 1 min is delayed (info)."""
    assert (
        card_of(
            condition(onset="2025-06-13T08:30:00Z"),
            im_procedure(),
            now=datetime(2025, 6, 14, tzinfo=UTC),
        )["indicator"]
        == "warning"
    )
    assert (
        card_of(
            condition(onset="2025-06-13T08:31:00Z"),
            im_procedure(),
            now=datetime(2025, 6, 14, tzinfo=UTC),
        )["indicator"]
        == "info"
    )


def test_delayed_onset_is_info_and_emg_anchored_on_onset():
    """Onset 9 days later: delayed, info, EMG on or after onset + 21 days (R4, R8)."""
    card = card_of(
        condition(onset="2025-06-19"),
        im_procedure(site="LG"),
        now=datetime(2025, 6, 20, 10, tzinfo=UTC),
    )
    assert card["indicator"] == "info"
    assert resource_of(card, "EMG_NCS")["occurrenceDateTime"] == "2025-07-10"


def test_delayed_onset_with_link_code_is_warning():
    """A T80.89XA link code lifts the delayed class to warning (R4)."""
    card = card_of(
        condition(onset="2025-06-19"),
        condition("T80.89XA", onset="2025-06-19"),
        im_procedure(),
        now=datetime(2025, 6, 20, 10, tzinfo=UTC),
    )
    assert card["indicator"] == "warning"


def test_delayed_onset_with_evidence_detail_link_is_warning():
    """A trigger whose evidence.detail references the injection is a link (R4)."""
    trig = condition(onset="2025-06-19", evidence=[{"detail": [{"reference": "Procedure/inj9"}]}])
    card = card_of(trig, im_procedure(rid="inj9"), now=datetime(2025, 6, 20, 10, tzinfo=UTC))
    assert card["indicator"] == "warning"


def test_delayed_onset_with_radiating_pain_from_injection_is_warning():
    """Ipsilateral sciatica starting within 24 h of the injection lifts delayed to warning."""
    pain = condition("M54.32", onset="2025-06-11T09:00:00Z")
    card = card_of(
        condition(onset="2025-06-19"),
        pain,
        im_procedure(),
        now=datetime(2025, 6, 20, 10, tzinfo=UTC),
    )
    assert card["indicator"] == "warning"


def test_contralateral_radiating_pain_does_not_lift():
    """Radiating pain on the other side is not supporting evidence."""
    pain = condition("M54.31", onset="2025-06-11T09:00:00Z")
    card = card_of(
        condition(onset="2025-06-19"),
        pain,
        im_procedure(),
        now=datetime(2025, 6, 20, 10, tzinfo=UTC),
    )
    assert card["indicator"] == "info"


def test_delayed_onset_anticoagulated_is_warning_with_imaging_sentence():
    """Anticoagulation (Z79.01) lifts delayed to warning; the detail starts with R7c's sentence."""
    card = card_of(
        condition(onset="2025-06-19"),
        condition("Z79.01", onset="2024-01-01"),
        im_procedure(),
        now=datetime(2025, 6, 20, 10, tzinfo=UTC),
    )
    assert card["indicator"] == "warning"
    assert card["detail"].startswith("Anticoagulated (")
    assert "image the buttock and thigh today" in card["detail"]
    assert "Avoid NSAIDs." in card["detail"]


def test_anticoagulant_administration_by_text():
    """An enoxaparin administration in the 7 days before the injection counts as anticoagulation."""
    heparin = med_admin(
        route=(SNOMED, "34206005"), site=None, drug="Enoxaparin 40 mg", when="2025-06-09T08:00:00Z"
    )
    card = card_of(
        condition(onset="2025-06-19"),
        heparin,
        im_procedure(),
        now=datetime(2025, 6, 20, 10, tzinfo=UTC),
    )
    assert card["indicator"] == "warning"


def test_late_onset_needs_link_code():
    """14-90 days: no card without a link code, info with one; S74.0- alone is no link (R4)."""
    now = datetime(2025, 7, 10, tzinfo=UTC)
    late = condition(onset="2025-07-05")
    assert card_of(late, im_procedure(), now=now) is None
    assert card_of(condition("S74.02XA", onset="2025-07-05"), im_procedure(), now=now) is None
    card = card_of(late, condition("T80.89XA", onset="2025-07-05"), im_procedure(), now=now)
    assert card["indicator"] == "info"


def test_beyond_attribution_limit_gives_no_card():
    """Onset more than 90 days after the injection: no attribution (R4)."""
    assert card_of(condition(onset="2025-06-11"), im_procedure(when="2023-06-11T08:00:00Z")) is None


def test_recorded_date_is_only_an_upper_bound():
    """No onset, recorded 20 days later: onset uncertain, info, never 'no card' (R4)."""
    trig = condition(onset=None, recorded="2025-07-01T09:00:00Z")
    card = card_of(trig, im_procedure(), now=datetime(2025, 7, 2, 10, tzinfo=UTC))
    assert card["indicator"] == "info"
    assert "Record when the weakness began" in card["detail"]
    assert resource_of(card, "EMG_NCS")["occurrenceDateTime"] == "2025-07-02"


def test_no_onset_and_no_recorded_date_uses_evaluation_time():
    """With neither onset nor recordedDate the upper bound is now: uncertain info card."""
    card = card_of(condition(onset=None), im_procedure())
    assert card["indicator"] == "info"


def test_month_precision_onset_is_uncertain():
    """A year-month onset is a whole month: uncertain, info."""
    card = card_of(condition(onset="2025-06"), im_procedure(), now=datetime(2025, 7, 2, tzinfo=UTC))
    assert card["indicator"] == "info"


def test_onset_period():
    """onsetPeriod with a start only is the onset; a long period is uncertain."""
    exact = condition(onset=None, onsetPeriod={"start": "2025-06-11T14:00:00Z"})
    assert card_of(exact, im_procedure())["indicator"] == "warning"
    wide = condition(onset=None, onsetPeriod={"start": "2025-06-01", "end": "2025-06-12"})
    assert card_of(wide, im_procedure())["indicator"] == "info"


def test_every_pair_evaluated_best_kept():
    """A deltoid injection after a gluteal one does not hide the gluteal pair (R4)."""
    gluteal = im_procedure(site="LG", when="2025-06-11T08:30:00Z")
    deltoid = im_procedure(site="LD", when="2025-06-11T12:00:00Z")
    card = card_of(condition(), gluteal, deltoid)
    assert card["indicator"] == "warning"
    assert "gluteal" in card["summary"]


# --- R5 laterality ----------------------------------------------------------------------------


def test_opposite_side_gives_no_card():
    """Right buttock injection cannot explain left foot drop (R5)."""
    assert card_of(condition("M21.372"), im_procedure(site="RG")) is None


def test_unknown_foot_drop_side_is_info():
    """M21.379 (side unknown) lowers to info (R5)."""
    card = card_of(condition("M21.379"), im_procedure())
    assert card["indicator"] == "info"
    assert "side not documented" in card["summary"]


def test_conflicting_sides_in_one_record_are_unknown():
    """ICD says left, bodySite says right foot: side unknown, never picked (R5)."""
    trig = condition("M21.372", body_side="right")
    card = card_of(trig, im_procedure(site="RG"))
    assert card["indicator"] == "info"


# --- R6 competing causes ----------------------------------------------------------------------


def test_radiculopathy_before_injection_competes_and_leads_with_emg():
    """L5 radiculopathy that began before the injection caps at info, EMG first (R6)."""
    records = (condition(), condition("M54.16", onset="2025-05-21"), im_procedure())
    card = card_of(*records)
    assert card["indicator"] == "info"
    assert suggestion_keys(card)[0] == "EMG_NCS"
    assert card["detail"].startswith("**Lead with EMG/NCS**")
    assert "paraspinals" in page_text(*records)  # R9a: the why of the lead is on the page


def test_radiculopathy_after_injection_does_not_compete():
    """Radicular code beginning after the injection is neither competing nor a downgrade (R6)."""
    card = card_of(condition(), condition("M54.16", onset="2025-06-12"), im_procedure())
    assert card["indicator"] == "warning"


def test_radicular_code_recorded_before_injection_without_onset_competes():
    """Judged on the latest possible onset: recorded before the injection counts (R6)."""
    rad = condition("M51.16", onset=None, recorded="2025-05-01")
    assert card_of(condition(), rad, im_procedure())["indicator"] == "info"


def test_contralateral_sciatica_does_not_compete():
    """A lateralised radicular code counts only on the foot-drop side (R6)."""
    rad = condition("M54.31", onset="2025-05-01")
    assert card_of(condition(), rad, im_procedure())["indicator"] == "warning"


def test_recent_stroke_leads_with_upper_motor_neuron_check():
    """Ischaemic stroke 2 days before the foot drop: info, detail starts with UMN check (R6)."""
    card = card_of(condition(), condition("I63.9", onset="2025-06-09"), im_procedure())
    assert card["indicator"] == "info"
    assert card["detail"].startswith("**Check for upper-motor-neuron signs**")
    assert "if peripheral features" in card["suggestions"][0]["label"]


def test_old_stroke_and_sequela_are_named_without_downgrade():
    """An old infarct or I69 sequela is named, not competing (R6)."""
    records = (
        condition(),
        condition("I63.9", onset="2020-01-01"),
        condition("I69.352", onset="2020-02-01"),
        im_procedure(),
    )
    assert card_of(*records)["indicator"] == "warning"
    page = page_text(*records)  # R9a / §4.6.4: previous-stroke notes move to the page
    assert "confirm that the foot drop is new" in page
    assert "Previous stroke" in page


def test_polyneuropathy_never_competes():
    """Diabetic polyneuropathy adds the susceptibility note and keeps the indicator (R6)."""
    records = (condition(), condition("E11.42", onset="2015-01-01"), im_procedure())
    assert card_of(*records)["indicator"] == "warning"
    assert "polyneuropathy" in page_text(*records)  # §4.6.4: susceptibility note on the page


def test_gbs_is_not_a_polyneuropathy_and_competes_when_recent():
    """G61.0 is carved out of the polyneuropathy prefix G61 and competes when recent."""
    card = card_of(condition(), condition("G61.0", onset="2025-06-01"), im_procedure())
    assert card["indicator"] == "info"


@pytest.mark.parametrize("code", ["G35.A", "G35.D", "G12.21"])
def test_ms_and_mnd_compete_whatever_the_onset(code):
    """MS (G35 prefix, FY2026 split) and ALS compete with any onset (R6)."""
    card = card_of(condition(), condition(code, onset="2010-01-01"), im_procedure())
    assert card["indicator"] == "info"


def test_recent_hip_arthroplasty_procedure_competes():
    """A total hip replacement within 30 days before the foot drop competes (R6)."""
    hip = im_procedure(site=None, code="52734007", when="2025-06-01T08:00:00Z")
    card = card_of(condition(), hip, im_procedure())
    assert card["indicator"] == "info"
    assert suggestion_keys(card)[0] == "EMG_NCS"


def test_hip_fracture_subsequent_encounter_does_not_compete():
    """Injury codes compete only with an initial-encounter 7th character (R6)."""
    card = card_of(condition(), condition("S72.002D", onset="2025-06-01"), im_procedure())
    assert card["indicator"] == "warning"
    card = card_of(condition(), condition("S72.002A", onset="2025-06-01"), im_procedure())
    assert card["indicator"] == "info"


def test_diabetic_mononeuropathy_depends_on_onset():
    """Diabetic mononeuropathy before the injection competes; after it, it is the same event."""
    before = card_of(condition(), condition("E11.41", onset="2025-01-01"), im_procedure())
    after = card_of(condition(), condition("E11.41", onset="2025-06-12"), im_procedure())
    assert before["indicator"] == "info"
    assert after["indicator"] == "warning"
    page = page_text(condition(), condition("E11.41", onset="2025-06-12"), im_procedure())
    assert "same event" in page  # R9a: on the app page


def test_refuted_competing_cause_is_ignored():
    """A refuted radiculopathy does not compete (R0 applies to competing causes)."""
    rad = condition("M54.16", onset="2025-05-21", verification="refuted")
    assert card_of(condition(), rad, im_procedure())["indicator"] == "warning"


def test_provisional_competing_cause_counts_in_full():
    """A provisional competing cause still counts (the R0 cap applies to the trigger only)."""
    rad = condition("M54.16", onset="2025-05-21", verification="provisional")
    assert card_of(condition(), rad, im_procedure())["indicator"] == "info"


# --- R7 red flags -----------------------------------------------------------------------------


def test_bilateral_foot_drop_is_critical_with_urgent_eval_only():
    """Left and right foot drop within 14 days after an injection: critical, URGENT_EVAL only."""
    card = card_of(
        condition("M21.372"), condition("M21.371", onset="2025-06-12T02:00:00Z"), im_procedure()
    )
    assert card["indicator"] == "critical"
    assert suggestion_keys(card) == ["URGENT_EVAL"]
    urgent = card["suggestions"][0]["actions"][0]["resource"]
    assert urgent["priority"] == "stat"
    assert urgent["code"]["coding"][0]["code"] == "308482002"
    assert len(urgent["reasonReference"]) == 2  # both sides, deduplicated
    assert "held" in card["detail"]


def test_old_contralateral_foot_drop_is_not_bilateral():
    """A contralateral foot drop from long before the injection is pre-existing (R7 guard)."""
    card = card_of(condition("M21.372"), condition("M21.371", onset="2020-01-01"), im_procedure())
    assert card["indicator"] == "warning"


def test_bilateral_code_with_deltoid_injection_is_red_flag():
    """G57.33 is bilateral: red flag even with a deltoid site (R7 runs before R3)."""
    card = card_of(condition("G57.33"), im_procedure(site="LD"))
    assert card["indicator"] == "critical"


def test_bilateral_red_flag_needs_no_injection():
    """R7d has no injection gate: a bilateral code alone is a red flag (rev 2)."""
    assert card_of(condition("G57.33"))["indicator"] == "critical"


@pytest.mark.parametrize("code", ["R33.9", "R33.8", "G83.4", "S34.3XXA"])
def test_cauda_equina_flags_even_on_opposite_side(code):
    """Urinary retention / cauda equina after injection: critical even with an opposite side."""
    card = card_of(
        condition("M21.372"),
        condition(code, onset="2025-06-12", verification="provisional"),
        im_procedure(site="RG"),
    )
    assert card["indicator"] == "critical"
    assert (
        card["suggestions"][0]["actions"][0]["resource"]["code"]["coding"][0]["code"] == "308482002"
    )


@pytest.mark.parametrize("code", ["R33.0", "S34.3XXD"])
def test_drug_induced_retention_and_subsequent_encounter_are_not_red_flags(code):
    """R33.0 (drug induced) and a subsequent-encounter injury code never raise a flag."""
    card = card_of(condition(), condition(code, onset="2025-06-12"), im_procedure())
    assert card["indicator"] == "warning"


def test_old_retention_is_chronic_but_coded_cauda_equina_counts_at_any_date():
    """R7e: retention charted long before the back/leg symptoms is chronic; G83.4 counts anyway."""
    card = card_of(condition(), condition("R33.9", onset="2024-01-01"), im_procedure())
    assert card["indicator"] == "warning"
    card = card_of(condition(), condition("G83.4", onset="2024-01-01"), im_procedure())
    assert card["indicator"] == "critical"


def test_compressive_haematoma_goes_to_orthopaedic_stat():
    """M79.81 with no site after a gluteal injection: critical, 308481009 stat (R7)."""
    card = card_of(condition(), condition("M79.81", onset="2025-06-12"), im_procedure())
    assert card["indicator"] == "critical"
    urgent = card["suggestions"][0]["actions"][0]["resource"]
    assert urgent["code"]["coding"][0]["code"] == "308481009"


def test_haematoma_elsewhere_is_not_a_red_flag():
    """M79.81 with a bodySite that names the arm does not count."""
    bruise = condition("M79.81", onset="2025-06-12", bodySite=[{"text": "left forearm"}])
    assert card_of(condition(), bruise, im_procedure())["indicator"] == "warning"


def test_compartment_syndrome_any_side_and_other_side_is_stated():
    """R7b: any side flags; a side different from the foot drop is stated, never dropped (rev 2)."""
    same = card_of(condition(), condition("M79.A22", onset="2025-06-12"), im_procedure())
    other = card_of(condition(), condition("M79.A21", onset="2025-06-12"), im_procedure())
    assert same["indicator"] == "critical"
    assert "check the side" not in page_text(
        condition(), condition("M79.A22", onset="2025-06-12"), im_procedure()
    )
    assert other["indicator"] == "critical"
    assert "check the side" in page_text(  # R9a: on the app page
        condition(), condition("M79.A21", onset="2025-06-12"), im_procedure()
    )


def test_progressive_weakness_two_grades():
    """A fall of 2 MRC grades after onset is progression: neurology stat (R7)."""
    card = card_of(
        condition(), mrc(4, "2025-06-11T15:00:00Z"), mrc(2, "2025-06-12T15:00:00Z"), im_procedure()
    )
    assert card["indicator"] == "critical"
    urgent = card["suggestions"][0]["actions"][0]["resource"]
    assert urgent["code"]["coding"][0]["code"] == "308474002"


def test_one_grade_fall_or_pre_injection_grade_is_not_progression():
    """One grade is inter-rater variation; a pre-injection 5/5 then 2/5 is the injury itself."""
    card = card_of(
        condition(), mrc(3, "2025-06-11T15:00:00Z"), mrc(2, "2025-06-12T15:00:00Z"), im_procedure()
    )
    assert card["indicator"] == "warning"
    card = card_of(
        condition(), mrc(5, "2025-06-01T15:00:00Z"), mrc(2, "2025-06-12T15:00:00Z"), im_procedure()
    )
    assert card["indicator"] == "warning"


def test_multiple_flags_one_urgent_per_code():
    """Bilateral + cauda equina share 308482002: one URGENT_EVAL; a haematoma adds 308481009."""
    card = card_of(
        condition("G57.33"),
        condition("R33.9", onset="2025-06-12"),
        condition("M79.81", onset="2025-06-12"),
        im_procedure(),
    )
    codes = sorted(
        s["actions"][0]["resource"]["code"]["coding"][0]["code"] for s in card["suggestions"]
    )
    assert codes == ["308481009", "308482002"]


def test_recent_urgent_request_is_not_repeated():
    """A same-code stat request from the last 24 h: no new URGENT_EVAL, the card says so."""
    existing = service_request("308482002", priority="stat", authored="2025-06-13T08:00:00Z")
    card = card_of(condition("G57.33"), im_procedure(), existing)
    assert card["indicator"] == "critical"
    assert "suggestions" not in card
    assert "already ordered" in card["detail"]


# --- R8 suggestions and de-duplication --------------------------------------------------------


def test_existing_afo_and_pt_are_not_suggested_again():
    """Active AFO (L1930) and PT orders: only EMG and follow-up suggested, detail says ordered."""
    card = card_of(condition(), im_procedure(), device_request(), service_request("306170007"))
    assert suggestion_keys(card) == ["EMG_NCS", "FOLLOW_UP"]
    assert "already ordered" in card["detail"]


def test_http_hcpcs_spelling_and_afo_text_dedup():
    """HCPCS on the http URI, or a text-only AFO, also suppress the AFO suggestion."""
    assert "AFO" not in suggestion_keys(
        card_of(condition(), im_procedure(), device_request("L1971", HCPCS_HTTP))
    )
    text_only = device_request("X", "http://example.org/local", text="Ankle foot orthosis")
    assert "AFO" not in suggestion_keys(card_of(condition(), im_procedure(), text_only))


@pytest.mark.parametrize("code", ["L1902", "L1906"])
def test_ankle_brace_does_not_suppress_afo(code):
    """L1902 / L1906 are ankle-only braces: AFO still suggested, detail names the brace."""
    card = card_of(condition(), im_procedure(), device_request(code))
    assert "AFO" in suggestion_keys(card)
    assert "ankle brace" in page_text(condition(), im_procedure(), device_request(code))


def test_completed_afo_before_injection_does_not_suppress():
    """A completed AFO authored before the injection belongs to an earlier episode."""
    old = device_request(status="completed", authored="2024-01-01")
    assert "AFO" in suggestion_keys(card_of(condition(), im_procedure(), old))
    cancelled = device_request(status="revoked")
    assert "AFO" in suggestion_keys(card_of(condition(), im_procedure(), cancelled))


def test_emg_referral_on_file_suppresses_emg():
    """An active 306276006 consult authored after the injection suppresses the EMG suggestion."""
    card = card_of(condition(), im_procedure(), service_request("306276006"))
    assert "EMG_NCS" not in suggestion_keys(card)


def test_early_baseline_study_does_not_suppress_emg():
    """A study before anchor + 21 days is a baseline: EMG still suggested and named (R8)."""
    baseline = im_procedure(site=None, code="95907", system=CPT, when="2025-06-12T10:00:00Z")
    card = card_of(condition(), im_procedure(), baseline)
    assert "EMG_NCS" in suggestion_keys(card)
    assert "does not replace the diagnostic study" in page_text(
        condition(), im_procedure(), baseline
    )


def test_emg_not_before_and_not_before_today():
    """EMG occurrence is max(anchor + 21 d, today)."""
    card = card_of(condition(), im_procedure())
    assert resource_of(card, "EMG_NCS")["occurrenceDateTime"] == "2025-07-02"
    late = card_of(
        condition(onset=None, recorded="2025-07-20"),
        im_procedure(),
        now=datetime(2025, 7, 25, tzinfo=UTC),
    )
    assert resource_of(late, "EMG_NCS")["occurrenceDateTime"] == "2025-07-25"


def test_follow_up_appointment_dedup():
    """A booked future FOLLOWUP appointment suppresses the follow-up suggestion."""
    appt = {
        "resourceType": "Appointment",
        "id": "ap1",
        "status": "booked",
        "appointmentType": concept(V2_0276, "FOLLOWUP"),
        "start": "2025-07-15T09:00:00Z",
        "end": "2025-07-15T09:30:00Z",
        "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}],
    }
    card = card_of(condition(), im_procedure(), appt)
    assert "FOLLOW_UP" not in suggestion_keys(card)
    past = dict(appt, start="2025-05-01T09:00:00Z")
    assert "FOLLOW_UP" in suggestion_keys(card_of(condition(), im_procedure(), past))


def test_follow_up_window_is_four_to_six_weeks():
    """FOLLOW_UP occurrencePeriod is now + 28 d to now + 42 d."""
    period = resource_of(card_of(condition(), im_procedure()), "FOLLOW_UP")["occurrencePeriod"]
    assert period == {"start": "2025-07-11", "end": "2025-07-25"}


def _late_case(now, grades, *extra):
    return card_of(
        condition(onset="2025-01-10T10:00:00Z"),
        im_procedure(when="2025-01-10T08:00:00Z"),
        device_request(authored="2025-01-11"),
        service_request("306170007", authored="2025-01-11"),
        *grades,
        *extra,
        now=now,
    )


def test_early_referral_for_complete_lesion_at_four_weeks():
    """MRC <= 1 at >= 28 days after the anchor: peripheral-nerve clinic referral (R8)."""
    card = _late_case(datetime(2025, 2, 15, tzinfo=UTC), [mrc(1, "2025-02-14T10:00:00Z")])
    assert "SURGICAL_REFERRAL" in suggestion_keys(card)
    assert (
        card["suggestions"][0]["actions"][0]["resource"]["code"]["coding"][0]["code"] == "308482002"
    )


def test_no_early_referral_for_partial_lesion():
    """MRC 3 at four weeks is not a complete lesion: no referral yet."""
    card = _late_case(datetime(2025, 2, 15, tzinfo=UTC), [mrc(3, "2025-02-14T10:00:00Z")])
    assert "SURGICAL_REFERRAL" not in suggestion_keys(card)


def test_surgical_decision_at_three_months_without_recovery():
    """>= 90 days and MRC stuck at 1: surgical-decision referral, routine priority (R8)."""
    card = _late_case(
        datetime(2025, 5, 1, tzinfo=UTC),
        [mrc(1, "2025-01-20T10:00:00Z"), mrc(1, "2025-04-20T10:00:00Z")],
    )
    surgical = resource_of(card, "SURGICAL_REFERRAL")
    assert surgical["priority"] == "routine"
    assert "surgical decision" in surgical["code"]["text"]


def test_recovery_prevents_surgical_decision():
    """A grade 3 that is 2 grades better than the first is documented recovery."""
    card = _late_case(
        datetime(2025, 5, 1, tzinfo=UTC),
        [mrc(1, "2025-01-20T10:00:00Z"), mrc(3, "2025-04-20T10:00:00Z")],
    )
    assert "SURGICAL_REFERRAL" not in suggestion_keys(card)


def test_tendon_transfer_after_a_year():
    """>= 365 days without useful recovery: 308481009 tendon transfer replaces 308482002."""
    card = _late_case(datetime(2026, 1, 20, tzinfo=UTC), [mrc(1, "2026-01-10T10:00:00Z")])
    surgical = resource_of(card, "SURGICAL_REFERRAL")
    assert surgical["code"]["coding"][0]["code"] == "308481009"


def test_surgical_referral_on_file_is_not_repeated():
    """An active 308482002 referral suppresses the surgical-decision stage."""
    existing = service_request("308482002", authored="2025-04-25")
    card = _late_case(datetime(2025, 5, 1, tzinfo=UTC), [mrc(1, "2025-04-20T10:00:00Z")], existing)
    assert "SURGICAL_REFERRAL" not in suggestion_keys(card)


# --- R9 text ----------------------------------------------------------------------------------


def test_child_with_acute_foot_drop_is_afp_critical():
    """R7a: acute flaccid weakness under 15 is a critical AFP card (notification, paediatric
    neurology), never an attribution card - the injection does not exempt it (rev 2)."""
    card = card_of(patient("2015-01-01"), condition(), im_procedure())
    assert card["indicator"] == "critical"
    assert card["summary"].startswith("Acute flaccid paralysis in a child")
    assert card["detail"].startswith("Notify the AFP surveillance officer")
    assert "Two stool specimens" in card["detail"]
    codes = sorted(
        s["actions"][0]["resource"]["code"]["coding"][0]["code"] for s in card["suggestions"]
    )
    assert codes == ["306263000", "306296003"]


def test_adult_and_unknown_age_get_no_afp_note():
    """No AFP note for an adult or when the birth date is unknown."""
    assert "stool" not in card_of(patient("1980-01-01"), condition(), im_procedure())["detail"]
    assert "stool" not in card_of(condition(), im_procedure())["detail"]


def test_child_referral_names_paediatric_service():
    """Referrals for a child name paediatric neurosurgery (R9)."""
    card = card_of(patient("2015-01-01"), condition("G57.33"), im_procedure())
    assert "paediatric" in card["suggestions"][0]["actions"][0]["resource"]["code"]["text"]


def test_fixed_sentences_and_severity():
    """Every card's page (R9a) carries the stroke and IM-avoidance sentences, the not-supported
    list, the MRC grade and the full plan; the card itself stays short."""
    records = (condition(), im_procedure(), mrc(1, "2025-06-12T09:00:00Z"))
    assert "urgent brain MRI" not in card_of(*records)["detail"]
    detail = page_text(*records)
    assert "urgent brain MRI (DWI)" in detail
    assert "Avoid further IM injections" in detail
    assert "electrical stimulation of denervated muscle" in detail
    assert "NSAIDs beyond pain relief" in detail
    assert "1/5" in detail and "severe" in detail
    assert "short head of biceps femoris" in detail
    assert "2–3 sessions/week for 6–12 weeks" in detail


def test_drug_name_is_named():
    """The injected drug is named in the evidence when known."""
    assert "Diclofenac" in page_text(condition(), med_admin(drug="Diclofenac 75 mg"))


def test_summary_short_and_names_side_timing_injection():
    """The summary is < 140 characters and names side, timing and injection."""
    card = card_of(
        condition(),
        im_procedure(),
        condition("M54.16", onset="2025-05-01"),
        condition("I63.9", onset="2025-06-10"),
    )
    assert len(card["summary"]) < 140
    assert card["summary"].startswith("Left foot drop")
    assert NOW
    assert LOCAL and ICD and HCPCS

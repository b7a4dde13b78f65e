"""Revision 2 (clinical.md §4.3, §4.4): time, episodes, MRC grades, indication, recovery, orders.

Unit-level checks of the new modules; the realistic charts are fixtures 101-140.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cds_service.config import Settings, SettingsError
from cds_service.domain.card import clip_summary, due_text
from cds_service.domain.engine import Policy
from cds_service.domain.fhirtime import local_text, parse_interval
from cds_service.domain.mrc import MrcCodes, MrcRow, grade_rank, parse_grade, parse_mrc_codes
from tests.domain.factories import (
    LOCAL,
    PID,
    card_of,
    concept,
    condition,
    device_request,
    im_procedure,
    mrc,
    page_text,
    suggestion_keys,
)

SITE = "http://hospital.example/fhir/CodeSystem/flowsheet"


# --- R0a time --------------------------------------------------------------------------------


def test_datetime_keeps_its_own_offset_and_local_date():
    """An evening US dateTime keeps its local date (never the UTC date, R0a)."""
    lo, hi = parse_interval("2025-06-11T19:30:00-05:00")
    assert lo == hi and lo.date() == date(2025, 6, 11)
    assert lo == datetime(2025, 6, 12, 0, 30, tzinfo=UTC)


def test_date_only_is_the_whole_day_in_the_given_zone():
    """A date-only value is [D 00:00, D+1 00:00) in the zone it is compared in."""
    zone = ZoneInfo("America/Chicago")
    lo, hi = parse_interval("2025-06-11", zone)
    assert lo == datetime(2025, 6, 11, 5, 0, tzinfo=UTC)
    assert hi == datetime(2025, 6, 12, 5, 0, tzinfo=UTC)


def test_datetime_without_offset_is_site_wall_clock():
    """A dateTime without an offset is read in the site time zone, DST-aware."""
    lo, _ = parse_interval("2025-01-15T08:00:00", UTC, ZoneInfo("America/Chicago"))
    assert lo == datetime(2025, 1, 15, 14, 0, tzinfo=UTC)
    lo, _ = parse_interval("2025-07-15T08:00:00", UTC, ZoneInfo("America/Chicago"))
    assert lo == datetime(2025, 7, 15, 13, 0, tzinfo=UTC)


def test_local_text_names_the_offset():
    """Displayed times carry their offset, UTC only when the offset is zero."""
    assert local_text(parse_interval("2025-06-11T19:30:00-05:00")[0]) == "2025-06-11 19:30 -05:00"
    assert local_text(parse_interval("2025-06-11T19:30:00Z")[0]) == "2025-06-11 19:30 UTC"


def test_date_only_onset_on_the_local_injection_day_is_not_before_it():
    """A date-only onset on the injection's local day (an evening -05:00 injection) gets a card."""
    card = card_of(
        condition(onset="2025-06-11"),
        im_procedure(when="2025-06-11T19:30:00-05:00"),
        now=datetime(2025, 6, 13, 15, 0, tzinfo=UTC),
    )
    assert card is not None and card["indicator"] == "warning"


def test_site_time_zone_setting_reads_naive_injection_times():
    """With CDS_SITE_TIMEZONE a naive injection time is local: an onset 30 h later is immediate."""
    policy = Policy(site_time_zone="Asia/Tokyo")
    card = card_of(
        condition(onset="2025-06-12T14:00:00+09:00"),
        im_procedure(when="2025-06-11T08:00:00"),
        policy=policy,
    )
    assert card is not None and "30 h after" in card["summary"]


def test_bad_time_zone_is_a_settings_error():
    """An unknown IANA name stops the start-up with one line."""
    with pytest.raises(SettingsError, match="CDS_SITE_TIMEZONE"):
        Settings.from_env({"CDS_SITE_TIMEZONE": "Mars/Olympus"})
    assert Settings.from_env({"CDS_SITE_TIMEZONE": "Europe/Paris"}).site_timezone == "Europe/Paris"


# --- R1b MRC ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"valueInteger": 3}, (3, "")),
        ({"valueString": "4+/5"}, (4, "+")),
        ({"valueString": " 3 / 5 "}, (3, "")),
        ({"valueString": "4-"}, (4, "-")),
        ({"valueCodeableConcept": {"text": "2/5"}}, (2, "")),
        ({"valueQuantity": {"value": 2, "unit": "{score}"}}, (2, "")),
        ({"valueQuantity": {"value": 1.0}}, (1, "")),
        ({"valueString": "weak"}, None),
        ({"valueString": "normal"}, None),
        ({"valueString": "6/5"}, None),
        ({"valueString": "5+"}, None),
        ({"valueQuantity": {"value": 2, "unit": "%"}}, None),
        ({"valueQuantity": {"value": 2.5}}, None),
        ({"valueInteger": 7}, None),
    ],
)
def test_mrc_values_are_parsed_as_charted(value, expected):
    """MRC values as EHRs send them ("4+/5", quantities) parse; anything else is not a grade."""
    assert parse_grade(value) == expected


def test_sub_grades_order():
    """4- < 4 < 4+ < 5 (R8a)."""
    assert grade_rank(4, "-") < grade_rank(4) < grade_rank(4, "+") < grade_rank(5)


def test_mapping_file_rows_and_errors():
    """The mapping file yields rows; a bad movement or side is a one-line ValueError."""
    rows = parse_mrc_codes(
        {
            "codes": [
                {"system": SITE, "code": "DF-L", "movement": "ankle-dorsiflexion", "side": "left"}
            ]
        }
    )
    assert rows == (MrcRow(SITE, "DF-L", "ankle-dorsiflexion", "left"),)
    with pytest.raises(ValueError, match="movement"):
        parse_mrc_codes({"codes": [{"system": SITE, "code": "X", "movement": "wiggle"}]})
    with pytest.raises(ValueError, match="side"):
        parse_mrc_codes(
            {"codes": [{"system": SITE, "code": "X", "movement": "hip-flexion", "side": "up"}]}
        )
    with pytest.raises(ValueError):
        parse_mrc_codes({"rows": []})


def test_missing_or_invalid_mapping_file_is_a_settings_error(tmp_path: Path):
    """CDS_MRC_CODES_FILE must exist and parse; the error is one line."""
    with pytest.raises(SettingsError, match="CDS_MRC_CODES_FILE"):
        Settings.from_env({"CDS_MRC_CODES_FILE": str(tmp_path / "none.yaml")})
    bad = tmp_path / "bad.yaml"
    bad.write_text("codes:\n  - {system: x, code: y, movement: nope}\n")
    with pytest.raises(SettingsError, match="movement"):
        Settings.from_env({"CDS_MRC_CODES_FILE": str(bad)})
    good = tmp_path / "good.yaml"
    good.write_text(f"codes:\n  - {{system: '{SITE}', code: DF, movement: ankle-dorsiflexion}}\n")
    assert Settings.from_env({"CDS_MRC_CODES_FILE": str(good)}).mrc_codes_file == good


def test_legacy_and_site_code_system_are_accepted():
    """The old example.org code stays accepted; 'mrc-<movement>' of the site system is read."""
    codes = MrcCodes(code_system=SITE)
    assert codes.lookup(concept(LOCAL, "mrc-ankle-dorsiflexion")).movement == "ankle-dorsiflexion"
    assert codes.lookup(concept(SITE, "mrc-knee-extension")).movement == "knee-extension"
    assert MrcCodes().lookup(concept(SITE, "mrc-knee-extension")) is None


def _site_grade(value: dict, code: str = "mrc-ankle-dorsiflexion", side_text: str = "L ankle"):
    return {
        "resourceType": "Observation",
        "id": "site-mrc",
        "status": "final",
        "code": {"coding": [{"system": SITE, "code": code}], "text": "Dorsiflexion MRC"},
        "subject": {"reference": f"Patient/{PID}"},
        "effectiveDateTime": "2025-06-12T09:00:00Z",
        "bodySite": {"text": side_text},
        **value,
    }


def test_site_code_with_text_side_triggers():
    """A site-coded '2/5' with bodySite text 'L ankle' is a left Observation trigger (info)."""
    card = card_of(
        im_procedure(),
        _site_grade({"valueString": "2/5"}),
        policy=Policy(mrc_code_system=SITE),
    )
    assert card is not None and card["indicator"] == "info"
    assert card_of(im_procedure(), _site_grade({"valueString": "2/5"})) is None


def test_other_movements_do_not_trigger_foot_drop():
    """A weak knee extension is named for other pathways, never a foot-drop trigger."""
    grade = _site_grade({"valueInteger": 1}, code="mrc-knee-extension")
    assert card_of(im_procedure(), grade, policy=Policy(mrc_code_system=SITE)) is None


# --- R1a episodes ----------------------------------------------------------------------------


def test_sequela_codes_never_start_an_attribution():
    """S74.02XS after a gluteal injection is no trigger for a patient-view attribution card."""
    assert card_of(condition("S74.02XS"), im_procedure()) is None


def test_pre_existing_same_side_event_absorbs_later_codes():
    """A left foot drop from before the injection makes a later G57.32 the same event."""
    old = condition(onset="2025-05-01")
    assert card_of(old, condition("G57.32"), im_procedure()) is None


def test_other_side_pre_existing_event_does_not_block():
    """A right foot drop from before the injection never blocks the left side."""
    old_right = condition("M21.371", onset="2025-05-01")
    card = card_of(old_right, condition(), im_procedure())
    assert card is not None and card["indicator"] == "warning"


def test_link_code_far_from_the_pair_is_ignored():
    """T80.89XA dated a year earlier does not open the late (14-90 d) window."""
    late = condition(onset="2025-07-05T09:00:00Z")
    far = condition("T80.89XA", onset="2024-06-01")
    now = datetime(2025, 7, 8, tzinfo=UTC)
    assert card_of(late, far, im_procedure(), now=now) is None
    near = condition("T80.89XA", onset="2025-06-12")
    assert card_of(late, near, im_procedure(), now=now)["indicator"] == "info"


# --- R4a indication --------------------------------------------------------------------------


def test_reason_reference_to_sciatica_competes():
    """Sciatica given as the injection's reason competes (info), even with an onset after it."""
    sciatica = condition("M54.32", onset="2025-06-11T09:00:00Z", rid="sciatica")
    ma = {
        "resourceType": "MedicationAdministration",
        "id": "ma1",
        "status": "completed",
        "subject": {"reference": f"Patient/{PID}"},
        "medicationCodeableConcept": {"text": "Diclofenac 75 mg"},
        "effectiveDateTime": "2025-06-11T08:30:00Z",
        "dosage": {
            "route": concept(
                "http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration", "IM"
            ),
            "site": concept("http://terminology.hl7.org/CodeSystem/v3-ActSite", "LG"),
        },
        "reasonReference": [{"reference": "Condition/sciatica"}],
    }
    card = card_of(condition(), ma, sciatica)
    assert card is not None and card["indicator"] == "info"
    assert card["detail"].startswith("**Lead with EMG/NCS**")
    page = page_text(condition(), ma, sciatica)  # R9a: the lead's why is on the app page
    assert "L5" in page or "radiculopathy" in page
    ma.pop("reasonReference")
    assert card_of(condition(), ma, sciatica)["indicator"] == "warning"


def test_hip_lead_does_not_talk_about_l5():
    """The EMG-first lead names the competing cause's own reason (hip), not an L5 root."""
    hip = condition("Z96.642", onset="2025-06-01")
    card = card_of(condition(), im_procedure(), hip)
    lead = card["detail"].split("\n", 1)[0]
    assert "hip" in lead.lower() and "L5" not in lead


# --- R8a / R8b -------------------------------------------------------------------------------


def test_recovered_card_has_no_suggestions():
    """Latest grade 5/5 after the onset: info 'recovered' card without suggestions."""
    now = datetime(2025, 11, 1, tzinfo=UTC)
    card = card_of(
        condition(),
        im_procedure(),
        mrc(1, "2025-06-20T09:00:00Z"),
        mrc(5, "2025-10-20T09:00:00Z"),
        now=now,
    )
    assert card["indicator"] == "info" and "suggestions" not in card
    assert card["summary"].startswith("Foot drop recovered")


def test_other_side_afo_does_not_suppress():
    """An AFO documented for the right leg does not suppress the left AFO."""
    afo = {**device_request(authored="2025-06-12T10:00:00Z"), "note": [{"text": "R AFO"}]}
    assert "AFO" in suggestion_keys(card_of(condition(), im_procedure(), afo))


def test_past_due_date_reads_now():
    """A computed date already past is 'now (due since ...)', never a future action."""
    now = datetime(2025, 8, 1, tzinfo=UTC)
    assert due_text(date(2025, 7, 2), now) == "now (due since 2025-07-02)"
    assert due_text(date(2025, 8, 2), now) == "on or after 2025-08-02"


def test_summary_is_cut_at_a_word():
    """A long summary is cut at a word boundary, never mid-word."""
    text = "word " * 40
    clipped = clip_summary(text)
    assert len(clipped) < 140 and clipped.endswith("word…")


def test_new_event_after_the_old_one_abated_is_evaluated():
    """An event present at the injection but abated later does not absorb a trigger after that."""
    now = datetime(2025, 7, 8, tzinfo=UTC)
    old = condition(
        onset="2025-05-01", clinical="resolved", abatementDateTime="2025-06-20", rid="old"
    )
    new = condition(onset="2025-07-05T09:00:00Z", rid="new")
    inj = im_procedure(rid="inj")
    link = condition("T80.89XA", recorded="2025-07-05T10:00:00Z")
    link["evidence"] = [{"detail": [{"reference": "Procedure/inj"}]}]
    card = card_of(old, new, inj, link, now=now)
    assert card is not None and card["indicator"] == "info"
    during = condition(onset="2025-06-15T09:00:00Z", rid="during")
    assert card_of(old, during, inj, now=datetime(2025, 6, 18, tzinfo=UTC)) is None

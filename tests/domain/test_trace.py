"""The rule trace (issue 12): what the app page shows, built by the same call as the card."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from cds_service.domain.engine import evaluate_patient_view
from cds_service.domain.policy import DEFAULT_POLICY, Policy
from cds_service.domain.trace import Explanation
from tests.fixture_support import explain_fixture

from .factories import ROOT, content
from .test_fixture_scenarios import flatten

FIXTURES = sorted((ROOT / "fixtures" / "patient-view").glob("*.json"))
ISO_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
TOP_KEYS = {
    "service",
    "evaluated_at",
    "today",
    "time_zone",
    "outcome",
    "resources",
    "steps",
    "red_flags",
    "competing_causes",
    "thresholds",
    "ignored",
    "citations",
    "page_notes",
    "plan",
    "timeline",
}


def fixture(prefix: str) -> dict[str, Any]:
    (path,) = [p for p in FIXTURES if p.name.startswith(prefix + "-")]
    return json.loads(path.read_text("utf-8"))


def explain(data: dict[str, Any], policy: Policy = DEFAULT_POLICY) -> Explanation:
    explained: Explanation = explain_fixture(data, policy)
    return explained


def roles(trace: dict[str, Any]) -> dict[str, str]:
    return {r["reference"]: r["role"] for r in trace["resources"]}


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_trace_contract_and_same_cards_as_the_engine(path: Path) -> None:
    """Every fixture: the trace has the contract's keys, is JSON, and the card is the engine's."""
    data = json.loads(path.read_text("utf-8"))
    explained = explain(data)
    request = data["request"]
    now = datetime.fromisoformat(data["evalTime"].replace("Z", "+00:00"))
    cards = evaluate_patient_view(
        request["context"],
        flatten(request.get("prefetch")),
        content(),
        now,
        request["hookInstance"],
    ).cards
    assert explained.cards == cards
    trace = json.loads(json.dumps(explained.trace))  # JSON-ready
    assert set(trace) >= TOP_KEYS
    assert trace["outcome"]["card"] == bool(cards)
    if cards:
        assert trace["outcome"]["summary"] == cards[0]["summary"]
        assert trace["outcome"]["indicator"] == cards[0]["indicator"]
    assert ISO_DAY.match(trace["today"]) and trace["timeline"]["today"] == trace["today"]
    assert [f["pathway"] for f in trace["red_flags"]] == ["R7a", "R7b", "R7c", "R7d", "R7e", "R7f"]
    for row in trace["resources"]:
        assert row["role"] in {
            "trigger",
            "injection",
            "grade",
            "order",
            "competing_cause",
            "red_flag",
            "risk",
            "other",
        }
        assert row["reference"].startswith(row["type"] + "/")
    for grade in trace["timeline"]["grades"]:
        assert grade["side"] in {"left", "right", "bilateral", "unknown"}
        assert grade["muscle"] in {"dorsiflexion", "eversion", "plantar_flexion", "other"}
        assert 0 <= grade["value"] <= 5
    names = [
        e["resource"].get("name")
        for v in (request.get("prefetch") or {}).values()
        if isinstance(v, dict)
        for e in (v.get("entry") or [{"resource": v}])
        if isinstance(e, dict) and isinstance(e.get("resource"), dict)
        if e["resource"].get("resourceType") == "Patient"
    ]
    text = json.dumps(trace)
    for name in (n for ns in names if ns for n in ns):
        for part in [*name.get("given", []), name.get("family", "")]:
            assert not part or part not in text, "no patient names in the trace"


def test_classic_case_roles_steps_plan_and_milestones() -> None:
    """01: trigger and injection by reference, the R3-R6 steps, plan due dates, milestone dates."""
    trace = explain(fixture("01")).trace
    by_ref = roles(trace)
    assert by_ref["Condition/pv01-cond-footdrop"] == "trigger"
    assert [r for r, role in by_ref.items() if role == "injection"]
    steps = {s["rule"]: s for s in trace["steps"]}
    assert steps["R3"]["result"] == "gluteal"
    assert steps["R4"]["result"] == "immediate"
    assert steps["R5"]["result"] == "same side"
    assert steps["R6"]["result"] == "none"
    assert trace["outcome"]["kind"] == "attribution"
    plan = {p["order"]: p for p in trace["plan"]}
    assert {k: p["status"] for k, p in plan.items()} == dict.fromkeys(
        ("AFO", "PT_REFERRAL", "EMG_NCS", "FOLLOW_UP"), "suggested"
    )
    assert plan["EMG_NCS"]["due"] == "2025-07-02"  # the fixture's emgNotBefore
    timeline = trace["timeline"]
    assert timeline["anchor"] == "2025-06-11"
    milestones = {m["key"]: m for m in timeline["milestones"]}
    assert milestones["emg_window"]["start"] == "2025-07-02"  # day 21
    assert (milestones["follow_up"]["start"], milestones["follow_up"]["end"]) == (
        "2025-07-09",
        "2025-07-23",
    )
    assert milestones["decision"]["start"] == "2025-09-09"  # 3 months (90 days)
    assert milestones["nerve_surgery_window"]["end"] == "2025-12-10"  # about 6 months
    assert milestones["tendon_transfer"]["start"] == "2026-06-11"  # about 12 months
    assert timeline["injections"][0]["side"] == "left"
    # the sentences R9a moved off the card are on the page
    assert any("short head of biceps femoris" in n for n in trace["page_notes"])
    assert not any("short head" in c["detail"] for c in explain(fixture("01")).cards)


def test_competing_cause_decisive_and_named_causes_not_decisive() -> None:
    """09: the lumbar radiculopathy is decisive; 46: the polyneuropathy is named, not decisive."""
    radicular = explain(fixture("09")).trace
    (cause,) = [c for c in radicular["competing_causes"] if c["decisive"]]
    assert cause["reference"] == "Condition/pv09-cond-radic"
    assert roles(radicular)["Condition/pv09-cond-radic"] == "competing_cause"
    named = explain(fixture("46")).trace["competing_causes"]
    assert named and not any(c["decisive"] for c in named)
    assert any("polyneuropathy" in c["why"].lower() for c in named)


def test_red_flags_checked_and_routine_orders_held() -> None:
    """16: bilateral and cauda equina fire; the others are checked and reported as not found."""
    trace = explain(fixture("16")).trace
    fired = {f["pathway"] for f in trace["red_flags"] if f["fired"]}
    assert fired == {"R7d", "R7e"}
    assert trace["outcome"] == {
        "card": True,
        "kind": "red_flag",
        "indicator": "critical",
        "summary": trace["outcome"]["summary"],
    }
    statuses = {p["order"]: p["status"] for p in trace["plan"]}
    assert statuses["URGENT_NEUROSURGERY"] == "suggested"
    assert all(statuses[k] == "held" for k in ("AFO", "PT_REFERRAL", "EMG_NCS", "FOLLOW_UP"))
    assert "red_flag" in roles(trace).values()
    rules = {t["rule"] for t in trace["thresholds"]}
    assert any("R7" in r for r in rules) and "R8c" not in rules


@pytest.mark.parametrize("prefix", ["10", "11"])
def test_ignored_entered_in_error_and_refuted(prefix: str) -> None:
    """10 / 11: a foot drop entered in error or refuted: no card, listed as ignored."""
    explained = explain(fixture(prefix))
    assert explained.cards == []
    trace = explained.trace
    assert trace["outcome"]["kind"] == "none"
    ignored = {i["reference"]: i["why"] for i in trace["ignored"]}
    assert "R0" in ignored[f"Condition/pv{prefix}-cond-footdrop"]


def test_untied_link_code_is_named_as_ignored() -> None:
    """109: a T80.89XA far from the injection is not a link (R1a) and is named on the page."""
    ignored = {i["reference"]: i["why"] for i in explain(fixture("109")).trace["ignored"]}
    assert "R1a" in ignored["Condition/pv109-cond-t80-old"]
    tied = explain(fixture("06")).trace["ignored"]
    assert not any("R1a" in i["why"] for i in tied)


def test_orders_on_file_and_grades_on_the_timeline() -> None:
    """08: AFO and PT already ordered, with references; 131: grades 2 then 4+ (plotted 4.33)."""
    plan = explain(fixture("08")).trace["plan"]
    on_file = {p["order"]: p for p in plan if p["status"] == "already_ordered"}
    assert set(on_file) == {"AFO", "PT_REFERRAL"}
    assert all(p["reference"] and "/" in p["reference"] for p in on_file.values())
    recovered = explain(fixture("131")).trace
    assert recovered["outcome"]["kind"] == "recovered"
    grades = [(g["grade"], g["value"]) for g in recovered["timeline"]["grades"]]
    assert grades[-1] == ("4+", 4.33)
    assert recovered["timeline"]["onset"]["reference"]


def test_thresholds_and_citations_come_from_the_content() -> None:
    """Thresholds are the content's values; citations are its evidence ids plus the guideline."""
    trace = explain(fixture("01")).trace
    values = {t["name"]: t["value"] for t in trace["thresholds"]}
    limits = content().thresholds
    assert values["emg_not_before"] == f"{limits.emg_not_before.days} days"
    assert values["immediate_window"] == "48 hours"
    ids = {c["id"] for c in trace["citations"]}
    assert "guideline" in ids and "E3" in ids
    assert all(c["text"] for c in trace["citations"])


def test_time_zone_assumptions_name_the_site_zone() -> None:
    """R0a: the site zone is named, and the evaluation time is written in it."""
    trace = explain(fixture("01"), Policy(site_time_zone="Europe/London")).trace
    assert trace["time_zone"]["zone"] == "Europe/London"
    assert any("Europe/London" in a for a in trace["time_zone"]["assumptions"])
    assert trace["evaluated_at"].endswith("+01:00")  # BST on the fixture's July date


def test_app_link_context_names_references_only() -> None:
    """The card's SMART link: appContext holds the service, kind, trigger and injection refs."""
    explained = explain(fixture("01"), Policy(app_launch_url="https://cds.example/app/launch"))
    (link,) = explained.cards[0]["links"]
    context = json.loads(link["appContext"])
    assert context == {
        "service": "footdrop-im-injection",
        "kind": "attribution",
        "trigger": "Condition/pv01-cond-footdrop",
        "injections": [
            r["reference"] for r in explained.trace["resources"] if r["role"] == "injection"
        ],
    }

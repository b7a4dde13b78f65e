"""The rule trace the page renders, recomputed from FHIR data with the engine.

The engine's own trace (``cds_service.domain.trace.explain_patient_view``) is used when it is
there, so page and card come from one function. Without it this module builds the same shape
from the engine's facts and its card: the page then shows less evidence, never different facts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from cds_service.domain.content import Content
from cds_service.domain.engine import Policy, evaluate_patient_view
from cds_service.domain.facts import extract_facts

__all__ = ["MILESTONES", "explain"]

#: The plan's milestones after onset (clinical.md R8/R9a): key, label, start day, end day.
MILESTONES: tuple[tuple[str, str, int, int | None], ...] = (
    ("emg", "EMG/NCS window", 21, None),
    ("follow_up", "Follow-up", 28, 42),
    ("decision", "Three-month decision", 90, None),
    ("nerve_surgery", "Nerve-surgery window", 90, 180),
    ("tendon_transfer", "Tendon transfer", 365, None),
)


def explain(
    context: Mapping[str, Any],
    resources: Sequence[Mapping[str, Any]],
    content: Content,
    now: datetime,
    hook_instance: str,
    policy: Policy,
) -> dict[str, Any]:
    """The trace dict (see the page's contract): the engine's, or one built from its facts."""
    try:
        from cds_service.domain.trace import explain_patient_view  # type: ignore[import-not-found]
    except ImportError:
        return _fallback(context, resources, content, now, hook_instance, policy)
    explanation = explain_patient_view(context, resources, content, now, hook_instance, policy)
    trace: dict[str, Any] = explanation.trace
    return trace


def _day(moment: datetime | None) -> str | None:
    return moment.date().isoformat() if moment is not None else None


def _fallback(
    context: Mapping[str, Any],
    resources: Sequence[Mapping[str, Any]],
    content: Content,
    now: datetime,
    hook_instance: str,
    policy: Policy,
) -> dict[str, Any]:
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    now = now.astimezone(policy.zone)
    patient = context.get("patientId")
    facts = extract_facts(
        resources, content, patient if isinstance(patient, str) else "", now,
        site_zone=policy.zone, mrc=policy.mrc(content),
    )  # fmt: skip
    cards = evaluate_patient_view(context, resources, content, now, hook_instance, policy).cards
    card = cards[0] if cards else None
    triggers = [c for c in facts.conditions if c.current and not c.refuted and c.matches]
    foot_drop = [c for c in triggers if any("foot" in v for v in c.valuesets)] or triggers
    onset = min(foot_drop, key=lambda c: c.onset_lo or c.onset_hi or now) if foot_drop else None
    anchor_time = (onset.onset_lo or onset.onset_hi) if onset else None
    if anchor_time is None and facts.injections:
        anchor_time = facts.injections[-1].time
    anchor = anchor_time.date() if anchor_time else None
    resources_used = [
        {"reference": i.ref, "type": i.kind, "date": _day(i.time), "role": "injection",
         "note": i.label}
        for i in facts.injections
    ]  # fmt: skip
    if onset is not None:
        resources_used.insert(0, {"reference": onset.ref, "type": "Condition",
                                  "date": _day(onset.onset_lo or onset.onset_hi),
                                  "role": "trigger", "note": onset.label})  # fmt: skip
    resources_used += [
        {"reference": g.ref, "type": "Observation", "date": _day(g.time), "role": "grade",
         "note": f"MRC {g.grade}{g.sub}/5 {g.movement} {g.side or ''}".strip()}
        for g in facts.muscle_grades
    ]  # fmt: skip
    resources_used += [
        {"reference": o.ref, "type": o.resource, "date": _day(o.authored or o.occurrence),
         "role": "order", "note": o.label}
        for o in facts.orders
    ]  # fmt: skip
    plan = [
        {"order": s.get("label", ""), "label": s.get("label", ""), "status": "suggested",
         "due": None, "window_end": None, "reference": None}
        for s in (card or {}).get("suggestions", [])
    ]  # fmt: skip
    plan += [
        {"order": o.label, "label": o.label, "status": "done" if o.status == "completed"
         else "already_ordered", "due": _day(o.occurrence), "window_end": _day(o.occurrence_end),
         "reference": o.ref}
        for o in facts.orders
    ]  # fmt: skip
    indicator = (card or {}).get("indicator")
    return {
        "service": "footdrop-im-injection",
        "evaluated_at": now.isoformat(),
        "today": now.date().isoformat(),
        "time_zone": {"zone": policy.site_time_zone, "assumptions": []},
        "outcome": {
            "card": card is not None,
            "kind": ("red_flag" if indicator == "critical" else "attribution") if card else "none",
            "indicator": indicator,
            "summary": (card or {}).get("summary", "No foot-drop card for this patient."),
        },
        "resources": resources_used,
        "steps": [],
        "red_flags": [],
        "competing_causes": [],
        "thresholds": [
            {"name": name, "value": f"{value}", "rule": ""}
            for name, value in sorted(vars(content.thresholds).items())
            if isinstance(value, int | float | timedelta) and not isinstance(value, bool)
        ],
        "ignored": [],
        "citations": [],
        "page_notes": [(card or {}).get("detail", "")] if card else [],
        "plan": plan,
        "timeline": {
            "anchor": anchor.isoformat() if anchor else None,
            "today": now.date().isoformat(),
            "injections": [
                {"date": _day(i.time), "site": i.site_label or "site not recorded",
                 "side": i.site_side, "reference": i.ref}
                for i in facts.injections
            ],  # fmt: skip
            "onset": {"earliest": _day(onset.onset_lo), "latest": _day(onset.onset_hi),
                      "reference": onset.ref} if onset and (onset.onset_lo or onset.onset_hi)
            else None,  # fmt: skip
            "grades": [
                {"date": _day(g.time), "side": g.side, "muscle": g.movement,
                 "grade": f"{g.grade}{g.sub}", "value": g.grade, "reference": g.ref}
                for g in facts.muscle_grades
            ],  # fmt: skip
            "orders": [
                {"kind": o.label, "date": _day(o.authored or o.occurrence), "status": o.status,
                 "reference": o.ref}
                for o in facts.orders
            ],  # fmt: skip
            "milestones": _milestones(anchor),
        },
    }


def _milestones(anchor: date | None) -> list[dict[str, Any]]:
    if anchor is None:
        return []
    return [
        {
            "key": key,
            "label": label,
            "start": (anchor + timedelta(days=start)).isoformat(),
            "end": (anchor + timedelta(days=end)).isoformat() if end else None,
        }
        for key, label, start, end in MILESTONES
    ]

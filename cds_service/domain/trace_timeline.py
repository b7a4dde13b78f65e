"""The trace's timeline: injections, the onset interval, MRC grades per side and muscle, orders,
and the plan's milestones from its anchor (clinical.md §2.2 R8: EMG/NCS from day 21, follow-up at
4–6 weeks, the surgical decision at 3 months, the nerve-surgery window 3–6 months, tendon transfer
at about 12 months). Plain data for the app page's plot.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cds_service.domain.facts import GradeFact

if TYPE_CHECKING:
    from cds_service.domain.trace_parts import TraceInput

__all__ = ["day", "grade_value", "timeline"]

#: R8 milestones not in thresholds.yaml: the nerve-surgery window closes about 6 months in.
NERVE_SURGERY_WINDOW_END = timedelta(days=182)
_MUSCLES = {
    "ankle-dorsiflexion": "dorsiflexion",
    "ankle-eversion": "eversion",
    "ankle-plantarflexion": "plantar_flexion",
}
_ORDER_KINDS = (
    ("afo-existing", "AFO"),
    ("pt-existing", "PT_REFERRAL"),
    ("emg-referral-existing", "EMG_NCS"),
    ("emg-study", "EMG_NCS"),
    ("follow-up-existing", "FOLLOW_UP"),
    ("nerve-surgery-existing", "SURGICAL_REFERRAL"),
    ("orthopaedic-existing", "SURGICAL_ORTHOPAEDIC"),
    ("neurology-existing", "URGENT_NEUROLOGY"),
    ("paediatric-neurology-existing", "URGENT_PAEDIATRIC_NEUROLOGY"),
    ("public-health-existing", "URGENT_PUBLIC_HEALTH"),
)


def day(moment: datetime | date | None) -> str | None:
    """``YYYY-MM-DD`` of a date or of a datetime in its own (site) zone; None stays None."""
    if moment is None:
        return None
    return (moment.date() if isinstance(moment, datetime) else moment).isoformat()


def grade_value(g: GradeFact) -> float:
    """An MRC grade as a number for plotting: 4- = 3.67, 4 = 4, 4+ = 4.33 (R8a order)."""
    return round(g.grade + {"+": 1 / 3, "-": -1 / 3}.get(g.sub, 0.0), 2)


def _order_kind(valuesets: frozenset[str]) -> str:
    for valueset, kind in _ORDER_KINDS:
        if valueset in valuesets:
            return kind
    return "OTHER"


def timeline(source: TraceInput) -> dict[str, Any]:
    facts, a, now = source.facts, source.assessment, source.now
    t = source.content.thresholds
    anchor = a.anchor if a is not None else None
    onset: dict[str, Any] | None = None
    if a is not None:
        onset = {
            "earliest": day(a.trigger.lo),
            "latest": day(a.trigger.hi),
            "reference": a.trigger.ref or None,
        }
    orders = [
        {
            "kind": _order_kind(o.valuesets),
            "date": day(o.occurrence_end or o.occurrence or o.authored),
            "status": o.status or "unknown",
            "reference": o.ref,
        }
        for o in facts.orders
    ]
    orders += [
        {
            "kind": "FOLLOW_UP",
            "date": day(ap.start),
            "status": ap.status or "unknown",
            "reference": ap.ref,
        }
        for ap in facts.appointments
        if ap.follow_up
    ]
    milestones: list[dict[str, Any]] = []
    if anchor is not None:
        day0 = anchor.date()
        milestones = [
            {
                "key": "emg_window",
                "label": "EMG/NCS from day 21",
                "start": day(day0 + t.emg_not_before),
                "end": None,
            },
            {
                "key": "follow_up",
                "label": "Follow-up at 4–6 weeks",
                "start": day(day0 + t.follow_up_from),
                "end": day(day0 + t.follow_up_to),
            },
            {
                "key": "decision",
                "label": "Surgical decision at 3 months",
                "start": day(day0 + t.surgical_decision),
                "end": None,
            },
            {
                "key": "nerve_surgery_window",
                "label": "Nerve surgery window 3–6 months",
                "start": day(day0 + t.surgical_decision),
                "end": day(day0 + NERVE_SURGERY_WINDOW_END),
            },
            {
                "key": "tendon_transfer",
                "label": "Tendon transfer at about 12 months",
                "start": day(day0 + t.tendon_transfer),
                "end": None,
            },
        ]
    return {
        "anchor": day(anchor),
        "today": day(now),
        "injections": [
            {
                "date": day(i.time),
                "site": i.site_label or i.site_class or "not documented",
                "side": i.site_side or "unknown",
                "reference": i.ref,
            }
            for i in sorted(facts.injections, key=lambda i: i.time)
        ],
        "onset": onset,
        "grades": [
            {
                "date": day(g.time),
                "side": g.side or "unknown",
                "muscle": _MUSCLES.get(g.movement, "other"),
                "grade": g.text.removesuffix("/5"),
                "value": grade_value(g),
                "reference": g.ref,
            }
            for g in sorted(facts.muscle_grades, key=lambda g: g.time)
        ],
        "orders": orders,
        "milestones": milestones,
    }

"""R8: which orders to suggest, which are already on file (de-duplication), escalation stages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from cds_service.domain.content import Thresholds
from cds_service.domain.facts import Facts, GradeFact, OrderFact
from cds_service.domain.pathways.base import RedFlag
from cds_service.domain.rules import Assessment

OPEN = frozenset({"active", "draft", "on-hold"})
FUTURE_APPOINTMENT = frozenset({"proposed", "pending", "booked"})
URGENT_PRIORITIES = frozenset({"stat", "asap", "urgent"})
_URGENT_SETS = {
    "URGENT_NEUROSURGERY": "nerve-surgery-existing",
    "URGENT_ORTHOPAEDIC": "orthopaedic-existing",
    "URGENT_NEUROLOGY": "neurology-existing",
    "URGENT_PAEDIATRIC_NEUROLOGY": "paediatric-neurology-existing",
    "URGENT_PUBLIC_HEALTH": "public-health-existing",
}


@dataclass(frozen=True)
class Existing:
    """An order already on file, named in the card instead of a suggestion."""

    what: str  # order id (AFO, PT_REFERRAL, EMG_NCS, FOLLOW_UP, SURGICAL_*, URGENT_*)
    ref: str
    label: str
    when: datetime | None
    status: str | None


@dataclass(frozen=True)
class Plan:
    suggest: tuple[str, ...]  # order ids, in card order
    existing: tuple[Existing, ...]
    emg_not_before: date | None = None
    emg_date: date | None = None
    baseline_studies: tuple[OrderFact, ...] = ()
    ankle_braces: tuple[OrderFact, ...] = ()
    stage: str | None = None  # SURGICAL_EARLY | SURGICAL_DECISION | TENDON_TRANSFER
    grades: tuple[GradeFact, ...] = ()


def _day(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _on_file(order: OrderFact, since: datetime) -> bool:
    """Open (active/draft/on-hold), or completed and authored on or after ``since``'s date."""
    if order.status in OPEN:
        return True
    return (
        order.status == "completed" and order.authored is not None and order.authored >= _day(since)
    )


def post_onset_grades(facts: Facts, assessment: Assessment) -> list[GradeFact]:
    """Same-side dorsiflexion grades taken after the onset, oldest first."""
    trig = assessment.trigger
    floor = max(assessment.injection.time, trig.lo) if trig.lo else assessment.injection.time
    side = trig.side
    return sorted(
        (
            g
            for g in facts.grades
            if g.time >= floor and (side in (None, "bilateral") or g.side in (side, None))
        ),
        key=lambda g: g.time,
    )


def plan_attribution(facts: Facts, assessment: Assessment, now: datetime, t: Thresholds) -> Plan:
    """Suggestions for a non-red-flag card, with de-duplication (R8)."""
    inj_time = assessment.injection.time
    orders = facts.orders
    existing: list[Existing] = []
    suggest: list[str] = []

    def found(what: str, order: OrderFact) -> None:
        existing.append(Existing(what, order.ref, order.label, order.authored, order.status))

    # AFO
    afo = [
        o
        for o in orders
        if o.resource == "DeviceRequest"
        and ("afo-existing" in o.valuesets or o.text_afo)
        and _on_file(o, inj_time)
    ]
    braces = tuple(
        o
        for o in orders
        if o.resource == "DeviceRequest" and "ankle-brace" in o.valuesets and not afo
    )
    if afo:
        found("AFO", afo[0])
    else:
        suggest.append("AFO")
    # PT
    pt = [
        o
        for o in orders
        if o.resource == "ServiceRequest" and "pt-existing" in o.valuesets and _on_file(o, inj_time)
    ]
    if pt:
        found("PT_REFERRAL", pt[0])
    else:
        suggest.append("PT_REFERRAL")
    # EMG/NCS
    anchor = assessment.anchor
    not_before = (anchor + t.emg_not_before).date()
    today = now.date()
    qualifying: OrderFact | None = None
    baseline: list[OrderFact] = []
    for o in orders:
        if o.resource == "Procedure" and "emg-study" in o.valuesets and o.occurrence is not None:
            if o.occurrence.date() >= not_before and now - o.occurrence <= t.emg_recent:
                qualifying = qualifying or o
            elif o.occurrence.date() < not_before:
                baseline.append(o)
        elif o.resource == "ServiceRequest" and o.valuesets & {
            "emg-referral-existing",
            "emg-study",
        }:
            if o.authored is not None and o.authored < _day(inj_time):
                baseline.append(o)
                continue
            if o.occurrence is not None and o.occurrence.date() < not_before:
                baseline.append(o)
                continue
            if o.status in OPEN or (
                o.status == "completed"
                and o.occurrence is not None
                and now - o.occurrence <= t.emg_recent
            ):
                qualifying = qualifying or o
    if qualifying is not None:
        existing.append(
            Existing(
                "EMG_NCS",
                qualifying.ref,
                qualifying.label,
                qualifying.occurrence or qualifying.authored,
                qualifying.status,
            )
        )
    else:
        suggest.append("EMG_NCS")
    # follow-up
    follow = [
        o
        for o in orders
        if o.resource == "ServiceRequest"
        and "follow-up-existing" in o.valuesets
        and o.status in OPEN
    ]
    appointments = [
        a
        for a in facts.appointments
        if a.status in FUTURE_APPOINTMENT
        and (a.start is None or a.start >= now)
        and (a.follow_up or assessment.trigger.ref in a.reason_refs)
    ]
    if follow:
        found("FOLLOW_UP", follow[0])
    elif appointments:
        a = appointments[0]
        existing.append(Existing("FOLLOW_UP", a.ref, "Follow-up appointment", a.start, a.status))
    else:
        suggest.append("FOLLOW_UP")
    # escalation
    grades = post_onset_grades(facts, assessment)
    stage = escalation_stage(assessment, grades, now, t)
    if stage is not None:
        dedup_set = (
            "orthopaedic-existing" if stage == "TENDON_TRANSFER" else "nerve-surgery-existing"
        )
        on_file = [
            o
            for o in orders
            if o.resource == "ServiceRequest" and dedup_set in o.valuesets and _on_file(o, inj_time)
        ]
        if on_file:
            found(stage, on_file[0])
        else:
            suggest.insert(0, stage)  # at this stage the escalation leads the plan
    if assessment.lead is not None and "EMG_NCS" in suggest:
        suggest.remove("EMG_NCS")
        suggest.insert(0, "EMG_NCS")
    return Plan(
        suggest=tuple(suggest),
        existing=tuple(existing),
        emg_not_before=not_before,
        emg_date=max(not_before, today),
        baseline_studies=tuple(baseline),
        ankle_braces=braces,
        stage=stage,
        grades=tuple(grades),
    )


def escalation_stage(
    assessment: Assessment, grades: Sequence[GradeFact], now: datetime, t: Thresholds
) -> str | None:
    """SURGICAL_REFERRAL stage by time since the anchor and MRC grades (R8), or None."""
    elapsed = now - assessment.anchor
    still_current = (
        assessment.trigger.condition is not None and assessment.trigger.condition.current
    )
    latest = grades[-1] if grades else None
    if elapsed >= t.tendon_transfer:
        if (latest is not None and latest.grade <= t.no_recovery_max_grade) or (
            latest is None and still_current
        ):
            return "TENDON_TRANSFER"
        return None
    if elapsed >= t.surgical_decision:
        if latest is None:
            return "SURGICAL_DECISION" if still_current else None
        first = grades[0]
        no_recovery = latest.grade <= t.no_recovery_max_grade or (
            latest.grade <= 3 and latest.grade - first.grade < t.recovery_min_gain
        )
        return "SURGICAL_DECISION" if no_recovery else None
    if elapsed >= t.early_referral:
        late = [g for g in grades if g.time >= assessment.anchor + t.early_referral]
        if late and late[-1].grade <= t.early_referral_max_grade:
            return "SURGICAL_EARLY"
    return None


def plan_red_flags(facts: Facts, flags: Sequence[RedFlag], now: datetime, t: Thresholds) -> Plan:
    """The union of the flags' URGENT_EVAL orders (one per code), unless a same-code urgent
    request was authored in the last 24 h; every routine suggestion is held."""
    suggest: list[str] = []
    existing: list[Existing] = []
    for order in (o for flag in flags for o in flag.orders):
        if order in suggest or any(e.what == order for e in existing):
            continue
        dedup_set = _URGENT_SETS[order]
        recent = [
            o
            for o in facts.orders
            if o.resource == "ServiceRequest"
            and dedup_set in o.valuesets
            and o.status in OPEN
            and o.priority in URGENT_PRIORITIES
            and o.authored is not None
            and now - o.authored <= t.urgent_dedup
        ]
        if recent:
            o = recent[0]
            existing.append(Existing(order, o.ref, o.label, o.authored, o.status))
        else:
            suggest.append(order)
    return Plan(suggest=tuple(suggest), existing=tuple(existing))

"""R8: which orders to suggest, which are already on file (de-duplication), escalation stages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from cds_service.domain.content import Thresholds
from cds_service.domain.dedup import afo_side_matches, counts, suppresses
from cds_service.domain.facts import Facts, GradeFact, OrderFact
from cds_service.domain.pathways.base import RedFlag
from cds_service.domain.recovery import (
    Recovery,
    assess_recovery,
    escalation_stage,
    needs_regrade,
)
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
    side: str | None = None  # R8b: the AFO's side, when stated


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
    recovery: Recovery | None = None  # R8a
    regrade: bool = False  # R8a: escalation due by time, no usable grade
    afo_side_unknown: bool = False  # R8b: an AFO on file without a stated side
    repeat_emg_held: bool = False  # R8a: last study > 90 d old, but recovery is documented


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


def plan_attribution(
    facts: Facts,
    assessment: Assessment,
    now: datetime,
    t: Thresholds,
    *,
    young_child: bool = False,
) -> Plan:
    """Suggestions for a non-red-flag card, with recovery (R8a) and de-duplication (R8b)."""
    inj_time = assessment.injection.time
    orders = facts.orders
    existing: list[Existing] = []
    suggest: list[str] = []
    side = assessment.trigger.side
    grades = post_onset_grades(facts, assessment)
    condition = assessment.trigger.condition
    recovery = assess_recovery(
        grades,
        assessment.anchor,
        now,
        t,
        young_child=young_child,
        condition_current=condition is not None and condition.current,
    )
    if recovery.state == "recovered":
        return Plan(suggest=(), existing=(), grades=tuple(grades), recovery=recovery)

    def found(what: str, order: OrderFact) -> None:
        when = order.occurrence_end or order.authored
        existing.append(Existing(what, order.ref, order.label, when, order.status, order.side))

    def newest_first(items: list[OrderFact]) -> list[OrderFact]:
        return sorted(items, key=lambda o: (o.authored is None, -(o.authored or now).timestamp()))

    # AFO (R8b: status, recency, side)
    afo_side_unknown = False
    afo: OrderFact | None = None
    for o in newest_first(
        [
            o
            for o in orders
            if o.resource == "DeviceRequest" and ("afo-existing" in o.valuesets or o.text_afo)
        ]
    ):
        if not suppresses(
            o, now, inj_time, completed_within=t.afo_completed_recent, draft_recent=t.draft_recent
        ):
            continue
        same = afo_side_matches(o, side, inj_time)
        if same is False:
            continue
        afo = o
        afo_side_unknown = same is None and side in ("left", "right")
        break
    braces = tuple(
        o
        for o in orders
        if o.resource == "DeviceRequest" and "ankle-brace" in o.valuesets and afo is None
    )
    if afo is not None:
        found("AFO", afo)
    elif recovery.afo_needed:
        suggest.append("AFO")
    # PT
    pt = [
        o
        for o in newest_first(orders)
        if o.resource == "ServiceRequest"
        and "pt-existing" in o.valuesets
        and suppresses(
            o, now, inj_time, completed_within=t.pt_completed_recent, draft_recent=t.draft_recent
        )
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
    stale: OrderFact | None = None
    baseline: list[OrderFact] = []
    for o in orders:
        if o.resource == "Procedure" and "emg-study" in o.valuesets and o.occurrence is not None:
            if o.occurrence.date() >= not_before and now - o.occurrence <= t.emg_recent:
                qualifying = qualifying or o
            elif o.occurrence.date() < not_before:
                baseline.append(o)
            else:
                stale = stale or o
        elif o.resource == "ServiceRequest" and o.valuesets & {
            "emg-referral-existing",
            "emg-study",
        }:
            if not counts(o, now, t.draft_recent):
                continue  # R8b: revoked, cancelled, entered-in-error, old drafts never count
            if o.authored is not None and o.authored.date() < inj_time.date():
                baseline.append(o)
                continue
            if o.occurrence is not None and o.occurrence.date() < not_before:
                baseline.append(o)
                continue
            if o.status != "completed" or (
                o.occurrence is not None and now - o.occurrence <= t.emg_recent
            ):
                qualifying = qualifying or o
            else:
                stale = stale or o
    repeat_held = False
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
    elif stale is not None and not recovery.allows_escalation:
        repeat_held = True  # R8a: a repeat study needs "no recovery"
    else:
        suggest.append("EMG_NCS")
    # follow-up
    follow = [
        o
        for o in orders
        if o.resource == "ServiceRequest"
        and "follow-up-existing" in o.valuesets
        and counts(o, now, t.draft_recent)
        and o.status != "completed"
    ]
    appointments = [
        a
        for a in facts.appointments
        if a.status in FUTURE_APPOINTMENT
        and a.start is not None
        and a.start >= now
        and (a.follow_up or assessment.trigger.ref in a.reason_refs)
    ]
    if follow:
        found("FOLLOW_UP", follow[0])
    elif appointments:
        a = appointments[0]
        existing.append(Existing("FOLLOW_UP", a.ref, "Follow-up appointment", a.start, a.status))
    else:
        suggest.append("FOLLOW_UP")
    # escalation (R8a: only without recovery)
    stage = escalation_stage(recovery, grades, anchor, now, t)
    if stage is not None:
        dedup_set = (
            "orthopaedic-existing" if stage == "TENDON_TRANSFER" else "nerve-surgery-existing"
        )
        on_file = [
            o
            for o in orders
            if o.resource == "ServiceRequest"
            and dedup_set in o.valuesets
            and suppresses(
                o,
                now,
                inj_time,
                completed_within=None,
                draft_recent=t.draft_recent,
                open_since=False,
            )
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
        recovery=recovery,
        regrade=needs_regrade(recovery, anchor, now, t),
        afo_side_unknown=afo_side_unknown,
        repeat_emg_held=repeat_held,
    )


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

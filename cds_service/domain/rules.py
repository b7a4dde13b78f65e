"""Rules R0-R7 of clinical.md §2.2 as pure functions over :mod:`facts` (``now`` passed in).

Order: R0 hygiene and R1 triggers (:func:`condition_triggers`), R2 IM evidence (done while
extracting facts); the red-flag pathways R7a-R7f run first and on their own evidence
(:mod:`cds_service.domain.pathways`); then R3 site, R4 window, R5 side and R6 competing causes
for every (trigger, injection) pair (:func:`assess_pair`), keeping the best pair
(:func:`best_assessment`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cds_service.domain.codes import sides_compatible
from cds_service.domain.content import COMPETING_VALUESETS, Thresholds
from cds_service.domain.episodes import (
    abatement_blocks,
    blocked,
    preexisting_sides,
    starts_event,
    tied_links,
)
from cds_service.domain.facts import (
    UNCERTAIN_VERIFICATION,
    ConditionFact,
    Facts,
    GradeFact,
    InjectionFact,
)
from cds_service.domain.indication import (
    could_precede,
    is_supporting,
    reason_codes,
    reason_refs,
)
from cds_service.domain.pairs import MAX_PAIR_WORK, TooManyRecordsError, candidate_pairs

RANK = {"info": 1, "warning": 2, "critical": 3}
RADICULAR = "competing-radicular"
GLUTEAL = frozenset({"gluteal", "ventrogluteal"})
REMOTE = frozenset({"upper_limb", "thigh"})
HAEMATOMA_SITE_WORDS = ("buttock", "gluteal", "gluteus", "hip", "thigh")
ONE_DAY = timedelta(days=1)


@dataclass(frozen=True)
class Trigger:
    """A foot-drop trigger (R1): a Condition, a foot-drop finding or an MRC grade."""

    ref: str
    kind: str  # "condition" | "finding" | "grade"
    label: str
    side: str | None
    lo: datetime | None  # earliest possible onset; None = unknown
    hi: datetime  # latest possible onset
    verification: str | None = None  # set when unconfirmed / provisional / differential
    condition: ConditionFact | None = None

    @property
    def onset_known_width(self) -> timedelta | None:
        return None if self.lo is None else self.hi - self.lo


# --- R0/R1 ------------------------------------------------------------------------------------


def _sides(side: str | None) -> set[str]:
    if side == "bilateral":
        return {"left", "right"}
    return {side} if side else {"unknown"}


def condition_triggers(facts: Facts, now: datetime) -> list[Trigger]:
    out = []
    for c in facts.conditions:
        if "footdrop-trigger" in c.valuesets and c.current:
            out.append(
                Trigger(
                    ref=c.ref,
                    kind="condition",
                    label=c.label,
                    side=c.side,
                    lo=c.onset_lo,
                    hi=c.onset_hi or now,
                    verification=c.verification
                    if c.verification in UNCERTAIN_VERIFICATION
                    else None,
                    condition=c,
                )
            )
    return out


def observation_triggers(
    facts: Facts,
    conditions: Sequence[Trigger],
    injection: InjectionFact,
    t: Thresholds,
    blocks: dict[str, datetime | None] | None = None,
) -> list[Trigger]:
    """Observation triggers usable with this injection (R1), for sides without a Condition.

    A resolved / inactive foot-drop Condition blocks Observations of its own side dated on or
    before its abatement date only (R1a); refuted / entered-in-error ones block that side.
    """
    blocks = abatement_blocks(facts) if blocks is None else blocks
    covered: set[str] = set()
    for trig in conditions:
        covered |= _sides(trig.side)

    def usable(side: str | None, when: datetime) -> bool:
        if blocked(blocks, side, when):
            return False
        if side is None:
            return not conditions
        return side not in covered

    out: list[Trigger] = []
    for f in facts.findings:
        if usable(f.side, f.time):
            out.append(
                Trigger(f.ref, "finding", "Foot drop finding (Observation)", f.side, None, f.time)
            )
    by_side: dict[str, list[GradeFact]] = {}
    for g in facts.grades:
        if g.side is not None:
            by_side.setdefault(g.side, []).append(g)
    for side, grades in by_side.items():
        weak = sorted((g for g in grades if g.grade <= t.mrc_trigger_max), key=lambda g: g.time)
        if any(g.time < injection.time for g in weak):
            continue  # a weak grade before the injection: pre-existing
        after = [g for g in weak if g.time >= injection.time and usable(side, g.time)]
        if after:
            g = after[0]
            out.append(
                Trigger(g.ref, "grade", f"MRC dorsiflexion grade {g.text}", side, None, g.time)
            )
    return out


# --- R3-R6 per pair ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Competing:
    group: str  # radicular | indication | hip | knee | fibular-head | stroke | gbs | mnd | ms ...
    ref: str
    label: str
    onset: datetime | None

    @property
    def central(self) -> bool:
        return self.group in ("stroke", "ms")


@dataclass(frozen=True)
class Assessment:
    """The kept (trigger, injection) pair and what the card says about it."""

    trigger: Trigger
    injection: InjectionFact
    indicator: str
    timing_class: str  # immediate | delayed | late | uncertain
    delta: timedelta
    caps: tuple[str, ...]  # phrase keys: cap-...
    competing: tuple[Competing, ...] = ()
    link: tuple[str, ...] = ()  # labels of link codes
    radiating: tuple[str, ...] = ()
    anticoagulation: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # template names of conditional notes
    named: tuple[tuple[str, str], ...] = field(default=())  # (template, condition label)

    @property
    def anchor(self) -> datetime:
        """R8 anchor: max(injection, earliest possible onset)."""
        if self.trigger.lo is None:
            return self.injection.time
        return max(self.injection.time, self.trigger.lo)

    @property
    def lead(self) -> str | None:
        if any(c.central for c in self.competing):
            return "central"
        return "emg" if self.competing else None


def _window(c: ConditionFact, onset_lo: datetime, onset_hi: datetime, t: Thresholds) -> bool:
    """Onset of ``c`` within [foot-drop onset - 30 d, foot-drop onset + 7 d] (R6 'recent')."""
    return c.onset_hi is not None and (
        onset_lo - t.competing_recent_before <= c.onset_hi <= onset_hi + t.competing_recent_after
    )


def _shown(c: ConditionFact) -> datetime | None:
    """The onset date shown for a Condition: the start of a date-only onset, else its latest."""
    if c.has_onset and c.onset_lo is not None:
        return c.onset_lo
    return c.onset_hi


def competing_causes(
    facts: Facts, trig: Trigger, inj: InjectionFact, t: Thresholds
) -> tuple[list[Competing], list[tuple[str, str]]]:
    """R6: competing causes of this foot drop, and named conditions (template, label)."""
    fd_lo = trig.lo if trig.lo is not None else trig.hi
    fd_hi = trig.hi
    side = trig.side
    out: list[Competing] = []
    named: list[tuple[str, str]] = []
    seen_named: set[str] = set()
    reasons = reason_refs(facts, inj)
    # R4a: a coded reason of the injection (or of its MedicationRequest)
    for valueset, label in reason_codes(facts, inj):
        if valueset == RADICULAR:
            out.append(Competing("indication", inj.ref, label, None))
        elif valueset in ("radicular-back-pain", "radicular-annulus"):
            named.append(("note-back-pain-reason", label))
    leg_pain_sides = [
        c.side
        for c in facts.pair_conditions
        if not c.refuted and c.valuesets & {"radiating-pain", RADICULAR}
    ]
    for c in facts.pair_conditions:
        if c.refuted or not c.valuesets & COMPETING_VALUESETS:
            continue
        same_side = sides_compatible(c.side, side)
        sets = c.valuesets
        if RADICULAR in sets:
            if c.ref in reasons:
                out.append(Competing("indication", c.ref, c.label, _shown(c)))
            elif c.current and same_side and could_precede(c, inj):
                out.append(Competing("radicular", c.ref, c.label, _shown(c)))
        if "radicular-annulus" in sets and c.current and same_side:
            with_leg_pain = any(sides_compatible(s, c.side) for s in leg_pain_sides)
            if with_leg_pain and (c.ref in reasons or could_precede(c, inj)):
                out.append(Competing("radicular", c.ref, c.label, _shown(c)))
        back_pain = "radicular-back-pain" in sets and c.ref not in seen_named
        if back_pain and (c.ref in reasons or could_precede(c, inj)):
            seen_named.add(c.ref)
            named.append(("note-back-pain-reason", c.label))
        if "joint-aftercare" in sets and c.current and c.ref not in seen_named:
            seen_named.add(c.ref)
            named.append(("note-joint-aftercare", c.label))
        if c.current and "competing-knee" in sets and same_side and _window(c, fd_lo, fd_hi, t):
            out.append(Competing("knee", c.ref, c.label, _shown(c)))
        if "fibular-head-risk" in sets and c.current and same_side:
            bariatric = any(m.entry.tag == "bariatric" for m in c.in_set("fibular-head-risk"))
            limit = t.bariatric_recent if bariatric else t.fibular_head_recent
            first = c.onset_hi if c.has_onset else (c.recorded or c.onset_hi)
            if first is not None and fd_lo - limit <= first <= fd_hi:
                out.append(Competing("fibular-head", c.ref, c.label, first))
        if c.current and "competing-hip" in sets and same_side and _window(c, fd_lo, fd_hi, t):
            out.append(Competing("hip", c.ref, c.label, _shown(c)))
        if "competing-stroke" in sets:
            if c.current and _window(c, fd_lo, fd_hi, t):
                out.append(Competing("stroke", c.ref, c.label, _shown(c)))
            elif c.ref not in seen_named:
                named.append(("note-previous-stroke", c.label))
                seen_named.add(c.ref)
        if "stroke-sequela" in sets and c.ref not in seen_named:
            seen_named.add(c.ref)
            limb = any(m.entry.tag == "limb" for m in c.in_set("stroke-sequela"))
            if limb and same_side:
                named.append(("note-confirm-new", c.label))
            else:
                named.append(("note-previous-stroke", c.label))
        if c.current and "competing-gbs" in sets and _window(c, fd_lo, fd_hi, t):
            out.append(Competing("gbs", c.ref, c.label, _shown(c)))
        if "polyneuropathy" in sets and c.current:
            named.append(("note-polyneuropathy", c.label))
        if "diabetic-mononeuropathy" in sets and c.current:
            if c.onset_hi is not None and c.onset_hi <= inj.time:
                out.append(Competing("diabetic-mononeuropathy", c.ref, c.label, _shown(c)))
            else:
                named.append(("note-same-event", c.label))
        if c.current and "competing-mnd" in sets:
            out.append(Competing("mnd", c.ref, c.label, _shown(c)))
        if c.current and "competing-ms" in sets:
            out.append(Competing("ms", c.ref, c.label, _shown(c)))
        if (
            c.current
            and "competing-local-trauma" in sets
            and same_side
            and _window(c, fd_lo, fd_hi, t)
        ):
            out.append(Competing("local-trauma", c.ref, c.label, _shown(c)))
    for p in facts.hip_procedures:
        if (
            sides_compatible(p.side, side)
            and fd_lo - t.competing_recent_before <= p.time <= fd_hi + t.competing_recent_after
        ):
            out.append(Competing(p.group, p.ref, p.label, p.time))
    return out, named


def _links(facts: Facts, trig: Trigger, inj: InjectionFact, t: Thresholds) -> list[str]:
    """Link codes tied to this pair (R1a): by Reference, or within +-2 calendar days."""
    evidence = trig.condition.evidence_refs if trig.condition is not None else frozenset()
    onset = trig.lo if trig.lo is not None else trig.hi
    return tied_links(facts, trig.ref, trig.label, onset, evidence, inj, t.link_code_within)


def _pre_existing(
    facts: Facts,
    trig: Trigger,
    inj: InjectionFact,
    memo: dict[str, dict[str, datetime | None]] | None = None,
) -> bool:
    """R1a: the trigger belongs to a foot-drop event of its side that began before ``inj``.

    A trigger whose onset lies after that event's abatement date starts a new event.
    """
    if not starts_event(trig.condition):
        return True  # sequela / subsequent-encounter codes never start an attribution
    key = f"{inj.ref}@{inj.time.isoformat()}"
    if memo is not None and key in memo:
        old = memo[key]
    else:
        old = preexisting_sides(facts, inj)
        if memo is not None:
            memo[key] = old
    if not old:
        return False
    onset = trig.lo if trig.lo is not None else trig.hi

    def same_event(side: str) -> bool:
        if side not in old:
            return False
        until = old[side]
        return until is None or onset.date() <= until.date()

    if trig.side == "bilateral":
        return same_event("left") and same_event("right")
    if trig.side is None:
        return any(same_event(side) for side in old)  # belongs to the overlapping lateral event
    return same_event(trig.side)


def _radiating(facts: Facts, trig: Trigger, inj: InjectionFact, t: Thresholds) -> list[str]:
    """Radiating pain supporting the injury (R4a): begins after t, within 24 h, not the reason."""
    reasons = reason_refs(facts, inj)
    out = []
    for c in facts.pair_conditions:
        if "radiating-pain" not in c.valuesets or c.refuted:
            continue
        if not sides_compatible(c.side, trig.side):
            continue
        if is_supporting(c, inj, reasons, t.radiating_pain_after_injection):
            out.append(c.label)
    return out


def _anticoagulation(facts: Facts, inj: InjectionFact, t: Thresholds) -> list[str]:
    out = []
    for c in facts.pair_conditions:
        if "anticoagulation" in c.valuesets and c.current:
            start = c.onset_lo or c.onset_hi
            if start is None or start <= inj.time + ONE_DAY:
                out.append(c.label)
    for when, drug in facts.anticoagulant_times:
        if inj.time - t.anticoagulant_before_injection <= when <= inj.time:
            out.append(f"{drug} on {when:%Y-%m-%d}")
    return out


def assess_pair(
    facts: Facts,
    trig: Trigger,
    inj: InjectionFact,
    t: Thresholds,
    memo: dict[str, dict[str, datetime | None]] | None = None,
) -> Assessment | None:
    """R3 site, R4 window, R5 side and R6 competing causes for one pair; None = no attribution.

    ``memo`` keeps each injection's pre-existing sides (R1a) across the pairs of one call.
    """
    if trig.hi < inj.time:
        return None  # the foot drop began before the injection
    if _pre_existing(facts, trig, inj, memo):
        return None  # R1a: the same event as a foot drop that pre-dates the injection
    caps: list[str] = []
    notes: list[str] = []
    # R3 site
    if inj.site_class in REMOTE:
        return None
    if inj.site_class == "vastus_lateralis":
        if t.vastus_lateralis_site != "info":
            return None
        caps.append("cap-vastus")
    elif inj.site_class is None:
        caps.append("cap-site-missing")
        notes.append("note-site-missing")
    # R4 window
    delta = trig.hi - inj.time
    width = trig.onset_known_width
    links = _links(facts, trig, inj, t)
    radiating: list[str] = []
    anticoagulation: list[str] = []
    if width is not None and width <= t.onset_known_within:
        if delta <= t.immediate_window:
            timing, base = "immediate", "warning"
        elif delta <= t.delayed_window:
            timing = "delayed"
            radiating = _radiating(facts, trig, inj, t)
            anticoagulation = _anticoagulation(facts, inj, t)
            base = "warning" if (links or radiating or anticoagulation) else "info"
            if base == "info":
                caps.append("cap-delayed")
            if anticoagulation:
                notes.append("note-anticoagulated")
        elif delta <= t.attribution_limit:
            if not links:
                return None
            timing, base = "late", "info"
            caps.append("cap-late")
        else:
            return None
    else:
        if delta > t.attribution_limit:
            return None
        timing, base = "uncertain", "info"
        caps.append("cap-onset-uncertain")
        notes.append("note-onset-uncertain")
    # R5 side
    if trig.side is None or inj.site_side is None:
        caps.append("cap-side-unknown")
        notes.append("note-side-unknown")
    elif trig.side != "bilateral" and trig.side != inj.site_side:
        return None
    # caps from R0-R2
    if trig.verification is not None:
        caps.append("cap-provisional-trigger")
        notes.append("note-provisional-trigger")
    if trig.kind != "condition":
        caps.append("cap-observation-trigger")
        notes.append("note-observation-trigger")
    if inj.evidence == "probable":
        caps.append("cap-probable-im")
        notes.append("note-probable-im")
    # R6
    competing, named = competing_causes(facts, trig, inj, t)
    if competing:
        caps.append("cap-competing")
    indicator = "info" if caps else base
    if links:
        notes.append("note-link")
    if radiating:
        notes.append("note-radiating-pain")
    return Assessment(
        trigger=trig,
        injection=inj,
        indicator=indicator,
        timing_class=timing,
        delta=delta,
        caps=tuple(dict.fromkeys(caps)),
        competing=tuple(competing),
        link=tuple(links),
        radiating=tuple(radiating),
        anticoagulation=tuple(anticoagulation),
        notes=tuple(dict.fromkeys(notes)),
        named=tuple(dict.fromkeys(named)),
    )


def assessable_pairs(
    facts: Facts, triggers: Sequence[Trigger], t: Thresholds
) -> list[tuple[Trigger, InjectionFact]]:
    """The pairs that can be attributed (injection at most ``attribution_limit`` before the
    trigger), Observation triggers included; raises TooManyRecordsError over the work budget."""
    extra: list[tuple[InjectionFact, Sequence[Trigger]]] = []
    if facts.findings or facts.grades:
        cost = len(facts.injections) * (len(facts.findings) + len(facts.grades))
        if cost > MAX_PAIR_WORK:
            raise TooManyRecordsError(len(triggers), len(facts.injections), cost)
        blocks = abatement_blocks(facts)
        extra = [
            (inj, observation_triggers(facts, triggers, inj, t, blocks)) for inj in facts.injections
        ]
    return candidate_pairs(facts, triggers, t.attribution_limit, extra)


def best_assessment(facts: Facts, triggers: Sequence[Trigger], t: Thresholds) -> Assessment | None:
    """Assess every assessable pair; keep the highest indicator, then the closest."""
    best: tuple[tuple[object, ...], Assessment] | None = None
    memo: dict[str, dict[str, datetime | None]] = {}
    for trig, inj in assessable_pairs(facts, triggers, t):
        result = assess_pair(facts, trig, inj, t, memo)
        if result is None:
            continue
        key = (
            -RANK[result.indicator],
            result.delta,
            trig.kind != "condition",
            trig.ref,
            inj.ref,
        )
        if best is None or key < best[0]:
            best = (key, result)
    return best[1] if best else None


# --- the documented injection neuropathy (prevention services) --------------------------------

_INJECTION_TYPES = ("Procedure/", "MedicationAdministration/", "Immunization/")


@dataclass(frozen=True)
class InjectionNeuropathy:
    """A current foot drop that the record attributes to an IM injection (one per trigger).

    ``basis`` says how: ``assessment`` (R3-R6 keep a pair with an injection on file, whatever the
    indicator), ``link-code`` (a current T80.89X- link code, the injection itself not on file) or
    ``evidence`` (the Condition's ``evidence.detail`` references an injection resource).
    """

    trigger: Trigger
    basis: str
    assessment: Assessment | None = None
    link: str | None = None  # label of the link code, or the referenced injection resource

    @property
    def side(self) -> str | None:
        return self.trigger.side


def injection_neuropathies(facts: Facts, now: datetime, t: Thresholds) -> list[InjectionNeuropathy]:
    """The engine's injection-neuropathy findings, for warning before a new gluteal injection.

    Pure and deterministic (sorted by trigger reference). Red flags do not hide a finding: a
    bilateral deficit or a haematoma next to an injection is all the more reason to avoid the
    buttock. Only *current* triggers count (R0), so a resolved foot drop is not a finding.
    """
    triggers = condition_triggers(facts, now)
    best: dict[str, tuple[tuple[object, ...], Assessment]] = {}
    memo: dict[str, dict[str, datetime | None]] = {}
    for trig, inj in assessable_pairs(facts, triggers, t):
        result = assess_pair(facts, trig, inj, t, memo)
        if result is None:
            continue
        key = (-RANK[result.indicator], result.delta, inj.ref)
        if trig.ref not in best or key < best[trig.ref][0]:
            best[trig.ref] = (key, result)
    found = [InjectionNeuropathy(a.trigger, "assessment", assessment=a) for _, a in best.values()]
    links = sorted(c.label for c in facts.conditions if "link-code" in c.valuesets and c.current)
    for trig in triggers:
        if trig.ref in best or trig.condition is None:
            continue
        if links:
            found.append(InjectionNeuropathy(trig, "link-code", link=links[0]))
            continue
        refs = trig.condition.evidence_refs
        referenced = sorted(r for r in refs if r.startswith(_INJECTION_TYPES))
        if referenced:
            found.append(InjectionNeuropathy(trig, "evidence", link=referenced[0]))
    return sorted(found, key=lambda n: n.trigger.ref)

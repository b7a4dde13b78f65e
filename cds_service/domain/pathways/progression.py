"""R7f - progressive weakness (§1.2 C, amended by §4.1).

Same-side MRC dorsiflexion grades taken after the foot-drop onset. Not anticoagulated: a fall of
>= 2 grades => same-day neurology. Anticoagulated (R7c definition, the window extended to the
evaluation time): a fall of >= 1 grade within 7 d, a progression to 0/5, or a new weakness of a
second muscle group on that side (a grade <= 3 after a grade >= 4 of that movement) => same-day
surgical review for an expanding haematoma and same-day neurology.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cds_service.domain.content import Thresholds
from cds_service.domain.facts import Facts, GradeFact
from cds_service.domain.pathways.base import DORSIFLEXION, RedFlag, anticoagulation_evidence
from cds_service.domain.rules import Trigger


def _onset_floor(facts: Facts, trig: Trigger, t: Thresholds) -> datetime:
    """When the deficit is known to have begun: the trigger's lo, else the last IM injection
    before its latest onset (within the attribution limit), else the latest onset itself."""
    if trig.lo is not None:
        return trig.lo
    before = [
        inj.time
        for inj in facts.injections
        if inj.time <= trig.hi and trig.hi - inj.time <= t.attribution_limit
    ]
    return max(before) if before else trig.hi


def _fall(
    series: Sequence[GradeFact], grades: int, within: object = None
) -> tuple[GradeFact, GradeFact] | None:
    for i, later in enumerate(series):
        for earlier in series[:i]:
            if within is not None and later.time - earlier.time > within:  # type: ignore[operator]
                continue
            if earlier.grade - later.grade >= grades:
                return earlier, later
    return None


def progressive_weakness(
    facts: Facts, triggers: Sequence[Trigger], now: datetime, t: Thresholds
) -> RedFlag | None:
    """R7f for every current trigger's side; the first progression found (canonical order)."""
    for trig in sorted(triggers, key=lambda tr: (tr.kind != "condition", tr.ref)):
        floor = _onset_floor(facts, trig, t)
        sides = {"left", "right"} if trig.side in (None, "bilateral") else {trig.side}
        injections = [i.time for i in facts.injections if i.time <= trig.hi]
        window_lo = min([floor, *injections]) - t.anticoagulant_before_injection
        anticoagulated = anticoagulation_evidence(facts, window_lo, now)
        for side in sorted(sides):
            series = sorted(
                (
                    g
                    for g in facts.grades
                    if g.side == side and g.time >= floor and g.movement == DORSIFLEXION
                ),
                key=lambda g: (g.time, g.ref),
            )
            found = _fall(series, t.progression_grades)
            label = None
            if found is None and anticoagulated:
                found = _fall(
                    series, t.progression_grades_anticoagulated, t.progression_window_anticoagulated
                )
                if found is None:
                    found = next(
                        (
                            (e, g)
                            for i, g in enumerate(series)
                            if g.grade == 0
                            for e in series[:i]
                            if e.grade > 0
                        ),
                        None,
                    )
                if found is None:
                    found = _second_muscle(facts, side, floor)
                    if found is not None:
                        before, after = found
                        label = (
                            f"new weakness of {after.movement} "
                            f"(MRC {before.grade}/5 then {after.grade}/5)"
                        )
            if found is None:
                continue
            earlier, later = found
            if anticoagulated:
                return RedFlag(
                    kind="progression",
                    orders=("URGENT_ORTHOPAEDIC", "URGENT_NEUROLOGY"),
                    evidence=tuple(
                        dict.fromkeys(
                            [trig.ref, earlier.ref, later.ref, *(r for r, _ in anticoagulated)]
                        )
                    ),
                    labels=(
                        label or f"MRC {earlier.grade}/5 then {later.grade}/5",
                        *(lab for _, lab in anticoagulated[:1]),
                    ),
                    onset=later.time,
                    action="action-progression-anticoagulated",
                    extra=("anticoagulated",),
                )
            return RedFlag(
                kind="progression",
                orders=("URGENT_NEUROLOGY",),
                evidence=(trig.ref, earlier.ref, later.ref),
                labels=(f"MRC {earlier.grade}/5 then {later.grade}/5",),
                onset=later.time,
                action="action-progression",
            )
    return None


def _second_muscle(facts: Facts, side: str, floor: datetime) -> tuple[GradeFact, GradeFact] | None:
    """A second muscle group newly weak on ``side``: a grade >= 4 then, after the onset, <= 3."""
    others = sorted(
        (g for g in facts.muscle_grades if g.side == side and g.movement != DORSIFLEXION),
        key=lambda g: (g.time, g.ref),
    )
    for i, later in enumerate(others):
        if later.time < floor or later.grade > 3:
            continue
        for earlier in others[:i]:
            if earlier.movement == later.movement and earlier.grade >= 4:
                return earlier, later
    return None

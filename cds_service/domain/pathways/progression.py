"""R7f - progressive weakness (§1.2 C, amended by §4.1).

Same-side MRC dorsiflexion grades taken after the foot-drop onset. Not anticoagulated: a fall of
>= 2 grades => same-day neurology. Anticoagulated (R7c definition, the window extended to the
evaluation time): a fall of >= 1 grade within 7 d, a progression to 0/5, or a new weakness of a
second muscle group on that side (a grade <= 3 after a grade >= 4 of that movement) => same-day
surgical review for an expanding haematoma and same-day neurology.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Sequence
from datetime import datetime, timedelta

from cds_service.domain.content import Thresholds
from cds_service.domain.facts import Facts, GradeFact
from cds_service.domain.pathways.base import DORSIFLEXION, RedFlag, anticoagulation_evidence
from cds_service.domain.rules import Trigger


def _onset_floor(trig: Trigger, t: Thresholds, times: Sequence[datetime]) -> datetime:
    """When the deficit is known to have begun: the trigger's lo, else the last IM injection
    before its latest onset (within the attribution limit), else the latest onset itself.
    ``times`` are the injection times, sorted."""
    if trig.lo is not None:
        return trig.lo
    position = bisect_right(times, trig.hi)
    if position and trig.hi - times[position - 1] <= t.attribution_limit:
        return times[position - 1]
    return trig.hi


def _fall(
    series: Sequence[GradeFact], grades: int, within: timedelta | None = None
) -> tuple[GradeFact, GradeFact] | None:
    """The first grade (in time order) that lies ``grades`` or more below an earlier one (taken
    at most ``within`` before it), with the earliest such earlier grade; linear: MRC grades are
    0-5, so the earliest candidate of each grade value is kept (a queue per value with a window).
    """
    earliest: dict[int, deque[GradeFact]] = {}
    for later in series:
        best: GradeFact | None = None
        for value, queue in earliest.items():
            if value - later.grade < grades:
                continue
            while within is not None and queue and later.time - queue[0].time > within:
                queue.popleft()
            if queue and (best is None or (queue[0].time, queue[0].ref) < (best.time, best.ref)):
                best = queue[0]
        if best is not None:
            return best, later
        earliest.setdefault(later.grade, deque()).append(later)
    return None


def _falls_from(
    series: Sequence[GradeFact],
    grades: int,
    within: timedelta | None = None,
    *,
    to_zero: bool = False,
) -> list[int]:
    """``out[p] >= p`` exactly when ``series[p:]`` holds a fall (as :func:`_fall`, or to 0/5 after
    a grade above 0 with ``to_zero``); one pass plus a suffix maximum.

    For each later grade j, the latest earlier i that qualifies (for a window, the latest is the
    closest in time); a fall starts at or after p iff some j >= p has such an i >= p, i.e. iff the
    suffix maximum of those i from p on is >= p.
    """
    latest: dict[int, int] = {}  # grade value -> latest index with it
    best = [-1] * (len(series) + 1)
    for j, later in enumerate(series):
        candidates = [
            i
            for value, i in latest.items()
            if (value > 0 if to_zero else value - later.grade >= grades)
            and (within is None or later.time - series[i].time <= within)
        ]
        if (not to_zero or later.grade == 0) and candidates:
            best[j] = max(candidates)
        latest[later.grade] = j
    for j in range(len(series) - 1, -1, -1):
        best[j] = max(best[j], best[j + 1])
    return best


def _to_zero(series: Sequence[GradeFact]) -> tuple[GradeFact, GradeFact] | None:
    """A fall to 0/5 after any grade above 0 (anticoagulated R7f), in one pass."""
    first_positive: GradeFact | None = None
    for g in series:
        if g.grade == 0 and first_positive is not None:
            return first_positive, g
        if g.grade > 0 and first_positive is None:
            first_positive = g
    return None


def progressive_weakness(
    facts: Facts, triggers: Sequence[Trigger], now: datetime, t: Thresholds
) -> RedFlag | None:
    """R7f for every current trigger's side; the first progression found (canonical order)."""
    times = sorted(i.time for i in facts.injections)
    earliest = times[0] if times else None
    by_side: dict[str, list[GradeFact]] = {}
    for g in sorted(facts.grades, key=lambda g: (g.time, g.ref)):
        if g.movement == DORSIFLEXION and g.side is not None:
            by_side.setdefault(g.side, []).append(g)
    starts = {side: [g.time for g in grades] for side, grades in by_side.items()}
    # Whether any fall exists from a position on, per side, computed once: most triggers of a
    # record without progression then cost a look-up instead of a scan.
    plain = {side: _falls_from(grades, t.progression_grades) for side, grades in by_side.items()}
    quick = {
        side: _falls_from(
            grades, t.progression_grades_anticoagulated, t.progression_window_anticoagulated
        )
        for side, grades in by_side.items()
    }
    zero = {side: _falls_from(grades, 1, None, to_zero=True) for side, grades in by_side.items()}
    # Triggers sharing a side and an onset floor share the answer (e.g. every weak MRC grade).
    seen: dict[tuple[str, datetime, bool], tuple[tuple[GradeFact, GradeFact] | None, str | None]]
    seen = {}
    for trig in sorted(triggers, key=lambda tr: (tr.kind != "condition", tr.ref)):
        floor = _onset_floor(trig, t, times)
        sides = {"left", "right"} if trig.side in (None, "bilateral") else {trig.side}
        start = floor if earliest is None or earliest > trig.hi else min(floor, earliest)
        window_lo = start - t.anticoagulant_before_injection
        anticoagulated = anticoagulation_evidence(facts, window_lo, now)
        for side in sorted(sides):
            key = (side, floor, bool(anticoagulated))
            if key not in seen:
                position = bisect_left(starts.get(side, []), floor)
                possible = side in plain and (
                    plain[side][position] >= position
                    or (
                        bool(anticoagulated)
                        and (quick[side][position] >= position or zero[side][position] >= position)
                    )
                )
                series = by_side.get(side, [])[position:] if possible else []
                seen[key] = _progression(facts, series, side, floor, bool(anticoagulated), t)
            found, label = seen[key]
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


def _progression(
    facts: Facts,
    series: Sequence[GradeFact],
    side: str,
    floor: datetime,
    anticoagulated: bool,
    t: Thresholds,
) -> tuple[tuple[GradeFact, GradeFact] | None, str | None]:
    """The fall that makes R7f fire on ``series`` (same-side dorsiflexion after the floor)."""
    found = _fall(series, t.progression_grades)
    if found is not None or not anticoagulated:
        return found, None
    found = _fall(series, t.progression_grades_anticoagulated, t.progression_window_anticoagulated)
    found = found or _to_zero(series)
    if found is not None:
        return found, None
    found = _second_muscle(facts, side, floor)
    if found is None:
        return None, None
    before, after = found
    return found, f"new weakness of {after.movement} (MRC {before.grade}/5 then {after.grade}/5)"


def _second_muscle(facts: Facts, side: str, floor: datetime) -> tuple[GradeFact, GradeFact] | None:
    """A second muscle group newly weak on ``side``: a grade >= 4 then, after the onset, <= 3."""
    others = sorted(
        (g for g in facts.muscle_grades if g.side == side and g.movement != DORSIFLEXION),
        key=lambda g: (g.time, g.ref),
    )
    strong: dict[str, GradeFact] = {}  # the first grade >= 4 of each movement so far
    for later in others:
        if later.time >= floor and later.grade <= 3 and later.movement in strong:
            return strong[later.movement], later
        if later.grade >= 4:
            strong.setdefault(later.movement, later)
    return None

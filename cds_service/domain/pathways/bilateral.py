"""R7d - bilateral deficit from any combination of evidence (§4.1). No injection gate.

Per side, the first evidence time of current evidence: Condition triggers (latest possible onset),
foot-drop findings, MRC dorsiflexion <= 3, a bilateral bodySite or code (G57.03 / G57.33), or a
bilateral-by-definition code (G82.2-, 1845001 Paraparesis). Flag when both sides have evidence
whose first times are <= 14 d apart (an older contralateral palsy is pre-existing: no flag).
Output: critical, URGENT_EVAL 308482002 stat.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cds_service.domain.content import Thresholds
from cds_service.domain.facts import Facts
from cds_service.domain.pathways.base import DORSIFLEXION, RedFlag, Values, earliest
from cds_service.domain.rules import Trigger


def bilateral_deficit(
    facts: Facts, triggers: Sequence[Trigger], now: datetime, t: Thresholds
) -> RedFlag | None:
    """R7d: both legs weak, their first evidence no more than bilateral_onsets_within apart."""
    items: list[tuple[str, str, str, datetime]] = []  # (side, ref, label, time)
    for trig in triggers:
        sides = ("left", "right") if trig.side == "bilateral" else (trig.side,)
        for side in sides:
            if side in ("left", "right"):
                items.append((side, trig.ref, trig.label, trig.hi))
    for c in facts.conditions:
        if c.current and c.in_set("bilateral-weakness"):
            hi = c.onset_hi or now
            items += [("left", c.ref, c.label, hi), ("right", c.ref, c.label, hi)]
    for o in facts.observed:
        if "bilateral-weakness" in o.valuesets:
            items += [("left", o.ref, o.label, o.time), ("right", o.ref, o.label, o.time)]
    first: dict[str, tuple[str, str, str, datetime]] = {}
    for item in sorted(items, key=lambda i: (i[3], i[1])):
        first.setdefault(item[0], item)
    if set(first) != {"left", "right"}:
        return None
    left, right = first["left"], first["right"]
    if abs(left[3] - right[3]) > t.bilateral_onsets_within:
        return None  # the older side is pre-existing
    return RedFlag(
        kind="bilateral",
        orders=("URGENT_NEUROSURGERY",),
        evidence=tuple(dict.fromkeys((left[1], right[1]))),
        labels=tuple(dict.fromkeys((left[2], right[2]))),
        onset=max(left[3], right[3]),
        action="action-bilateral",
    )


def contralateral_weakness(
    facts: Facts, triggers: Sequence[Trigger], t: Thresholds
) -> list[tuple[str, Values]]:
    """R7d: a contralateral dorsiflexion grade 4 is not a flag; it is named on the card."""
    out: list[tuple[str, Values]] = []
    sides = {trig.side for trig in triggers}
    if not triggers or sides & {"bilateral"} or {"left", "right"} <= sides:
        return out
    start = min(earliest(trig) for trig in triggers) - t.bilateral_onsets_within
    for side in ("left", "right"):
        other = "right" if side == "left" else "left"
        if side not in sides:
            continue
        weak = [
            g
            for g in facts.grades
            if g.side == other and g.movement == DORSIFLEXION and g.grade == 4 and g.time >= start
        ]
        if weak:
            out.append(("note-contralateral-weakness", (("side", other), ("grade", "4"))))
    return out

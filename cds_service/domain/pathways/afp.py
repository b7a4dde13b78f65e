"""R7a - acute flaccid paralysis in a child under 15; AFM / paralytic polio at any age (§4.1).

No injection is required and none exempts: an injection in the preceding period is named
("post-injection palsy is a diagnosis of exclusion here"). Output: critical, URGENT_EVAL to
paediatric neurology and to public health (notification), both stat.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cds_service.domain.content import Thresholds
from cds_service.domain.facts import Facts
from cds_service.domain.pathways.base import DORSIFLEXION, RedFlag, condition_start, same_leg
from cds_service.domain.rules import Trigger

_LIMB_WORDS = re.compile(r"\b(leg|legs|foot|feet|lower limb|lower extremit)", re.IGNORECASE)


@dataclass(frozen=True)
class Weakness:
    ref: str
    label: str
    side: str | None
    lo: datetime | None
    hi: datetime


def age_at(birth: datetime, moment: datetime) -> int:
    return moment.year - birth.year - ((moment.month, moment.day) < (birth.month, birth.day))


def weakness_evidence(
    facts: Facts, triggers: Sequence[Trigger], now: datetime, t: Thresholds
) -> list[Weakness]:
    """Every current weakness item of R7a: triggers, other lower-limb MRC <= 3, table R7a codes."""
    out = [Weakness(trig.ref, trig.label, trig.side, trig.lo, trig.hi) for trig in triggers]
    for g in facts.muscle_grades:  # other muscles; dorsiflexion without a side
        if (g.movement != DORSIFLEXION or g.side is None) and g.grade <= t.mrc_trigger_max:
            out.append(Weakness(g.ref, f"MRC {g.movement} grade {g.grade}/5", g.side, None, g.time))
    for c in facts.conditions:
        matches = c.in_set("afp-weakness")
        if not matches or not c.current:
            continue
        if all(m.entry.tag == "needs-limb" for m in matches) and not (
            "lower-limb-site" in c.body.valuesets or _LIMB_WORDS.search(c.words)
        ):
            continue
        side = c.side or c.body.side
        out.append(Weakness(c.ref, c.label, side, c.onset_lo, c.onset_hi or now))
    for o in facts.observed:
        if o.valuesets & {"afp-weakness", "bilateral-weakness"}:
            out.append(Weakness(o.ref, o.label, o.side, None, o.time))
    return out


def acute_flaccid_paralysis(
    facts: Facts, triggers: Sequence[Trigger], now: datetime, t: Thresholds
) -> RedFlag | None:
    """R7a: acute, new flaccid weakness in a child < afp_age, or current AFM / polio at any age."""
    reportable = [c for c in facts.conditions if c.current and c.in_set("afp-reportable")]
    items = weakness_evidence(facts, triggers, now, t)
    trauma = [c for c in facts.conditions if not c.refuted and c.in_set("afp-severe-trauma")]
    acute: list[Weakness] = []
    birth = facts.birth_date
    if birth is not None:
        for w in items:
            if w.hi > now or now - w.hi > t.afp_onset_max:
                continue
            if age_at(birth, w.lo if w.lo is not None else now) >= t.afp_age:
                continue
            if any(same_leg(e.side, w.side) and e.hi < w.hi - t.afp_onset_max for e in items):
                continue  # chronic weakness of that leg (cerebral palsy, old polio): not AFP
            if any(
                (condition_start(c) or w.hi) <= w.hi
                and (c.onset_hi or w.hi) >= w.hi - t.afp_trauma_before
                for c in trauma
            ):
                continue  # severe trauma explains it (a needle injury is not severe trauma)
            acute.append(w)
    if not acute and not reportable:
        return None
    child = birth is not None and age_at(birth, now) < t.afp_age
    starts = [w.lo or w.hi for w in acute] + [
        s for s in (condition_start(c) for c in reportable) if s is not None
    ]
    onset = min(starts) if starts else None
    early = onset is None or now - onset <= t.afp_stool_window
    used = [
        *acute,
        *(Weakness(c.ref, c.label, c.side, c.onset_lo, c.onset_hi or now) for c in reportable),
    ]
    orders = (
        ("URGENT_PAEDIATRIC_NEUROLOGY", "URGENT_PUBLIC_HEALTH")
        if child
        else ("URGENT_NEUROLOGY", "URGENT_PUBLIC_HEALTH")
    )
    notes = []
    latest = max(w.hi for w in used)
    for inj in facts.injections:
        if inj.time <= latest and latest - inj.time <= t.attribution_limit:
            notes.append(
                ("note-afp-injection", (("injection", inj.label), ("date", f"{inj.time:%Y-%m-%d}")))
            )
    return RedFlag(
        kind="afp" if acute else "afp-any-age",
        orders=orders,
        evidence=tuple(dict.fromkeys(w.ref for w in used)),
        labels=tuple(dict.fromkeys(w.label for w in used)),
        onset=onset,
        action="action-afp",
        values=(
            ("stool", "phrase:afp-stool-early" if early else "phrase:afp-stool-late"),
            ("neurology", "phrase:afp-neurology-child" if child else "phrase:afp-neurology-adult"),
        ),
        notes=tuple(notes[:3]),
    )

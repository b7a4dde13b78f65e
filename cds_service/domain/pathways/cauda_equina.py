"""R7e - cauda equina from symptoms (§4.1, §4.6.1). No injection gate.

Groups: bladder, bowel, saddle (Conditions current and not refuted, or Observation findings
present). One *new* item of any group plus a current trigger is suspected cauda equina. New = its
latest possible onset is on/after the earliest back/leg symptom of the episode and at most 90 d
before the evaluation; a group charted > 30 d before that symptom is chronic (no flag), as is
retention with BPH/LUTS charted before it. A current G83.4 / S34.3XXA raises the flag by itself.
Output: critical, URGENT_EVAL 308482002 stat.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from cds_service.domain.content import Thresholds
from cds_service.domain.facts import ConditionFact, Facts
from cds_service.domain.pathways.base import RedFlag, condition_start, earliest
from cds_service.domain.rules import Trigger

GROUPS = ("cauda-bladder", "cauda-bowel", "cauda-saddle")
SADDLE_WORDS = re.compile(r"saddle|perine|perianal|genital", re.IGNORECASE)


def _saddle_ok(c: ConditionFact) -> bool:
    matches = c.in_set("cauda-saddle")
    if any(m.entry.tag != "needs-saddle-site" for m in matches):
        return True  # "saddle an(a)esthesia / numbness" in the text
    body = c.body
    both_buttocks = {"haematoma-site:723979003", "haematoma-site:723980000"} <= body.codes
    return "saddle-site" in body.valuesets or both_buttocks or bool(SADDLE_WORDS.search(c.words))


def _episode_start(facts: Facts, trig: Trigger, t: Thresholds) -> datetime:
    """The earliest back/leg symptom: the trigger's lo (else its recordedDate bound), or an
    earlier back/leg symptom recorded no more than cauda_new_within before the foot drop."""
    start = earliest(trig)
    for c in facts.conditions:
        if c.refuted or not c.in_set("back-leg-symptom"):
            continue
        when = condition_start(c)
        if when is not None and start - t.cauda_new_within <= when < start:
            start = when
    return start


def cauda_equina(
    facts: Facts, triggers: Sequence[Trigger], now: datetime, t: Thresholds
) -> RedFlag | None:
    """R7e: coded cauda equina, or one new bladder / bowel / saddle item with a current trigger."""
    if not triggers:
        return None
    coded = [c for c in facts.conditions if c.current and c.in_set("red-flag-cauda-equina")]
    if coded:
        return RedFlag(
            kind="cauda-equina",
            orders=("URGENT_NEUROSURGERY",),
            evidence=tuple(c.ref for c in coded),
            labels=tuple(c.label for c in coded),
            onset=condition_start(coded[0]),
            action="action-cauda-equina",
        )
    # (group, ref, label, earliest date, latest possible onset, current?)
    items: list[tuple[str, str, str, datetime | None, datetime | None, bool]] = []
    for c in facts.conditions:
        if c.refuted:
            continue
        for group in GROUPS:
            if c.in_set(group) and (group != "cauda-saddle" or _saddle_ok(c)):
                hi = c.onset_hi or now
                items.append((group, c.ref, c.label, condition_start(c) or hi, hi, c.current))
    for o in facts.observed:
        for group in GROUPS:
            if group in o.valuesets:
                items.append((group, o.ref, o.label, o.time, o.time, True))
    if not items:
        return None
    bph = [condition_start(c) for c in facts.conditions if not c.refuted and c.in_set("cauda-bph")]
    for trig in sorted(triggers, key=lambda tr: (earliest(tr), tr.ref)):
        start = _episode_start(facts, trig, t)
        chronic = {
            group
            for group, _, _, first, _, _ in items
            if first is not None and first < start - t.cauda_chronic_before
        }
        if any(b is not None and b < start for b in bph):
            chronic.add("cauda-bladder")
        new = [
            (group, ref, label, hi, first)
            for group, ref, label, first, hi, current in items
            if current
            and group not in chronic
            and hi is not None
            and hi >= start
            and now - hi <= t.cauda_new_within
        ]
        if new:
            return RedFlag(
                kind="cauda-equina",
                orders=("URGENT_NEUROSURGERY",),
                evidence=tuple(dict.fromkeys([trig.ref, *(ref for _, ref, _, _, _ in new)])),
                labels=tuple(dict.fromkeys(label for _, _, label, _, _ in new)),
                onset=min(first or hi for _, _, _, hi, first in new),
                action="action-cauda-equina",
            )
    return None
